"""The gene benchmark (subject popularity over MEDLINE) on a tiny hand-made org.Hs.eg.db / GO.db pair.

The two SQLite files have the real files' table and column names (org.Hs.eg.sqlite and GO.sqlite from
Debian's r-bioc-org.hs.eg.db and r-bioc-go.db) and a handful of genes whose counts, bins, cardinalities,
demonstrations and aliases are worked out by hand below.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from kedit.errors import DataError
from kedit.longtail.bins import Bins
from kedit.longtail.genes import (
    ORGDB_PATH,
    build_gene_benchmark,
    load_templates,
    read_gene_source,
    write_gene_benchmark,
)
from kedit.longtail.schema import read_cases, read_demonstrations

ORG_SCHEMA = """
CREATE TABLE genes (_id INTEGER PRIMARY KEY, gene_id VARCHAR(10) NOT NULL UNIQUE);
CREATE TABLE gene_info (_id INTEGER NOT NULL UNIQUE, gene_name VARCHAR(255) NOT NULL, symbol VARCHAR(80) NOT NULL);
CREATE TABLE pubmed (_id INTEGER NOT NULL, pubmed_id VARCHAR(10) NOT NULL);
CREATE TABLE chromosomes (_id INTEGER NOT NULL, chromosome VARCHAR(2) NOT NULL);
CREATE TABLE genetype (_id INTEGER NOT NULL, gene_type VARCHAR(20) NOT NULL);
CREATE TABLE alias (_id INTEGER NOT NULL, alias_symbol VARCHAR(80) NOT NULL);
CREATE TABLE go_mf (_id INTEGER NOT NULL, go_id CHAR(10) NOT NULL, evidence CHAR(3) NOT NULL);
CREATE TABLE go_bp (_id INTEGER NOT NULL, go_id CHAR(10) NOT NULL, evidence CHAR(3) NOT NULL);
CREATE TABLE go_cc (_id INTEGER NOT NULL, go_id CHAR(10) NOT NULL, evidence CHAR(3) NOT NULL);
"""
# (_id, Entrez id, symbol, PubMed articles, chromosomes, gene type, aliases)
GENES = [
    (1, "101", "AAA", 12, ["1"], "protein-coding", ["AAA", "SHARED"]),
    (2, "102", "BBB", 3, ["X", "Y"], "pseudo", ["BBB1", "SHARED"]),
    (3, "103", "CCC", 0, ["2"], "protein-coding", []),  # no PubMed link: dropped
    (4, "104", "LOC104", 5, ["3"], "biological-region", []),  # not a gene: dropped
    (5, "105", "DDD", 1000, ["2"], "protein-coding", ["DD"]),  # alias of 2 characters: not used
    (6, "106", "EEE", 150, ["3"], "ncRNA", ["EEEX"]),
]
GO_ROWS = {
    "go_mf": [(1, "GO:0000001", "IDA"), (1, "GO:0000002", "IPI"), (1, "GO:0000002", "IEA"),  # two terms, one twice
              (1, "GO:0000003", "ND"),  # "no biological data": dropped
              (5, "GO:0000001", "IDA"), (6, "GO:0000002", "TAS")],
    "go_bp": [(1, "GO:0000004", "IMP"), (5, "GO:0000004", "IMP"), (6, "GO:0000099", "IEA")],  # 99: not in GO.db
    "go_cc": [(1, "GO:0000005", "IDA"), (2, "GO:0000005", "IDA"), (5, "GO:0000006", "IDA")],
}
TERMS = [("GO:0000001", "protein binding", "MF"), ("GO:0000002", "kinase activity", "MF"),
         ("GO:0000003", "molecular_function", "MF"), ("GO:0000004", "cell division", "BP"),
         ("GO:0000005", "nucleus", "CC"), ("GO:0000006", "cytoplasm", "CC")]


@pytest.fixture
def databases(tmp_path: Path) -> tuple[Path, Path]:
    org, go = tmp_path / "org.Hs.eg.sqlite", tmp_path / "GO.sqlite"
    with sqlite3.connect(org) as db:
        db.executescript(ORG_SCHEMA)
        for row_id, gene_id, symbol, articles, chromosomes, gene_type, aliases in GENES:
            db.execute("INSERT INTO genes VALUES (?, ?)", (row_id, gene_id))
            db.execute("INSERT INTO gene_info VALUES (?, ?, ?)", (row_id, f"{symbol} gene", symbol))
            db.executemany("INSERT INTO pubmed VALUES (?, ?)", [(row_id, str(9000 + n)) for n in range(articles)])
            db.executemany("INSERT INTO chromosomes VALUES (?, ?)", [(row_id, c) for c in chromosomes])
            db.execute("INSERT INTO genetype VALUES (?, ?)", (row_id, gene_type))
            db.executemany("INSERT INTO alias VALUES (?, ?)", [(row_id, a) for a in aliases])
        db.execute("INSERT INTO pubmed VALUES (1, '9000')")  # the same article linked twice counts once
        for table, rows in GO_ROWS.items():
            db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
    with sqlite3.connect(go) as db:
        db.execute("CREATE TABLE go_term (_id INTEGER PRIMARY KEY, go_id CHAR(10) NOT NULL UNIQUE, "
                   "term VARCHAR(255) NOT NULL, ontology VARCHAR(9) NOT NULL, definition TEXT NULL)")
        db.executemany("INSERT INTO go_term (go_id, term, ontology) VALUES (?, ?, ?)", TERMS)
    return org, go


def test_source_counts_popularity_and_reads_the_relations(databases):
    source = read_gene_source(*databases)
    # distinct articles per gene; CCC (none) and LOC104 (a biological region) are dropped
    assert dict(source.popularity) == {"101": 12, "102": 3, "104": 5, "105": 1000, "106": 150}
    assert set(source.symbols) == {"101", "102", "103", "105", "106"}  # 103 has no fact: no popularity
    facts = {(t.gene_id, t.relation, t.object) for t in source.triples}
    assert facts == {
        ("101", "chromosome", "1"), ("102", "chromosome", "X"), ("102", "chromosome", "Y"),
        ("105", "chromosome", "2"), ("106", "chromosome", "3"),
        ("101", "locus type", "protein-coding"), ("102", "locus type", "pseudogene"),
        ("105", "locus type", "protein-coding"), ("106", "locus type", "non-coding RNA"),
        ("101", "molecular function", "protein binding"), ("101", "molecular function", "kinase activity"),
        ("105", "molecular function", "protein binding"), ("106", "molecular function", "kinase activity"),
        ("101", "biological process", "cell division"), ("105", "biological process", "cell division"),
        ("101", "cellular component", "nucleus"), ("102", "cellular component", "nucleus"),
        ("105", "cellular component", "cytoplasm"),
    }
    # an alias of its own for BBB; SHARED names two genes, DD is too short, EEEX is fine
    assert dict(source.aliases) == {"102": "BBB1", "106": "EEEX"}


def test_benchmark_bins_cardinality_objects_and_demonstrations(databases, tmp_path):
    source = read_gene_source(*databases)
    bench = build_gene_benchmark(source, load_templates(), bins=Bins(), n=100, mode="stratified", k=1)
    demos = {(d.relation, d.question) for d in bench.demonstrations}
    assert len(bench.demonstrations) == 5  # k = 1 group per relation
    by_id = {case.case.case_id: case for case in bench.cases}
    templates = load_templates()

    def question(triple):
        return templates[triple.relation].question.replace("{}", source.symbols[triple.gene_id])

    # every fact is in the benchmark except all those of the held-out (gene, relation) groups
    held = [t for t in source.triples if (t.relation, question(t)) in demos]
    assert len(by_id) + len(held) == len(source.triples)
    for case in bench.cases:
        fact = case.fact
        assert (fact.relation, case.case.request.text) not in demos  # never a probed fact's subject + relation
        assert fact.axis == "subject-popularity" and set(fact.counts) == {"document"}
        assert fact.bins["document"] == Bins().label(source.popularity[fact.subject_id])
        assert fact.objects[0] == fact.object == case.case.request.target_new
        assert case.case.request.target_true is None
        assert case.case.locality[0].prompt != case.case.request.text
    # with nothing held out every fact is a case: the hand-worked ones
    every = {c.case.case_id: c for c in build_gene_benchmark(source, templates, n=100, k=0).cases}
    bbb_x = every["chromosome:102:chrX"]
    assert bbb_x.fact.cardinality == "one-to-many" and bbb_x.fact.objects == ("X", "Y")
    assert bbb_x.case.request.extra_targets == ("Y",)
    assert bbb_x.case.portability[0].prompt == "On which chromosome is the human gene BBB1 located?"
    assert bbb_x.case.portability[0].kind == "subject-alias"
    assert bbb_x.fact.bins == {"document": "[0,10)"}
    ddd = every["molecular function:105:GO:0000001"]
    assert ddd.fact.cardinality == "one-to-one" and ddd.fact.bins == {"document": "[1000,inf)"}
    assert ddd.case.portability == ()  # DDD's only alias is too short
    assert every["chromosome:106:chr3"].fact.bins == {"document": "[100,1000)"}
    assert every["chromosome:106:chr3"].case.locality[0].prompt != "On which chromosome is the human gene EEE located?"
    folder = write_gene_benchmark(bench, tmp_path / "bench")
    assert [c.case.case_id for c in read_cases(folder)] == [c.case.case_id for c in bench.cases]
    assert sum(len(v) for v in read_demonstrations(folder).values()) == 5
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["axis"] == "subject-popularity"
    assert sum(manifest["population"]["[10,100)"].values()) == sum(1 for c in bench.cases if c.fact.subject_id == "101")
    assert manifest["inputs"]["orgdb"]["path"] == "<outside>/org.Hs.eg.sqlite"  # no machine path


def test_one_to_many_when_a_gene_has_several_terms(databases):
    source = read_gene_source(*databases)
    bench = build_gene_benchmark(source, load_templates(), n=100, k=0)
    cases = {case.case.case_id: case for case in bench.cases}
    aaa = cases["molecular function:101:GO:0000001"]
    assert aaa.fact.cardinality == "one-to-many"
    assert aaa.fact.objects == ("protein binding", "kinase activity")
    assert aaa.fact.object_ids == ("GO:0000001", "GO:0000002")
    assert cases["molecular function:101:GO:0000002"].fact.objects == ("kinase activity", "protein binding")
    assert cases["cellular component:105:GO:0000006"].fact.cardinality == "one-to-one"
    assert len(bench.cases) == len(source.triples)  # k = 0: nothing held out, n covers every cell


def test_sampling_is_seeded_per_cell(databases):
    source = read_gene_source(*databases)
    first = build_gene_benchmark(source, load_templates(), n=1, k=0, seed=3)
    again = build_gene_benchmark(source, load_templates(), n=1, k=0, seed=3)
    assert [c.case.case_id for c in first.cases] == [c.case.case_id for c in again.cases]
    cells = [(c.fact.bins["document"], c.fact.cardinality) for c in first.cases]
    assert len(cells) == len(set(cells))  # one per non-empty bin x cardinality
    assert first.manifest["sample"]["[0,10)"] == {"one-to-one": 1, "one-to-many": 1}


def test_bad_inputs_are_one_line_errors(databases, tmp_path):
    org, go = databases
    with pytest.raises(DataError, match="no such file"):
        read_gene_source(tmp_path / "missing.sqlite", go)
    broken = tmp_path / "broken.sqlite"
    with sqlite3.connect(broken) as db:
        db.execute("CREATE TABLE genes (_id INTEGER, gene_id TEXT)")
    with pytest.raises(DataError, match=r"table\(s\) gene_info.*missing"):
        read_gene_source(broken, go)
    templates = tmp_path / "templates.yaml"
    templates.write_text("relations:\n  colour:\n    question: 'What colour is {}?'\n    rephrase: 'Colour of {}?'\n")
    with pytest.raises(DataError, match=r"templates.yaml: unknown relation\(s\) 'colour'"):
        load_templates(templates)
    bad_slot = tmp_path / "slots.yaml"
    bad_slot.write_text("relations:\n" + "".join(
        f"  {name}:\n    question: 'no slot'\n    rephrase: 'x {{}}'\n"
        for name in ("chromosome", "locus type", "molecular function", "biological process", "cellular component")))
    with pytest.raises(DataError, match=r"relations.chromosome.question must be a string with exactly one"):
        load_templates(bad_slot)


@pytest.mark.slow
@pytest.mark.skipif(not ORGDB_PATH.is_file() and os.environ.get("CI") != "true",
                    reason="Debian's r-bioc-org.hs.eg.db is not installed (make orgdb)")
def test_real_orgdb_fills_all_four_bins():
    """The installed org.Hs.eg.db: every subject-popularity bin holds both cardinalities (the issue's counts)."""
    from kedit.longtail.genes import GODB_PATH

    if not GODB_PATH.is_file():
        pytest.fail("r-bioc-go.db is not installed (make orgdb installs it): GO term names are needed")
    source = read_gene_source()
    bins = Bins()
    genes_per_bin = {label: 0 for label in bins.labels}
    for count in source.popularity.values():
        genes_per_bin[bins.label(count)] += 1
    # all genes with a PubMed link, before dropping locus types: the 28,641 / 14,188 / 3,925 / 144
    assert genes_per_bin == {"[0,10)": 28641, "[10,100)": 14188, "[100,1000)": 3925, "[1000,inf)": 144}
    bench = build_gene_benchmark(source, load_templates(), n=2)
    assert all(count == 2 for cell in bench.manifest["sample"].values() for count in cell.values())
