"""Knowledge triples (subject, relation, object) and the concepts they name, read from TSV or JSONL.

A :class:`TripleSet` holds :class:`Entity` records (id, name, synonyms, xrefs: what linking matches
mentions against) and :class:`Triple` records (ids and a relation name, with the file and line they
came from). Ontology readers (:mod:`kedit.longtail.obo`, :mod:`kedit.longtail.hpo`,
:mod:`kedit.longtail.snomed`, :mod:`kedit.longtail.annotated`) return the same type;
:func:`merge_triple_sets` joins several.

TSV (tab-separated, a header naming the columns) and JSONL (one object a line) use the same fields:

    subject_id  subject_name  relation  object_id  object_name  [subject_synonyms  object_synonyms
    subject_xrefs  object_xrefs]

Synonyms and xrefs are ``|``-separated in TSV, lists in JSONL. With an ontology (``ontology=``) the
name columns may be left out: names, synonyms and xrefs come from the ontology, and an id that is
not in it is an error naming the file, line and field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedit.errors import DataError
from kedit.longtail.ids import normalise_id


@dataclass(frozen=True)
class Entity:
    """A concept: its id (normalised), preferred name, synonyms, and ids it is known by elsewhere."""

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    xrefs: tuple[str, ...] = ()

    def merged(self, other: Entity) -> Entity:
        """This entity with ``other``'s synonyms and xrefs added (this one's name kept)."""
        names = tuple(dict.fromkeys(name for name in (*self.synonyms, other.name, *other.synonyms)
                                    if name and name != self.name))
        return Entity(self.id, self.name, names, tuple(dict.fromkeys((*self.xrefs, *other.xrefs))))


@dataclass(frozen=True)
class Triple:
    """(subject id, relation, object id) and where it was read (``source`` = ``file:line``)."""

    subject_id: str
    relation: str
    object_id: str
    source: str = ""

    @property
    def key(self) -> str:
        """The triple's identity, used to order and sample triples independently of input order."""
        return f"{self.subject_id}\t{self.relation}\t{self.object_id}"


@dataclass(frozen=True)
class TripleSet:
    """Triples and every entity they name (each id a key of ``entities``), the inputs they came from,
    and how many input records were left out, by reason (the build's manifest reports them)."""

    entities: Mapping[str, Entity]
    triples: tuple[Triple, ...]
    sources: tuple[str, ...] = field(default_factory=tuple)
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for triple in self.triples:
            for name in ("subject_id", "object_id"):
                if getattr(triple, name) not in self.entities:
                    raise DataError(f"{triple.source}: {name} {getattr(triple, name)!r} has no entity "
                                    "(no name); give its name or an ontology that has it")


def merge_triple_sets(sets: Sequence[TripleSet]) -> TripleSet:
    """One set: entities merged by id (first name kept, synonyms and xrefs pooled), triples
    deduplicated on (subject, relation, object) keeping the first source."""
    entities: dict[str, Entity] = {}
    triples: dict[str, Triple] = {}
    skipped: dict[str, int] = {}
    for triple_set in sets:
        for reason, count in triple_set.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        for entity in triple_set.entities.values():
            entities[entity.id] = entities[entity.id].merged(entity) if entity.id in entities else entity
        for triple in triple_set.triples:
            triples.setdefault(triple.key, triple)
    return TripleSet(entities=entities, triples=tuple(triples.values()),
                     sources=tuple(source for triple_set in sets for source in triple_set.sources), skipped=skipped)


def _split(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split("|") if part.strip())
    if isinstance(value, list):
        return tuple(str(part).strip() for part in value if str(part).strip())
    raise DataError(f"expected a '|'-separated string or a list, got {type(value).__name__}")


REQUIRED = ("subject_id", "relation", "object_id")


def _records(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None
                    if not isinstance(record, dict):
                        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                    yield number, record
        return
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}:1: the header lacks column(s) {', '.join(missing)}; a triples TSV needs "
                            "subject_id, relation, object_id (and subject_name, object_name unless an ontology "
                            f"names the ids); found {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise DataError(f"{path}:{number}: more columns than the header has ({len(reader.fieldnames or ())})")
            yield number, row


def _entity(record: Mapping[str, Any], role: str, path: Path, number: int,
            ontology: Mapping[str, Entity] | None) -> Entity:
    raw = str(record.get(f"{role}_id") or "").strip()
    if not raw:
        raise DataError(f"{path}:{number}: field {role}_id is empty")
    entity_id = normalise_id(raw)
    name = str(record.get(f"{role}_name") or "").strip()
    synonyms = _split(record.get(f"{role}_synonyms"))
    xrefs = tuple(normalise_id(x) for x in _split(record.get(f"{role}_xrefs")))
    if ontology is not None:
        known = ontology.get(entity_id)
        if known is None:
            raise DataError(f"{path}:{number}: field {role}_id: {raw!r} is not in the ontology "
                            f"({len(ontology)} terms); fix the id or give the ontology that defines it")
        return known.merged(Entity(entity_id, name or known.name, synonyms, xrefs)) if (name or synonyms or xrefs) else known
    if not name:
        raise DataError(f"{path}:{number}: field {role}_name is empty; name the {role} or pass an ontology "
                        "(--ontology) that names its id")
    return Entity(entity_id, name, synonyms, xrefs)


def read_triples_table(path: Path, ontology: Mapping[str, Entity] | None = None) -> TripleSet:
    """Triples from a TSV or JSONL file (see the module docstring)."""
    entities: dict[str, Entity] = {}
    triples: list[Triple] = []
    for number, record in _records(path):
        relation = str(record.get("relation") or "").strip()
        if not relation:
            raise DataError(f"{path}:{number}: field relation is empty")
        subject = _entity(record, "subject", path, number, ontology)
        obj = _entity(record, "object", path, number, ontology)
        for entity in (subject, obj):
            entities[entity.id] = entities[entity.id].merged(entity) if entity.id in entities else entity
        triples.append(Triple(subject.id, relation, obj.id, f"{path.name}:{number}"))
    return TripleSet(entities=entities, triples=tuple(triples), sources=(str(path),))

