"""The Pitfalls benchmark files (SPEC A.1): ConflictEdit and RoundEdit records and their prompts.

* :func:`load_conflict_edit` reads ``coverage_edit.json`` / ``reverse_edit.json`` /
  ``composite_edit.json`` into :class:`ConflictRecord` (two edits plus the facts every metric reads).
* :func:`load_round_edit` reads ``easy.json`` / ``hard.json`` into :class:`RoundRecord`.
* :func:`load_relation_prompts` reads ``conflict_prompts.json`` / ``round_prompts.json``
  (relation id -> paraphrase templates with ``{}`` for the subject).

These records are pairs of edits run by their own protocol (:mod:`kedit.pitfalls`), not cases, so
the loaders return a :class:`~kedit.data.loaders.LoadedDataset` whose ``records`` hold them and
whose ``cases`` are empty; reading, ``limit``, ``strict`` and the :class:`RecordProblem` of each
malformed record (index, field, why) are those of every other loader (:mod:`kedit.data.loaders`).
A skipped record is also announced with one :class:`~kedit.errors.KeditWarning`, because the
Pitfalls metrics are means over the file and a silently shorter file would shift them. The
structural invariants of each record type (for example "the second coverage edit overwrites the
first edit's new value") are checked too, because every metric's mapping from the record to facts
relies on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kedit.data.loaders import (
    FieldProblem,
    LoadedDataset,
    RecordProblem,
    field_value,
    parse_dataset,
    read_json,
    read_records,
    text_field,
)
from kedit.errors import DataError, KeditWarning
from kedit.requests import SUBJECT_SLOT, EditRequest

CONFLICT_EDIT, ROUND_EDIT = "conflictedit", "roundedit"  # their names in kedit.data.registry
CONFLICT_KINDS = ("coverage", "reverse", "composite")
R = TypeVar("R")
Parser = Callable[[Mapping[str, Any], int], R]  # (record, its index in the file) -> parsed record


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


# ------------------------------------------------------------------------------------------- fields
# The records nest objects several levels deep ("edits[0].relation.prompt"), so every field is
# named by its path from the record; ``where`` is the path of the object being read ("" = the record).


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _object(mapping: Any, where: str) -> None:
    # blamed on the object that is not one ("edits[0]"), not on the key that was looked up in it
    if not isinstance(mapping, Mapping):
        raise FieldProblem(where or "record", f"expected an object, got {type(mapping).__name__}")


def _get(mapping: Any, key: str, where: str) -> Any:
    _object(mapping, where)
    return field_value(mapping, key, path=_path(where, key))


def _text(mapping: Any, key: str, where: str) -> str:
    """A non-empty string used verbatim as a label or id: padding would change what is scored, so it is refused."""
    _object(mapping, where)
    value = text_field(mapping, key, path=_path(where, key))
    if value != value.strip():
        raise FieldProblem(_path(where, key), f"has leading or trailing whitespace: {value!r}")
    return value


def _label(mapping: Any, key: str, where: str) -> str:
    return _text(_get(mapping, key, where), "label", _path(where, key))


def _relation(mapping: Any, where: str) -> tuple[str, str]:
    relation = _get(mapping, "relation", where)
    field = f"{where}.relation"
    relation_id = _text(relation, "id", field)
    prompt = _get(relation, "prompt", field)
    if not isinstance(prompt, str) or prompt.count(SUBJECT_SLOT) != 1:
        raise FieldProblem(f"{field}.prompt", f"must hold exactly one '{{}}' for the subject, got {prompt!r}")
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
        raise FieldProblem(field, message)


# ------------------------------------------------------------------------------------------ records


def _conflict(record: Mapping[str, Any], index: int) -> ConflictRecord:
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


def _round(record: Mapping[str, Any], index: int) -> RoundRecord:
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


def _parse_one(parse: Parser[R], index: int, record: Any) -> R:
    try:
        return parse(record, index)
    except FieldProblem as problem:
        raise DataError(str(RecordProblem(index, None, problem.field, problem.message))) from None


def parse_conflict_record(index: int, record: Any) -> ConflictRecord:
    """One ConflictEdit record; raises :class:`DataError` naming the index and the field."""
    return _parse_one(_conflict, index, record)


def parse_round_record(index: int, record: Any) -> RoundRecord:
    """One RoundEdit record; raises :class:`DataError` naming the index and the field."""
    return _parse_one(_round, index, record)


def _load(name: str, path: str | Path, parse: Parser[Any], limit: int | None, strict: bool) -> LoadedDataset:
    loaded = parse_dataset(name, path, read_records(path), parse, limit=limit, strict=strict)
    if loaded.problems:
        warnings.warn(f"{loaded.path}: skipped {len(loaded.problems)} malformed record(s); first: {loaded.problems[0]}",
                      KeditWarning, stacklevel=3)
    return loaded


def load_conflict_edit(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """ConflictEdit records of ``path`` (the first ``limit`` of the file when given) in ``records``."""
    return _load(CONFLICT_EDIT, path, _conflict, limit, strict)


def load_round_edit(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """RoundEdit records of ``path`` (the first ``limit`` of the file when given) in ``records``."""
    return _load(ROUND_EDIT, path, _round, limit, strict)


def load_relation_prompts(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Relation id -> paraphrase templates (kept verbatim: trailing spaces and duplicates as in the file)."""
    path = Path(path)
    payload = read_json(path)
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
