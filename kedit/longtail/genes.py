"""A long-tail benchmark on the *subject popularity* axis from Bioconductor's org.Hs.eg.db (no R needed).

Debian's ``r-bioc-org.hs.eg.db`` ships ``org.Hs.eg.sqlite``: Entrez Gene's human genes with their
PubMed links (``pubmed``: ~1.8M gene -> PMID rows over all of MEDLINE), chromosomes, locus types
(``genetype``) and direct GO annotations (``go_mf``, ``go_bp``, ``go_cc``); ``r-bioc-go.db`` ships
``GO.sqlite`` with the GO term names (``go_term``). The frequency of a fact here is its subject's
popularity — the number of distinct PubMed articles linked to the gene — not a subject–object
co-occurrence count, and every table and plot says so (``axis = "subject-popularity"``).

Relations (the paper's cardinality: a (gene, relation) with several objects is one-to-many):

* ``chromosome`` (one-to-one but for the ~60 pseudo-autosomal genes on X and Y),
* ``locus type`` (one-to-one),
* ``molecular function``, ``biological process``, ``cellular component`` (GO, mostly one-to-many;
  evidence ``ND`` — "no biological data", an annotation to the aspect's root — is dropped).

Building follows the paper (SPEC-ALGORITHMS B.1–B.5) with these departures, each named:

* a subject with no PubMed link is dropped (B.1 step 4 drops triples whose subject has no PMID), and
  so is every "gene" of type ``biological-region`` (~12k annotated regions, not genes: named
  ``LOC…``, their one fact would be a locus type their name gives away), ``other`` or ``unknown``;
* cardinality is computed once over every triple of the relation, not within each bin as the
  reference code's sampled files do (B.3), and is named by the paper's meaning, not the code's
  inverted labels;
* demonstrations: k held-out (gene, relation) *groups* per relation (seed 42, as B.1 step 5), all
  their triples removed from the pool, so no demonstration shares a probed fact's subject and
  relation (B.1 removes single triples, so another object of the same subject could be probed);
* sampling is per bin x cardinality (:func:`kedit.longtail.sampling.sample_per_bin`), seeded;
* each case also carries a portability probe that asks the question of one of the gene's aliases
  (kind ``subject-alias``) when the gene has an alias no other gene has.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kedit.errors import DataError
from kedit.longtail.bins import Bins
from kedit.longtail.sampling import SamplingMode, sample_per_bin
from kedit.longtail.schema import (
    CARDINALITIES,
    CASES_FILE,
    DEMONSTRATIONS_FILE,
    MANIFEST_FILE,
    Demonstration,
    LongTailCase,
    LongTailFact,
    write_jsonl,
)
from kedit.requests import SUBJECT_SLOT, Case, EditRequest, LocalityProbe, PortabilityProbe

ORGDB_PATH = Path("/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite")
GODB_PATH = Path("/usr/lib/R/site-library/GO.db/extdata/GO.sqlite")
TEMPLATES_PATH = Path(__file__).with_name("gene_templates.yaml")
SOURCE = "org.Hs.eg.db"
AXIS = "subject-popularity"
LEVEL = "document"  # the one level of this axis: PubMed articles linked to the subject
DEMONSTRATION_SEED = 42  # B.1 step 5
LOCALITY_SEED = 44  # B.1 step 7
SAMPLING_SEED = 42  # B.4
ALIAS_KIND = "subject-alias"
DEFAULT_BINS = Bins()  # the paper's [0,10) [10,100) [100,1000) [1000,inf)

CHROMOSOME, LOCUS_TYPE = "chromosome", "locus type"
GO_RELATIONS = {"molecular function": "go_mf", "biological process": "go_bp", "cellular component": "go_cc"}
RELATIONS: tuple[str, ...] = (CHROMOSOME, LOCUS_TYPE, *GO_RELATIONS)
# NCBI gene types -> readable names; genes of any other type (biological-region, other, unknown) are dropped.
LOCUS_TYPES = {
    "protein-coding": "protein-coding", "ncRNA": "non-coding RNA", "pseudo": "pseudogene",
    "rRNA": "ribosomal RNA", "tRNA": "transfer RNA",
    "snRNA": "small nuclear RNA", "snoRNA": "small nucleolar RNA", "scRNA": "small cytoplasmic RNA",
}
ORGDB_TABLES = ("genes", "gene_info", "pubmed", "chromosomes", "genetype", "alias", *GO_RELATIONS.values())


@dataclass(frozen=True)
class GeneTriple:
    """One (gene, relation, object) fact of the source."""

    gene_id: str
    relation: str
    object_id: str
    object: str


@dataclass(frozen=True)
class GeneSource:
    """What the benchmark is built from: each gene's symbol, popularity and unique alias, and the triples."""

    symbols: Mapping[str, str]  # Entrez gene id -> symbol (genes of a kept locus type only)
    popularity: Mapping[str, int]  # gene id -> distinct PubMed articles linked (genes without any are absent)
    aliases: Mapping[str, str]  # gene id -> an alias symbol no other gene has (genes without one are absent)
    triples: tuple[GeneTriple, ...]
    inputs: Mapping[str, Mapping[str, Any]]  # name -> {"path", "sha256"} of the files read


@dataclass(frozen=True)
class RelationTemplates:
    question: str  # with one "{}" for the gene symbol
    rephrase: str


# ------------------------------------------------------------------------------------------ reading


def _connect(path: Path, tables: Sequence[str], package: str) -> sqlite3.Connection:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; install Debian's {package} (make orgdb) or pass its .sqlite path")
    # immutable=1: the file lives in a read-only system folder and nobody writes it while we read
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as error:
        connection.close()
        raise DataError(f"{path}: not an SQLite database ({error}); expected {package}'s .sqlite file") from None
    missing = [table for table in tables if table not in present]
    if missing:
        connection.close()
        raise DataError(f"{path}: table(s) {', '.join(missing)} missing; is this {package}'s .sqlite file?")
    return connection


def _unique_aliases(rows: Sequence[tuple[str, str]], symbols: set[str]) -> dict[str, str]:
    """Per gene the first (sorted) alias of at least 3 characters that is no gene's symbol (``symbols``) and
    names one gene only."""
    owners: dict[str, set[str]] = defaultdict(set)
    for gene_id, alias in rows:
        owners[alias].add(gene_id)
    chosen: dict[str, str] = {}
    for alias in sorted(owners):
        genes = owners[alias]
        if len(genes) != 1 or alias in symbols or len(alias) < 3 or alias.isdigit():
            continue
        gene_id = next(iter(genes))
        chosen.setdefault(gene_id, alias)
    return chosen


def read_gene_source(orgdb: Path = ORGDB_PATH, godb: Path = GODB_PATH) -> GeneSource:
    """Read genes, popularity, aliases and the five relations' triples from the two SQLite files."""
    from kedit.paths import sha256_file
    from kedit.runs import portable_path

    org = _connect(orgdb, ORGDB_TABLES, "r-bioc-org.hs.eg.db")
    go = _connect(godb, ("go_term",), "r-bioc-go.db")
    try:
        kept_types = ", ".join(f"'{name}'" for name in LOCUS_TYPES)
        symbols = {str(g): s for g, s in org.execute(
            "SELECT genes.gene_id, gene_info.symbol FROM genes JOIN gene_info USING (_id) JOIN genetype USING (_id) "
            f"WHERE gene_type IN ({kept_types})")}
        popularity = {str(g): int(n) for g, n in org.execute(
            "SELECT genes.gene_id, COUNT(DISTINCT pubmed.pubmed_id) FROM pubmed JOIN genes USING (_id) "
            "GROUP BY genes.gene_id")}
        aliases = _unique_aliases([(str(g), a) for g, a in org.execute(
            "SELECT genes.gene_id, alias.alias_symbol FROM alias JOIN genes USING (_id)")],
            {row[0] for row in org.execute("SELECT symbol FROM gene_info")})
        terms = dict(go.execute("SELECT go_id, term FROM go_term"))
        triples: list[GeneTriple] = []
        for gene_id, chromosome in org.execute(
                "SELECT DISTINCT genes.gene_id, chromosome FROM chromosomes JOIN genes USING (_id)"):
            if chromosome != "Un":  # unplaced: no chromosome to name
                triples.append(GeneTriple(str(gene_id), CHROMOSOME, f"chr{chromosome}", str(chromosome)))
        for gene_id, gene_type in org.execute(
                "SELECT DISTINCT genes.gene_id, gene_type FROM genetype JOIN genes USING (_id)"):
            if gene_type in LOCUS_TYPES:  # the others' genes are not in ``symbols`` either
                triples.append(GeneTriple(str(gene_id), LOCUS_TYPE, gene_type, LOCUS_TYPES[gene_type]))
        for relation, table in GO_RELATIONS.items():
            for gene_id, go_id in org.execute(
                    f"SELECT DISTINCT genes.gene_id, go_id FROM {table} JOIN genes USING (_id) "
                    "WHERE evidence != 'ND'"):
                if go_id in terms:  # a term missing from GO.db is obsolete: it has no name to ask for
                    triples.append(GeneTriple(str(gene_id), relation, go_id, terms[go_id]))
    finally:
        org.close()
        go.close()
    inputs = {name: {"path": portable_path(path), "sha256": sha256_file(Path(path))}
              for name, path in (("orgdb", orgdb), ("godb", godb))}
    kept = tuple(sorted((t for t in triples if t.gene_id in popularity and t.gene_id in symbols),
                        key=lambda t: (t.relation, int(t.gene_id) if t.gene_id.isdigit() else 0, t.gene_id, t.object_id)))
    return GeneSource(symbols, popularity, aliases, kept, inputs)


def load_templates(path: Path = TEMPLATES_PATH) -> dict[str, RelationTemplates]:
    """The question and rephrase template of every relation; a bad file is a one-line error naming it."""
    path = Path(path)
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot read the templates ({error})") from None
    relations = (payload or {}).get("relations") if isinstance(payload, Mapping) else None
    if not isinstance(relations, Mapping):
        raise DataError(f"{path}: expected a top-level 'relations:' mapping of relation -> question/rephrase")
    unknown = sorted(set(relations) - set(RELATIONS))
    if unknown:
        raise DataError(f"{path}: unknown relation(s) {', '.join(map(repr, unknown))}; "
                        f"the gene relations are {', '.join(RELATIONS)}")
    missing = [relation for relation in RELATIONS if relation not in relations]
    if missing:
        raise DataError(f"{path}: no templates for relation(s) {', '.join(missing)}")
    templates = {}
    for relation in RELATIONS:
        entry = relations[relation]
        fields = {}
        for name in ("question", "rephrase"):
            text = entry.get(name) if isinstance(entry, Mapping) else None
            if not isinstance(text, str) or text.count(SUBJECT_SLOT) != 1:
                raise DataError(f"{path}: relations.{relation}.{name} must be a string with exactly one '{{}}' "
                                f"where the gene symbol goes, got {text!r}")
            fields[name] = text
        templates[relation] = RelationTemplates(**fields)
    return templates


# ----------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class GeneBenchmark:
    cases: tuple[LongTailCase, ...]
    demonstrations: tuple[Demonstration, ...]
    manifest: Mapping[str, Any]


def _groups(triples: Sequence[GeneTriple]) -> dict[tuple[str, str], list[GeneTriple]]:
    """(gene, relation) -> its triples, in source order (sorted by object id)."""
    groups: dict[tuple[str, str], list[GeneTriple]] = defaultdict(list)
    for triple in triples:
        groups[(triple.gene_id, triple.relation)].append(triple)
    return groups


def _held_out_groups(groups: Mapping[tuple[str, str], list[GeneTriple]], k: int) -> set[tuple[str, str]]:
    """k (gene, relation) groups per relation, drawn with the paper's seed from the sorted groups."""
    rng = random.Random(DEMONSTRATION_SEED)
    held: set[tuple[str, str]] = set()
    for relation in RELATIONS:
        keys = sorted((key for key in groups if key[1] == relation), key=lambda key: key[0])
        held.update(rng.sample(keys, min(k, len(keys))))
    return held


def fact_id(triple: GeneTriple) -> str:
    return f"{triple.relation}:{triple.gene_id}:{triple.object_id}"


def build_gene_benchmark(source: GeneSource, templates: Mapping[str, RelationTemplates], *, bins: Bins = DEFAULT_BINS,
                         n: int = 25, mode: SamplingMode = "stratified", k: int = 5,
                         seed: int = SAMPLING_SEED) -> GeneBenchmark:
    """Cases sampled per bin x cardinality (``n`` per cell for ``stratified``, ``n`` in all for ``natural``).

    Every case's ``longtail.objects`` holds all valid objects of its (gene, relation), its own first;
    its request edits the true object in (``target_new``; the other objects as ``extra_targets``);
    its locality probe is another gene's fact of the same relation (seed 44).
    """
    groups = _groups(source.triples)
    held = _held_out_groups(groups, k)
    demonstrations = tuple(
        Demonstration(relation, templates[relation].question.replace(SUBJECT_SLOT, source.symbols[gene_id]),
                      groups[(gene_id, relation)][0].object)
        for gene_id, relation in sorted(held, key=lambda key: (RELATIONS.index(key[1]), key[0])))
    pool = [triple for key, triples in groups.items() if key not in held for triple in triples]
    cardinality = {key: "one-to-many" if len(triples) > 1 else "one-to-one" for key, triples in groups.items()}

    def cell(triple: GeneTriple) -> str:
        return f"{bins.label(source.popularity[triple.gene_id])}|{cardinality[(triple.gene_id, triple.relation)]}"

    labels = [f"{label}|{card}" for label in bins.labels for card in CARDINALITIES]
    sample = sample_per_bin(pool, cell, fact_id, labels, n, mode, seed)
    by_relation: dict[str, list[GeneTriple]] = defaultdict(list)
    for triple in source.triples:  # any fact of the relation may be a partner, a held-out one too (B.1 step 7)
        by_relation[triple.relation].append(triple)
    rng = random.Random(LOCALITY_SEED)
    cases = tuple(_case(triple, groups[(triple.gene_id, triple.relation)], _partner(triple, by_relation, rng),
                        source, templates, bins, cardinality[(triple.gene_id, triple.relation)])
                  for triple in sample)
    population = _cell_counts(pool, cell, labels)
    manifest = {
        "source": SOURCE, "axis": AXIS, "levels": [LEVEL],
        "frequency": "distinct PubMed articles linked to the gene in org.Hs.eg.db (subject popularity over "
                     "MEDLINE, not subject-object co-occurrence)",
        "inputs": dict(source.inputs),
        "bins": {"edges": list(bins.edges), "labels": list(bins.labels)},
        "sampling": {"mode": mode, "n": n, "seed": seed, "unit": "triple", "cells": "bin x cardinality"},
        "demonstrations": {"k": k, "seed": DEMONSTRATION_SEED, "held_out": "whole (gene, relation) groups"},
        "locality": {"seed": LOCALITY_SEED, "partner": "another gene's triple of the same relation"},
        "relations": {relation: {"question": t.question, "rephrase": t.rephrase} for relation, t in templates.items()},
        "population": population,
        "sample": _cell_counts(sample, cell, labels),
        "triples": len(source.triples), "genes_with_pubmed": len(source.popularity),
    }
    return GeneBenchmark(cases, demonstrations, manifest)


def _partner(triple: GeneTriple, by_relation: Mapping[str, Sequence[GeneTriple]], rng: random.Random) -> GeneTriple:
    candidates = by_relation[triple.relation]
    for _ in range(1000):  # another gene's fact: almost always the first draw
        partner = candidates[rng.randrange(len(candidates))]
        if partner.gene_id != triple.gene_id:
            return partner
    raise DataError(f"relation {triple.relation!r} has no fact of another gene to use as a locality partner")


def _cell_counts(triples: Sequence[GeneTriple], cell: Any, labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{bin: {cardinality: triples}} for every cell, empty ones included."""
    counts: dict[str, dict[str, int]] = {}
    for label in labels:
        bin_label, card = label.split("|")
        counts.setdefault(bin_label, {})[card] = 0
    for triple in triples:
        bin_label, card = cell(triple).split("|")
        counts[bin_label][card] += 1
    return counts


def _case(triple: GeneTriple, group: Sequence[GeneTriple], partner: GeneTriple, source: GeneSource,
          templates: Mapping[str, RelationTemplates], bins: Bins, cardinality: str) -> LongTailCase:
    symbol = source.symbols[triple.gene_id]
    template = templates[triple.relation]
    others = [t for t in group if t.object_id != triple.object_id]
    request = EditRequest(prompt=template.question, subject=symbol, target_new=triple.object,
                          extra_targets=tuple(dict.fromkeys(t.object for t in others if t.object != triple.object)))
    locality = LocalityProbe(templates[partner.relation].question.replace(SUBJECT_SLOT, source.symbols[partner.gene_id]),
                             partner.object)
    alias = source.aliases.get(triple.gene_id)
    portability = (PortabilityProbe(template.question.replace(SUBJECT_SLOT, alias), triple.object, ALIAS_KIND),) \
        if alias else ()
    case = Case(request, rephrases=(template.rephrase.replace(SUBJECT_SLOT, symbol),), locality=(locality,),
                portability=portability, case_id=fact_id(triple))
    count = source.popularity[triple.gene_id]
    fact = LongTailFact(
        subject_id=triple.gene_id, subject=symbol, relation=triple.relation, object_id=triple.object_id,
        object=triple.object, objects=(triple.object, *(t.object for t in others)),
        object_ids=(triple.object_id, *(t.object_id for t in others)), cardinality=cardinality, axis=AXIS,
        counts={LEVEL: count}, bins={LEVEL: bins.label(count)}, subject_doc_freq=count, source=SOURCE,
        extra={"locality_fact": fact_id(partner), **({"alias": alias} if alias else {})})
    return LongTailCase(case, fact)


def write_gene_benchmark(benchmark: GeneBenchmark, folder: Path) -> Path:
    """Write cases.jsonl, demonstrations.jsonl and manifest.json (each atomically) into ``folder``."""
    from kedit.runs import provenance, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / CASES_FILE, (case.to_dict() for case in benchmark.cases))
    write_jsonl(folder / DEMONSTRATIONS_FILE, (demo.to_dict() for demo in benchmark.demonstrations))
    write_json_atomic(folder / MANIFEST_FILE, {**benchmark.manifest, "cases": len(benchmark.cases),
                                               **provenance(None)})
    return folder
