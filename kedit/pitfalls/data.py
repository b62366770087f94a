"""Loaders for the Pitfalls benchmark files (SPEC A.1): ConflictEdit and RoundEdit records.

* :func:`load_conflict_edit` reads ``coverage_edit.json`` / ``reverse_edit.json`` /
  ``composite_edit.json`` into :class:`ConflictRecord` (two edits plus the facts every metric reads).
* :func:`load_round_edit` reads ``easy.json`` / ``hard.json`` into :class:`RoundRecord`.
* :func:`load_relation_prompts` reads ``conflict_prompts.json`` / ``round_prompts.json``
  (relation id -> paraphrase templates with ``{}`` for the subject).

A malformed record is reported with its index and the field that is wrong. By default it is
skipped (and listed in the result's ``problems``, with one :class:`~kedit.errors.KeditWarning`);
``strict=True`` raises :class:`~kedit.errors.DataError` at the first one. The structural invariants
of each record type (for example "the second coverage edit overwrites the first edit's new value")
are checked too, because every metric's mapping from the record to facts relies on them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from kedit.errors import DataError, KeditWarning
from kedit.requests import SUBJECT_SLOT, EditRequest

CONFLICT_KINDS = ("coverage", "reverse", "composite")
R = TypeVar("R")


@dataclass(frozen=True)
class Fact:
    """A triple (s, r, o) with r's cloze template (``{}`` marks the subject)."""

    subject: str
    relation_id: str
    prompt: str
    object: str


@dataclass(frozen=True)
class ConflictEditStep:
    """One edit e_i of a ConflictEdit record: (s_i, r_i): o_i -> o_i*."""

    relation_id: str
    prompt: str
    subject: str
    target_true: str  # o_i
    target_new: str  # o_i*

    def request(self) -> EditRequest:
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.target_new,
                           target_true=self.target_true)


@dataclass(frozen=True)
class ConflictRecord:
    """A ConflictEdit record: two edits and the facts the metrics compare (SPEC A.1)."""

    index: int  # position in the file
    kind: str  # coverage | reverse | composite
    rule: str | None
    first: ConflictEditStep  # e1
    second: ConflictEditStep  # e2
    tied_fact: Fact | None  # composite: triples[0] (the reference code hardcodes index 0)

    @property
    def case_id(self) -> str:
        return f"{self.kind}-{self.index}"

    @property
    def old_fact(self) -> Fact:
        """k_o = (s1, r1, o1*): the first edit's new knowledge."""
        e1 = self.first
        return Fact(e1.subject, e1.relation_id, e1.prompt, e1.target_new)

    @property
    def new_fact_explicit(self) -> Fact:
        """k_n,exp = (s2, r2, o2*): the second edit's new knowledge as edited."""
        e2 = self.second
        return Fact(e2.subject, e2.relation_id, e2.prompt, e2.target_new)

    @property
    def new_fact_implicit(self) -> Fact | None:
        """k_n,imp, stated with r1's prompts: reverse (o2*, r1, o1*); composite (s1, r1, o2*); coverage none."""
        e1, e2 = self.first, self.second
        if self.kind == "reverse":
            return Fact(e2.target_new, e1.relation_id, e1.prompt, e1.target_new)
        if self.kind == "composite":
            return Fact(e1.subject, e1.relation_id, e1.prompt, e2.target_new)
        return None


@dataclass(frozen=True)
class RoundRecord:
    """A RoundEdit record: e1 = (s, r): o -> o*, then e2 = (s, r): o* -> o; Obj = the true objects."""

    index: int
    kind: str  # "1-N@Pxx"
    relation_id: str
    prompt: str
    subject: str
    target: str  # o: the round trip's start and end
    intermediate: str  # o*
    true_objects: tuple[str, ...]  # Obj, file order, duplicates kept

    @property
    def case_id(self) -> str:
        return f"round-{self.index}"

    @property
    def others(self) -> tuple[str, ...]:
        """Obj with the first occurrence of o removed (order and any duplicate kept, as the reference)."""
        position = self.true_objects.index(self.target)
        return self.true_objects[:position] + self.true_objects[position + 1 :]

    def first_request(self) -> EditRequest:
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.intermediate,
                           target_true=self.target)

    def second_request(self) -> EditRequest:
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.target,
                           target_true=self.intermediate)

    def multi_label_request(self) -> EditRequest:
        """The MLE return edit (SPEC A.9): o* -> every true object; o is target_new, the others extra."""
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.target,
                           target_true=self.intermediate, extra_targets=self.others)


@dataclass(frozen=True)
class DataProblem:
    """Why one record was not loaded."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"record {self.index}: {self.field}: {self.message}"


@dataclass(frozen=True)
class LoadedRecords(Generic[R]):
    """The records that loaded, the ones that did not (with why), and where they came from."""

    path: Path
    records: tuple[R, ...]
    problems: tuple[DataProblem, ...]
    total: int  # records read from the file (after ``limit``)


class _Bad(Exception):
    """A field of the record being parsed is wrong (internal; becomes a DataProblem)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _get(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise _Bad(where or "record", f"expected an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise _Bad(f"{where}.{key}" if where else key, "is missing")
    return mapping[key]


def _text(mapping: Any, key: str, where: str) -> str:
    value = _get(mapping, key, where)
    field = f"{where}.{key}" if where else key
    if not isinstance(value, str) or not value.strip():
        raise _Bad(field, f"must be a non-empty string, got {value!r}")
    if value != value.strip():
        raise _Bad(field, f"has leading or trailing whitespace: {value!r}")
    return value


def _label(mapping: Any, key: str, where: str) -> str:
    return _text(_get(mapping, key, where), "label", f"{where}.{key}" if where else key)


def _relation(mapping: Any, where: str) -> tuple[str, str]:
    relation = _get(mapping, "relation", where)
    field = f"{where}.relation"
    relation_id = _text(relation, "id", field)
    prompt = _get(relation, "prompt", field)
    if not isinstance(prompt, str) or prompt.count(SUBJECT_SLOT) != 1:
        raise _Bad(f"{field}.prompt", f"must hold exactly one '{{}}' for the subject, got {prompt!r}")
    return relation_id, prompt


def _fact(triple: Any, where: str) -> Fact:
    relation_id, prompt = _relation(triple, where)
    return Fact(_label(triple, "subject", where), relation_id, prompt, _label(triple, "object", where))


def _step(edit: Any, where: str) -> ConflictEditStep:
    relation_id, prompt = _relation(edit, where)
    return ConflictEditStep(relation_id, prompt, _label(edit, "subject", where), _label(edit, "object", where),
                            _label(edit, "new_object", where))


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise _Bad(field, message)


def parse_conflict_record(index: int, record: Any) -> ConflictRecord:
    """One ConflictEdit record; raises :class:`DataError` naming the index and the field."""
    try:
        return _parse_conflict(index, record)
    except _Bad as bad:
        raise DataError(f"record {index}: {bad.field}: {bad.message}") from None


def _parse_conflict(index: int, record: Any) -> ConflictRecord:
    kind = _text(record, "type", "")
    _require(kind in CONFLICT_KINDS, "type", f"must be one of {', '.join(CONFLICT_KINDS)}, got {kind!r}")
    edits = _get(record, "edits", "")
    _require(isinstance(edits, list) and len(edits) == 2, "edits", f"must be a list of 2 edits, got {edits!r}"[:200])
    first, second = _step(edits[0], "edits[0]"), _step(edits[1], "edits[1]")
    triples = _get(record, "triples", "")
    _require(isinstance(triples, list), "triples", "must be a list")
    rule = record.get("rule")
    _require(rule is None or isinstance(rule, str), "rule", f"must be a string, got {rule!r}")
    tied = None
    if kind == "coverage":
        # e2 overwrites e1's new value: same subject and relation, old object = o1*.
        _require(second.subject == first.subject, "edits[1].subject.label", "must equal edits[0].subject.label")
        _require(second.relation_id == first.relation_id, "edits[1].relation.id", "must equal edits[0].relation.id")
        _require(second.target_true == first.target_new, "edits[1].object.label",
                 "must equal edits[0].new_object.label")
    elif kind == "reverse":
        # e2 is stated about e1's new object and its old object is e1's subject.
        _require(second.subject == first.target_new, "edits[1].subject.label",
                 "must equal edits[0].new_object.label")
        _require(second.target_true == first.subject, "edits[1].object.label", "must equal edits[0].subject.label")
    else:
        _require(len(triples) == 3, "triples", f"a composite record needs 3 triples, got {len(triples)}")
        tied = _fact(triples[0], "triples[0]")
        # the tied fact links e2's subject s to e1's subject s1
        _require(tied.subject == second.subject, "triples[0].subject.label", "must equal edits[1].subject.label")
        _require(tied.object == first.subject, "triples[0].object.label", "must equal edits[0].subject.label")
    return ConflictRecord(index, kind, rule, first, second, tied)


def parse_round_record(index: int, record: Any) -> RoundRecord:
    """One RoundEdit record; raises :class:`DataError` naming the index and the field."""
    try:
        return _parse_round(index, record)
    except _Bad as bad:
        raise DataError(f"record {index}: {bad.field}: {bad.message}") from None


def _parse_round(index: int, record: Any) -> RoundRecord:
    kind = _text(record, "type", "")
    edit = _get(record, "edit", "")
    relation_id, prompt = _relation(edit, "edit")
    subject, target = _label(edit, "subject", "edit"), _label(edit, "object", "edit")
    intermediate = _label(edit, "new_object", "edit")
    objects = _get(record, "true_objects", "")
    _require(isinstance(objects, list) and len(objects) >= 2, "true_objects",
             "must be a list of at least 2 objects (o and one other)")
    labels = tuple(_text(item, "label", f"true_objects[{i}]") for i, item in enumerate(objects))
    _require(target in labels, "true_objects", f"does not contain edit.object.label {target!r}")
    _require(intermediate != target, "edit.new_object.label", "must differ from edit.object.label")
    return RoundRecord(index, kind, relation_id, prompt, subject, target, intermediate, labels)


def _read_list(path: Path) -> list[Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(payload, list):
        raise DataError(f"{path} holds a JSON {type(payload).__name__}; expected a list of records")
    return payload


def _load(path: str | Path, parse: Callable[[int, Any], R], limit: int | None, strict: bool) -> LoadedRecords[R]:
    path = Path(path)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be 0 or more, got {limit}")
    raw = _read_list(path)
    if limit is not None:
        raw = raw[:limit]
    records, problems = [], []
    for index, record in enumerate(raw):
        try:
            records.append(parse(index, record))
        except DataError as error:
            if strict:
                raise DataError(f"{path}: {error}") from None
            field, _, message = str(error).removeprefix(f"record {index}: ").partition(": ")
            problems.append(DataProblem(index, field, message))
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} malformed record(s); first: {problems[0]}",
                      KeditWarning, stacklevel=3)
    return LoadedRecords(path, tuple(records), tuple(problems), len(raw))


def load_conflict_edit(path: str | Path, *, limit: int | None = None,
                       strict: bool = False) -> LoadedRecords[ConflictRecord]:
    """ConflictEdit records of ``path`` (the first ``limit`` of the file when given)."""
    return _load(path, parse_conflict_record, limit, strict)


def load_round_edit(path: str | Path, *, limit: int | None = None,
                    strict: bool = False) -> LoadedRecords[RoundRecord]:
    """RoundEdit records of ``path`` (the first ``limit`` of the file when given)."""
    return _load(path, parse_round_record, limit, strict)


def load_relation_prompts(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Relation id -> paraphrase templates (kept verbatim: trailing spaces and duplicates as in the file)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(payload, Mapping):
        raise DataError(f"{path} holds a JSON {type(payload).__name__}; expected relation id -> list of prompts")
    prompts = {}
    for relation_id, templates in payload.items():
        if not isinstance(templates, list) or not templates:
            raise DataError(f"{path}: {relation_id}: expected a non-empty list of prompts, got {templates!r}")
        for position, template in enumerate(templates):
            if not isinstance(template, str) or template.count(SUBJECT_SLOT) != 1:
                raise DataError(f"{path}: {relation_id}[{position}]: a prompt needs exactly one '{{}}', got {template!r}")
        prompts[str(relation_id)] = tuple(templates)
    return prompts


def missing_relations(relation_ids: Sequence[str], prompts: Mapping[str, Sequence[str]]) -> list[str]:
    """The relation ids (sorted, unique) that have no paraphrase prompts."""
    return sorted({relation for relation in relation_ids if relation not in prompts})
