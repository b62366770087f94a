"""What every dataset loader shares: reading the file, one record at a time into cases, problems.

A loader is a pure function ``(path, *, limit=None, strict=False) -> LoadedDataset``. It reads the
whole file, turns each record into zero or more :class:`~kedit.requests.Case` objects with a
*builder* ``(record, index) -> tuple[Case, ...]``, and collects every malformed record as a
:class:`RecordProblem` (record index, record id, field, why) instead of stopping, so one bad record
in ten thousand costs one case, not the run. ``strict=True`` turns the first problem into a
:class:`~kedit.errors.DataError`.

Builders read fields through :func:`text_field`, :func:`answer_text` and :func:`blame`, which raise
:class:`FieldProblem` naming the field; :func:`build_dataset` catches it. Datasets whose records are
not cases (the Pitfalls files, :mod:`kedit.data.pitfalls`) go through :func:`parse_dataset`, which
collects parsed records and problems the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from kedit.errors import DataError, RequestError
from kedit.paths import sha256_file
from kedit.requests import Case

Builder = Callable[[Mapping[str, Any], int], tuple[Case, ...]]


@dataclass(frozen=True)
class RecordProblem:
    """One record that could not become a case: where it is, which field, and why."""

    index: int
    record_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"record {self.index}" + (f" (id {self.record_id})" if self.record_id is not None else "")
        return f"{where}: field {self.field!r}: {self.message}"


@dataclass(frozen=True)
class LoadedDataset:
    """The cases read from one file, the records skipped, and the file's sha256.

    ``records_read`` counts the records looked at (after ``limit``); a record may give several cases
    (MQuAKE: one per requested rewrite) or none (a skipped record). ``records`` holds parsed records
    for datasets that are not plain cases (ConflictEdit, RoundEdit: pairs of edits run by their own
    protocol in :mod:`kedit.pitfalls`, parsed by :mod:`kedit.data.pitfalls`); those have no ``cases``.
    """

    name: str
    path: Path
    cases: tuple[Case, ...]
    problems: tuple[RecordProblem, ...]
    sha256: str
    records_read: int = 0
    records: tuple[Any, ...] = ()


class FieldProblem(Exception):  # noqa: N818 - internal signal, caught by build_dataset, never escapes
    """Raised inside a builder: ``field`` of the current record is missing or unusable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@contextlib.contextmanager
def blame(field: str) -> Iterator[None]:
    """Report a :class:`RequestError` raised inside the block (e.g. by ``EditRequest``) against ``field``."""
    try:
        yield
    except RequestError as error:
        raise FieldProblem(field, str(error)) from error


def field_value(record: Mapping[str, Any], key: str, *, path: str | None = None) -> Any:
    """``record[key]``, or a :class:`FieldProblem` naming ``path`` (default ``key``) when it is absent."""
    if not isinstance(record, Mapping):
        raise FieldProblem(path or key, f"the record is a {type(record).__name__}, not a JSON object")
    if key not in record:
        raise FieldProblem(path or key, f"missing; the record has keys {sorted(record)}")
    if record[key] is None:
        raise FieldProblem(path or key, "is null")
    return record[key]


def text_field(record: Mapping[str, Any], key: str, *, path: str | None = None) -> str:
    """A required non-empty string field."""
    value = field_value(record, key, path=path)
    if not isinstance(value, str):
        raise FieldProblem(path or key, f"must be a string, got {type(value).__name__}: {value!r:.80}")
    if not value.strip():
        raise FieldProblem(path or key, "is empty")
    return value


def optional_text(record: Mapping[str, Any], key: str) -> str | None:
    """A string field that may be absent (``None``); present but not a string is a problem."""
    if record.get(key) is None:
        return None
    return text_field(record, key)


def answer_text(value: Any, field: str) -> str:
    """The first answer of an answer field, whatever its nesting.

    Public files write an answer as ``"Rome"``, ``["Rome"]``, ``[["Rome", "Roma"]]`` (a list of alias
    lists, KnowEdit) or ``{"str": "Rome", "id": "Q220"}`` (CounterFact, MQuAKE). A :class:`Case` probe
    holds one answer, so the first one (the canonical name; later ones are aliases) is taken.
    """
    while isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, Mapping) and "str" in value:
        value = value["str"]
    if not isinstance(value, str) or not value.strip():
        raise FieldProblem(field, f"expected an answer string (or a list of them), got {value!r:.80}")
    return value


def text_list(record: Mapping[str, Any], key: str, *, required: bool = False) -> tuple[str, ...]:
    """A list of strings (a single string counts as a list of one); absent is ``()`` unless required."""
    if record.get(key) is None and not required:
        return ()
    value = field_value(record, key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise FieldProblem(key, f"must be a list of strings, got {type(value).__name__}")
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise FieldProblem(f"{key}[{position}]", f"must be a non-empty string, got {item!r:.80}")
    return tuple(value)


def read_json(path: str | Path) -> Any:
    """The parsed file: one JSON document, or the list of records of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist (or is not a file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text, so not JSON ({error})") from None
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            # "Extra data" after a first object means one object a line (JSON lines without .jsonl).
            if not (error.msg == "Extra data" and text.lstrip().startswith("{")):
                raise DataError(
                    f"{path}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
                ) from error
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}: line {number} is not JSON: {error.msg}") from error
    return records


def read_records(path: str | Path) -> list[Any]:
    """The file's records, which must be a JSON list (or JSON lines)."""
    document = read_json(path)
    if not isinstance(document, list):
        raise DataError(f"{path}: expected a JSON list of records, got a {type(document).__name__}")
    return document


def _record_id(record: Any, id_key: str | None) -> str | None:
    if id_key is None or not isinstance(record, Mapping) or record.get(id_key) is None:
        return None
    return str(record[id_key])


def _each_record(
    name: str,
    path: Path,
    records: Sequence[Any],
    convert: Callable[[Mapping[str, Any], int], Any],
    *,
    limit: int | None,
    strict: bool,
    id_key: str | None,
) -> tuple[list[Any], tuple[RecordProblem, ...], int]:
    """``convert`` of each of the first ``limit`` records, the problems of the others, and how many were read."""
    if limit is not None and limit < 0:
        raise DataError(f"limit must be a non-negative number of records, got {limit}")
    chosen = records if limit is None else records[:limit]
    converted: list[Any] = []
    problems: list[RecordProblem] = []
    for index, record in enumerate(tqdm(chosen, desc=f"reading {name}", unit="record", leave=False, disable=None)):
        try:
            if not isinstance(record, Mapping):
                raise FieldProblem("record", f"must be a JSON object, got {type(record).__name__}: {record!r:.80}")
            converted.append(convert(record, index))
        except FieldProblem as problem:
            found = RecordProblem(index, _record_id(record, id_key), problem.field, problem.message)
            if strict:
                raise DataError(f"{path}: {found}") from problem
            problems.append(found)
    return converted, tuple(problems), len(chosen)


def build_dataset(
    name: str,
    path: str | Path,
    records: Sequence[Any],
    build: Builder,
    *,
    limit: int | None = None,
    strict: bool = False,
    id_key: str | None = None,
) -> LoadedDataset:
    """Run ``build`` on the first ``limit`` records (all when None), collecting cases and problems."""
    path = Path(path)
    built, problems, read = _each_record(name, path, records, build, limit=limit, strict=strict, id_key=id_key)
    return LoadedDataset(
        name=name,
        path=path,
        cases=tuple(case for cases in built for case in cases),
        problems=problems,
        sha256=sha256_file(path),
        records_read=read,
    )


def parse_dataset(
    name: str,
    path: str | Path,
    records: Sequence[Any],
    parse: Callable[[Mapping[str, Any], int], Any],
    *,
    limit: int | None = None,
    strict: bool = False,
    id_key: str | None = None,
) -> LoadedDataset:
    """Like :func:`build_dataset` for records that are not cases: ``parse`` makes one object of each
    record, kept in ``records`` (the dataset has no ``cases``)."""
    path = Path(path)
    parsed, problems, read = _each_record(name, path, records, parse, limit=limit, strict=strict, id_key=id_key)
    return LoadedDataset(name=name, path=path, cases=(), problems=problems, sha256=sha256_file(path),
                         records_read=read, records=tuple(parsed))
