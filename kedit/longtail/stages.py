"""Build stages that resume and are cached by the digest of everything they read.

A stage's output lives in ``CACHE/<name>-<digest16>/``, where the digest is the sha256 of the stage's
name, code version, settings and the digests of its inputs (files or earlier stages). A folder
with ``complete.json`` is a finished stage: a rebuild with the same inputs reuses it, a changed input
gives a new digest and a new folder. A stage that works in parts (documents in chunks) writes each
part atomically (a temporary file renamed onto ``part-00012.parquet``), so a stage killed midway
keeps its finished parts and its rerun computes only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kedit.paths import sha256_file

COMPLETE = "complete.json"


def digest_of(payload: Any) -> str:
    """sha256 of ``payload`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted by relative path)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    entries = [(file.relative_to(path).as_posix(), sha256_file(file))
               for file in sorted(path.rglob("*")) if file.is_file()]
    return digest_of(entries)


@dataclass(frozen=True)
class Stage:
    """One stage's folder and digest."""

    name: str
    digest: str
    folder: Path

    @property
    def complete(self) -> bool:
        return (self.folder / COMPLETE).is_file()

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def finish(self, info: Mapping[str, Any]) -> None:
        """Mark the stage complete (atomically), recording ``info`` (counts, settings) beside its output."""
        from kedit.paths import write_json_atomic

        write_json_atomic(self.folder / COMPLETE, {"stage": self.name, "digest": self.digest, **info})

    def info(self) -> dict[str, Any]:
        return json.loads((self.folder / COMPLETE).read_text(encoding="utf-8"))


def open_stage(cache: Path, name: str, version: int, settings: Mapping[str, Any], inputs: Sequence[str]) -> Stage:
    """The stage keyed by (name, version, settings, input digests), its folder created."""
    digest = digest_of({"stage": name, "version": version, "settings": settings, "inputs": list(inputs)})
    folder = Path(cache) / f"{name}-{digest[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return Stage(name=name, digest=digest, folder=folder)


def write_table_atomic(table: Any, path: Path) -> None:
    """Write a pyarrow table as Parquet, under a temporary name renamed onto ``path`` when whole."""
    import pyarrow.parquet as pq

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


class Reporter(Protocol):
    """Where a build says what it is doing: a stage starts (``total`` units, ``cached`` when reused),
    advances by finished units, and finishes with a one-line summary."""

    def start(self, stage: str, total: int | None, cached: bool = False) -> None: ...

    def advance(self, stage: str, units: int = 1) -> None: ...

    def finish(self, stage: str, summary: str) -> None: ...


class SilentReporter:
    """A reporter that says nothing (library use, tests)."""

    def start(self, stage: str, total: int | None, cached: bool = False) -> None:
        return None

    def advance(self, stage: str, units: int = 1) -> None:
        return None

    def finish(self, stage: str, summary: str) -> None:
        return None
