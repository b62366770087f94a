"""Where kedit keeps its caches, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def kedit_home() -> Path:
    """The cache root: ``$KEDIT_HOME`` or ``~/.cache/kedit``."""
    root = os.environ.get("KEDIT_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "kedit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache root for one kind of artefact (models, stats, templates, ...)."""
    path = kedit_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Works for files and for directories. The temporary sits in the same folder so the rename is
    atomic on POSIX file systems; on failure it is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            # A directory cannot be renamed onto a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, payload: object) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
