"""Text corpora for key statistics.

* ``files_corpus(paths)``: any text files, or folders of ``.txt`` files (e.g. WikiText).
* ``stdlib_corpus()``: the default, present on every installation with no network: the English
  docstrings of the Python standard library (about 1.4 MB, ~300k tokens for SmolLM2). Its limits:
  technical register (programming documentation), no encyclopaedic entities. ROME's statistics
  whiten the key space; the register matters less than having enough tokens, but for published
  numbers use Wikipedia (``wikipedia_corpus``) or a WikiText file.
* ``wikipedia_corpus()``: the Hugging Face ``wikimedia/wikipedia`` English dump, streamed and
  shuffled with a fixed seed (needs ``pip install kedit[wikipedia]`` and the network), the corpus
  ROME and MEMIT used.

A corpus carries a digest of its text so cached statistics are keyed by exactly what they saw.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import KeditError

PARAGRAPHS_PER_DOCUMENT = 20
_STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "tkinter", "turtledemo"}


@dataclass(frozen=True)
class Corpus:
    name: str
    digest: str  # sha256 identifying the text
    documents: Callable[[], Iterator[str]]  # a fresh iterator over the documents, in a fixed order


def _hash_files(files: Sequence[Path]) -> str:
    """sha256 over each file's name and bytes, in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stat_files(files: Sequence[Path], root: Path) -> str:
    """Digest of (relative path, size, modification time): cheap, and changes whenever a file does."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _paragraph_documents(text: str) -> Iterator[str]:
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    for start in range(0, len(paragraphs), PARAGRAPHS_PER_DOCUMENT):
        yield "\n\n".join(paragraphs[start : start + PARAGRAPHS_PER_DOCUMENT])


def files_corpus(paths: Sequence[str | Path]) -> Corpus:
    """Text files, or folders searched recursively for ``*.txt``; documents are groups of paragraphs."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(path.rglob("*.txt"))
            if not found:
                raise KeditError(f"corpus folder {path} contains no .txt files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise KeditError(f"corpus path {path} does not exist")

    def documents() -> Iterator[str]:
        for file in files:
            yield from _paragraph_documents(file.read_text(encoding="utf-8", errors="replace"))

    return Corpus(name="files:" + ",".join(str(f) for f in files), digest=_hash_files(files), documents=documents)


def _stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's ``.py`` files, sorted; skipped folders are pruned during the walk
    (the interpreter's own site-packages can be far larger than the standard library)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in _STDLIB_SKIP and not d.startswith("."))
        files.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return root, sorted(files)


def stdlib_corpus(min_chars: int = 80) -> Corpus:
    """Docstrings (module, class, function) of the Python standard library, one document per module."""
    root, files = _stdlib_files()

    def documents() -> Iterator[str]:
        for path in files:
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            docs = [
                doc for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and (doc := ast.get_docstring(node)) and len(doc) >= min_chars
            ]
            if docs:
                yield "\n\n".join(docs)

    # The standard library only changes with a Python upgrade, which changes sizes and times too;
    # hashing its ~30 MB of source on every edit would cost more than a second.
    return Corpus(name="python-stdlib-docstrings", digest=_stat_files(files, root), documents=documents)


def wikipedia_corpus(dump: str = "20231101.en", seed: int = 1) -> Corpus:
    """English Wikipedia streamed from the Hugging Face hub (network required)."""
    try:
        import datasets
    except ImportError as error:
        raise KeditError("the Wikipedia corpus needs the 'datasets' package: pip install 'kedit[wikipedia]'") from error

    def documents() -> Iterator[str]:
        stream = datasets.load_dataset("wikimedia/wikipedia", dump, split="train", streaming=True)
        for article in stream.shuffle(seed=seed, buffer_size=10_000):
            yield article["text"]

    identity = f"wikimedia/wikipedia:{dump}:shuffle-seed-{seed}"
    return Corpus(name=identity, digest=hashlib.sha256(identity.encode()).hexdigest(), documents=documents)


def resolve_corpus(spec: str | Sequence[str] | Corpus | None) -> Corpus:
    """``None`` or ``"stdlib"`` → the default; ``"wikipedia"`` → Wikipedia; paths → those files."""
    if isinstance(spec, Corpus):
        return spec
    if spec is None or spec == "stdlib":
        return stdlib_corpus()
    if spec == "wikipedia":
        return wikipedia_corpus()
    return files_corpus([spec] if isinstance(spec, str | Path) else list(spec))
