"""Where kedit keeps its caches, and how it writes them without ever leaving half a file.

Every cache entry is built in a temporary beside it and renamed into place (:func:`atomic_path`),
so a reader sees a whole entry or none. Processes that share a cache (the runs of a sweep, two
``kedit`` commands) also take :func:`exclusive_lock` around "look, else build and write"
(:func:`fill_once`), so an entry is computed by one of them while the others wait and read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

try:
    import fcntl  # POSIX advisory locks
except ImportError:  # Windows: see exclusive_lock
    fcntl = None

T = TypeVar("T")
LOCKS_DIR = ".locks"  # beside the entries they guard: readers of a cache folder skip hidden names


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


def lock_path(entry: Path, name: str | None = None) -> Path:
    """The lock file guarding ``entry`` (or, with ``name``, a group of entries in its folder):
    ``<folder>/.locks/<name>.lock``, on the same file system as the entry, so every process that
    shares the cache folder (also over NFS) shares the lock."""
    entry = Path(entry)
    return entry.parent / LOCKS_DIR / f"{name or entry.name}.lock"


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; wait while another
    process holds it.

    The kernel drops the lock when its holder dies, so a process killed with ``kill -9`` leaves no
    stale lock behind (the lock file itself stays; it is empty and reused). Where ``fcntl`` does not
    exist (Windows) the block runs unlocked: writes are still atomic renames, so an entry is never
    torn, but two processes may both compute it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fill_once(lock: Path, read: Callable[[], T | None], build: Callable[[], T]) -> T:
    """``read()`` a cache entry; when it is missing (None), take ``lock``, read again (another process
    may have written it meanwhile) and only then ``build()`` it (``build`` writes it atomically).

    The first read is outside the lock so that readers of a filled cache never wait.
    """
    found = read()
    if found is not None:
        return found
    with exclusive_lock(lock):
        found = read()
        return found if found is not None else build()
