"""Documents with their annotated mentions, read from the formats corpora come in.

* PubTator (``PMID|t|title``, ``PMID|a|abstract``, tab-separated mention and relation lines):
  :mod:`kedit.longtail.pubtator`; BC5CDR, NCBI Disease, BioRED, tmVar3 and PubTator3 use it.
* BioC JSON (a collection of documents of passages with annotations): :mod:`kedit.longtail.bioc`.
* Plain text: a JSONL file of ``{"id", "title"?, "text" | "abstract"}`` records, or a folder of
  ``.txt`` files (one document each, named by its file). These have no mentions: they are linked by
  dictionary only.

A document's :attr:`Document.text` is ``title + " " + abstract``: the offsets PubTator files use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError


@dataclass(frozen=True)
class Mention:
    """A span of a document's text an annotator (or a tagger) marked, with the concept ids it names.

    ``start``/``end`` are character offsets into :attr:`Document.text`; ``ids`` are normalised
    (:func:`kedit.longtail.ids.normalise_id`), empty when the mention has none (PubTator's ``-1``).
    ``names`` is one name per id for a composite mention, where the corpus gives them (BC5CDR's
    seventh column: "sagittal and left transverse sinus thrombosis" -> "sagittal sinus thrombosis",
    "left transverse sinus thrombosis").
    """

    start: int
    end: int
    text: str
    kind: str
    ids: tuple[str, ...]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnnotatedRelation:
    """A relation the corpus annotates between two concepts of a document (BC5CDR ``CID``, BioRED)."""

    kind: str
    first: str
    second: str


@dataclass(frozen=True)
class Document:
    """One title + abstract (or one text), its mentions and annotated relations, and where it came from."""

    doc_id: str
    title: str
    abstract: str
    mentions: tuple[Mention, ...] = ()
    relations: tuple[AnnotatedRelation, ...] = ()
    source: str = ""

    @property
    def text(self) -> str:
        """Title and abstract joined by one space (PubTator's offsets count the same way)."""
        if not self.title:
            return self.abstract
        return f"{self.title} {self.abstract}" if self.abstract else self.title


def read_jsonl_documents(path: Path) -> Iterator[Document]:
    """Documents from a JSONL file of ``{"id", "title"?, "text" | "abstract"}`` records."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            doc_id = record.get("id", record.get("pmid", record.get("doc_id")))
            body = record.get("text", record.get("abstract"))
            if doc_id is None:
                raise DataError(f"{path}:{number}: field 'id' is missing (also accepted: 'pmid', 'doc_id')")
            if not isinstance(body, str):
                raise DataError(f"{path}:{number}: field 'text' (or 'abstract') is missing or not a string")
            title = record.get("title") or ""
            if not isinstance(title, str):
                raise DataError(f"{path}:{number}: field 'title' must be a string")
            yield Document(doc_id=str(doc_id), title=title.strip(), abstract=body.strip(), source=path.name)


def read_text_folder(folder: Path) -> Iterator[Document]:
    """One document per ``.txt`` file of ``folder`` (sorted by name), its id the file's stem."""
    for path in sorted(folder.glob("*.txt")):
        yield Document(doc_id=path.stem, title="", abstract=path.read_text(encoding="utf-8").strip(),
                       source=path.name)


def _looks_like_pubtator(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return "|t|" in line or "|a|" in line
    return False


def document_format(path: Path) -> str:
    """``pubtator``, ``bioc``, ``jsonl`` or ``text-folder``, from the path (and the first line)."""
    if path.is_dir():
        return "text-folder"
    if not path.is_file():
        raise DataError(f"--docs {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in {".json", ".bioc"}:
        return "bioc"
    if _looks_like_pubtator(path):
        return "pubtator"
    raise DataError(f"--docs {path}: not a PubTator file (its first line has no '|t|' or '|a|'), "
                    "BioC JSON (.json) or JSONL (.jsonl); write PubTator, BioC or JSONL documents")


def read_documents(path: Path) -> Iterator[Document]:
    """The documents of one input, whatever its format (:func:`document_format`)."""
    kind = document_format(path)
    if kind == "pubtator":
        from kedit.longtail.pubtator import read_pubtator

        yield from read_pubtator(path)
    elif kind == "bioc":
        from kedit.longtail.bioc import read_bioc

        yield from read_bioc(path)
    elif kind == "jsonl":
        yield from read_jsonl_documents(path)
    else:
        yield from read_text_folder(path)


@dataclass(frozen=True)
class Corpus:
    """Documents from several inputs, one per id, and what merging them found.

    ``merged`` counts ids seen in two inputs with the same text (their mentions are pooled: BioRED
    and BC5CDR annotate different concept types of some of the same abstracts); ``conflicts`` counts
    ids seen again with a different text (the first input's document is kept).
    """

    documents: tuple[Document, ...]
    merged: int
    conflicts: int


def merge_documents(streams: Iterable[Iterable[Document]]) -> Corpus:
    """One document per id (first seen order). A co-occurrence count counts documents, so the
    BC5CDR training file's copy of the development abstracts must not count twice."""
    by_id: dict[str, Document] = {}
    merged = conflicts = 0
    for stream in streams:
        for document in stream:
            seen = by_id.get(document.doc_id)
            if seen is None:
                by_id[document.doc_id] = document
            elif seen.text == document.text:
                if (seen.mentions, seen.relations) != (document.mentions, document.relations):
                    mentions = tuple(dict.fromkeys((*seen.mentions, *document.mentions)))
                    relations = tuple(dict.fromkeys((*seen.relations, *document.relations)))
                    by_id[document.doc_id] = Document(seen.doc_id, seen.title, seen.abstract, mentions,
                                                      relations, seen.source)
                merged += 1
            else:
                conflicts += 1
    return Corpus(documents=tuple(by_id.values()), merged=merged, conflicts=conflicts)
