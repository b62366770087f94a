"""Writing and reading the JSON files of a run directory so that a killed run loses at most one unit.

Appends are one write per unit followed by ``fsync``, so after ``kill -9`` a JSON-lines file holds
whole records plus at most one partial last line. :func:`read_lines` treats that line as not yet
written; a resuming writer passes ``repair=True`` to cut it off before appending after it. Files
written once (``run.json``, ``summary.json``, a sequential run's final ``results.jsonl``) are replaced
atomically, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.paths import atomic_path, write_json_atomic

__all__ = ["BadLine", "append_lines", "read_lines", "write_json_atomic", "write_lines_atomic"]


class BadLine(KeditError):
    """A complete line of a JSON-lines file that is not a JSON object: corruption, not an interruption.

    ``path``, ``number`` and ``problem`` are kept apart so a report can name the file relative to its run.
    """

    def __init__(self, path: Path, number: int, problem: str) -> None:
        super().__init__(f"{path} line {number} {problem}")
        self.path = path
        self.number = number
        self.problem = problem


def _json_lines(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(record, default=str) + "\n" for record in records)


def append_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records as JSON lines in one write, then flush and fsync before returning."""
    text = _json_lines(records)
    if not text:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_lines_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` with these JSON lines all at once (a reader sees the old file or the new one)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(_json_lines(records))
        handle.flush()
        os.fsync(handle.fileno())


def read_lines(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none when it does not exist), blank lines skipped.

    A last line without its newline is a write cut short, not a record yet: it is left out. With
    ``repair=True`` it is also truncated off the file (and the file fsynced), which a writer that is
    about to append must do; readers such as reports leave the file alone, since the run may still
    be writing that line. A complete line that is not a JSON object raises :class:`BadLine`.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    if repair and complete < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for number, line in enumerate(data[:complete].decode("utf-8").split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadLine(path, number, f"is not valid JSON ({error.msg}); the file is corrupted") from None
        if not isinstance(record, dict):
            raise BadLine(path, number, f"holds a JSON {type(record).__name__}, expected an object")
        records.append(record)
    return records
