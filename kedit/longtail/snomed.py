"""SNOMED CT triples from an RF2 release (for users with a licence; kedit ships none of it).

Give the folder holding the Snapshot files (any depth below it):

* ``sct2_Concept_Snapshot*.txt`` — ``id effectiveTime active moduleId definitionStatusId``;
* ``sct2_Description_Snapshot*.txt`` — ``id effectiveTime active moduleId conceptId languageCode
  typeId term caseSignificanceId``: the fully specified name (type 900000000000003001) with its
  semantic tag removed is the entity's name ("Ulnar neuropathy (disorder)" -> "Ulnar neuropathy"),
  the active synonyms (900000000000013009) its synonyms;
* ``sct2_Relationship_Snapshot*.txt`` — ``id effectiveTime active moduleId sourceId destinationId
  relationshipGroup typeId characteristicTypeId modifierId``: each active row is the triple
  (source, the type concept's name, destination), e.g. (Ulnar neuropathy, Finding site, Ulnar nerve).

Only active rows of active concepts are read. A SNOMED export already in the triples TSV layout
(:mod:`kedit.longtail.triples`) is read as ``tsv:FILE`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.triples import Entity, Triple, TripleSet

FULLY_SPECIFIED_NAME = "900000000000003001"
SYNONYM = "900000000000013009"
_SEMANTIC_TAG = re.compile(r"\s*\([^()]*\)\s*$")
_COLUMNS = {
    "Concept": ("id", "active"),
    "Description": ("conceptId", "active", "typeId", "term"),
    "Relationship": ("sourceId", "destinationId", "typeId", "active"),
}


def without_tag(name: str) -> str:
    """A fully specified name without its trailing semantic tag."""
    return _SEMANTIC_TAG.sub("", name).strip() or name.strip()


def _find(folder: Path, kind: str) -> list[Path]:
    files = sorted(folder.rglob(f"sct2_{kind}_Snapshot*.txt"))
    if not files:
        raise DataError(f"{folder}: no sct2_{kind}_Snapshot*.txt below it (give the RF2 release's Snapshot folder)")
    return files


def _rows(path: Path, kind: str) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").rstrip("\r").split("\t")
        missing = [name for name in _COLUMNS[kind] if name not in header]
        if missing:
            raise DataError(f"{path}:1: the header lacks {', '.join(missing)} (is this an RF2 {kind} file?)")
        for number, line in enumerate(handle, start=2):
            fields = line.rstrip("\n").rstrip("\r").split("\t")
            if len(fields) != len(header):
                raise DataError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
            yield number, dict(zip(header, fields, strict=True))


def read_snomed_rf2(folder: Path) -> TripleSet:
    """Triples and entities of an RF2 Snapshot (see the module docstring); ids are ``SNOMEDCT:<sctid>``."""
    active: set[str] = set()
    for path in _find(folder, "Concept"):
        for _, row in _rows(path, "Concept"):
            if row["active"] == "1":
                active.add(row["id"])
    names: dict[str, str] = {}
    synonyms: dict[str, list[str]] = {}
    for path in _find(folder, "Description"):
        for _, row in _rows(path, "Description"):
            concept = row["conceptId"]
            if row["active"] != "1" or concept not in active:
                continue
            if row["typeId"] == FULLY_SPECIFIED_NAME:
                names[concept] = without_tag(row["term"])
            elif row["typeId"] == SYNONYM:
                synonyms.setdefault(concept, []).append(row["term"].strip())
    triples: dict[str, Triple] = {}
    used: set[str] = set()
    for path in _find(folder, "Relationship"):
        for number, row in _rows(path, "Relationship"):
            if row["active"] != "1":
                continue
            source, target, kind = row["sourceId"], row["destinationId"], row["typeId"]
            if not {source, target} <= active:
                continue
            if kind not in names:
                raise DataError(f"{path}:{number}: field typeId: concept {kind} has no active fully specified name")
            for concept, field in ((source, "sourceId"), (target, "destinationId")):
                if concept not in names:
                    raise DataError(f"{path}:{number}: field {field}: concept {concept} has no active fully specified name")
            triple = Triple(f"SNOMEDCT:{source}", names[kind], f"SNOMEDCT:{target}", f"{path.name}:{number}")
            triples.setdefault(triple.key, triple)
            used.update((source, target))
    entities = {
        f"SNOMEDCT:{concept}": Entity(f"SNOMEDCT:{concept}", names[concept],
                                      tuple(dict.fromkeys(s for s in synonyms.get(concept, ()) if s != names[concept])))
        for concept in sorted(used)
    }
    return TripleSet(entities=entities, triples=tuple(triples.values()), sources=(str(folder),))
