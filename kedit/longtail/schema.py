"""The benchmark folder the long-tail suite writes and reads: its files and the record on every case.

``kedit longtail build`` writes a folder; ``probe``, ``edit``, ``stats`` and ``kedit bench`` read it.

    BENCH/
      cases.jsonl           one case a line: ``Case.to_dict()`` plus ``"longtail": LongTailFact.to_dict()``
      demonstrations.jsonl  held-out (question, answer) pairs per relation, for probing with demonstrations
      manifest.json         what was built from what: input digests, bin edges, sampling, seed, counts per bin

A fact's frequency is one of two axes, never mixed in a table: ``cooccurrence`` (documents or
sentences where subject and object both occur, the paper's axis) or ``subject-popularity`` (documents
that mention the subject at all, e.g. gene -> PubMed links over MEDLINE).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kedit.errors import DataError
from kedit.requests import Case

CASES_FILE = "cases.jsonl"
DEMONSTRATIONS_FILE = "demonstrations.jsonl"
MANIFEST_FILE = "manifest.json"

Cardinality = Literal["one-to-one", "one-to-many"]
FrequencyAxis = Literal["cooccurrence", "subject-popularity"]
CARDINALITIES: tuple[str, ...] = ("one-to-one", "one-to-many")
FREQUENCY_AXES: tuple[str, ...] = ("cooccurrence", "subject-popularity")
LEVELS: tuple[str, ...] = ("document", "sentence")


@dataclass(frozen=True)
class LongTailFact:
    """One triple with its counts, bins and cardinality.

    ``objects`` / ``object_ids`` hold every valid object of (subject, relation), this triple's own
    first, so a one-to-many fact can be scored against all of them. ``bins`` maps a level
    (``document``, ``sentence``) to the bin label of that level's count (e.g. ``"[0,10)"``);
    ``counts`` maps the same levels to the counts. On the ``subject-popularity`` axis the one level
    is ``document`` and the count is the subject's document frequency.
    """

    subject_id: str
    subject: str
    relation: str
    object_id: str
    object: str
    objects: tuple[str, ...]
    object_ids: tuple[str, ...]
    cardinality: Cardinality
    axis: FrequencyAxis
    counts: Mapping[str, int]
    bins: Mapping[str, str]
    subject_doc_freq: int | None = None
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cardinality not in CARDINALITIES:
            raise DataError(f"cardinality must be one of {CARDINALITIES}, got {self.cardinality!r}")
        if self.axis not in FREQUENCY_AXES:
            raise DataError(f"axis must be one of {FREQUENCY_AXES}, got {self.axis!r}")
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "object_ids", tuple(self.object_ids))
        if not self.objects or self.objects[0] != self.object:
            raise DataError(f"objects must start with the triple's own object {self.object!r}, got {self.objects!r}")
        if len(self.objects) != len(self.object_ids):
            raise DataError(f"objects ({len(self.objects)}) and object_ids ({len(self.object_ids)}) differ in length")
        unknown = set(self.counts) - set(LEVELS) or set(self.bins) - set(LEVELS)
        if unknown:
            raise DataError(f"unknown level(s) {sorted(unknown)}; levels are {LEVELS}")
        object.__setattr__(self, "counts", dict(self.counts))
        object.__setattr__(self, "bins", dict(self.bins))
        object.__setattr__(self, "extra", dict(self.extra))

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "subject_id": self.subject_id, "subject": self.subject, "relation": self.relation,
            "object_id": self.object_id, "object": self.object,
            "objects": list(self.objects), "object_ids": list(self.object_ids),
            "cardinality": self.cardinality, "axis": self.axis,
            "counts": dict(self.counts), "bins": dict(self.bins),
            "subject_doc_freq": self.subject_doc_freq, "source": self.source,
        }
        if self.extra:
            record["extra"] = dict(self.extra)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> LongTailFact:
        try:
            return cls(
                subject_id=str(record["subject_id"]), subject=str(record["subject"]),
                relation=str(record["relation"]), object_id=str(record["object_id"]),
                object=str(record["object"]), objects=tuple(record["objects"]),
                object_ids=tuple(str(x) for x in record["object_ids"]),
                cardinality=record["cardinality"], axis=record["axis"],
                counts={str(k): int(v) for k, v in record["counts"].items()},
                bins={str(k): str(v) for k, v in record["bins"].items()},
                subject_doc_freq=record.get("subject_doc_freq"), source=str(record.get("source", "")),
                extra=record.get("extra", {}),
            )
        except KeyError as missing:
            raise DataError(f"long-tail record lacks field {missing}") from None


@dataclass(frozen=True)
class LongTailCase:
    """A benchmark case (request, rephrases, locality partner) and the fact it was made from.

    The edit request's ``target_new`` is the fact's object (the paper edits the true fact in: the
    model does not know long-tail facts) and ``extra_targets`` the other valid objects of a
    one-to-many fact (for MLE; other methods edit towards ``target_new`` only).
    """

    case: Case
    fact: LongTailFact

    def to_dict(self) -> dict[str, Any]:
        return {**self.case.to_dict(), "longtail": self.fact.to_dict()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> LongTailCase:
        if "longtail" not in record:
            raise DataError("record lacks the 'longtail' field (not a kedit long-tail benchmark case)")
        return cls(case=Case.from_dict(record), fact=LongTailFact.from_dict(record["longtail"]))


@dataclass(frozen=True)
class Demonstration:
    """A held-out question and its answer for one relation (never a benchmark case's own fact)."""

    relation: str
    question: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return {"relation": self.relation, "question": self.question, "answer": self.answer}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Demonstration:
        try:
            return cls(relation=str(record["relation"]), question=str(record["question"]), answer=str(record["answer"]))
        except KeyError as missing:
            raise DataError(f"demonstration record lacks field {missing}") from None


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records one JSON object a line, atomically (built beside ``path``, then renamed)."""
    import json

    from kedit.paths import atomic_path

    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import json

    if not path.is_file():
        raise DataError(f"{path}: no such file (is this a folder written by 'kedit longtail build'?)")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None


def read_cases(folder: Path) -> list[LongTailCase]:
    """The cases of a benchmark folder; a bad record is a DataError naming file and line."""
    path = Path(folder) / CASES_FILE
    cases = []
    for number, record in _read_jsonl(path):
        try:
            cases.append(LongTailCase.from_dict(record))
        except DataError as error:
            raise DataError(f"{path}:{number}: {error}") from None
    return cases


def read_demonstrations(folder: Path) -> dict[str, list[Demonstration]]:
    """Held-out demonstrations per relation (empty when the folder has none)."""
    path = Path(folder) / DEMONSTRATIONS_FILE
    if not path.is_file():
        return {}
    by_relation: dict[str, list[Demonstration]] = {}
    for number, record in _read_jsonl(path):
        try:
            demo = Demonstration.from_dict(record)
        except DataError as error:
            raise DataError(f"{path}:{number}: {error}") from None
        by_relation.setdefault(demo.relation, []).append(demo)
    return by_relation
