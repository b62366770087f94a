"""Building a long-tail benchmark: bins at their edges, seeded sampling, cardinality classes, templates,
relation filtering, demonstrations and locality partners, an end-to-end build on a hand-made corpus
(document vs sentence counts), the CLI, ``kedit bench``'s loader, and a build killed midway then resumed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kedit.cli import app
from kedit.errors import DataError
from kedit.longtail.assemble import AssemblyConfig, Counted, assemble, clean_answer
from kedit.longtail.bins import Bins
from kedit.longtail.build import BuildConfig, build
from kedit.longtail.cardinality import cardinalities, mapping_classes, object_sets
from kedit.longtail.linking import LinkConfig
from kedit.longtail.relations import RelationFilter
from kedit.longtail.sampling import natural_quota, sample_per_bin
from kedit.longtail.schema import read_cases, read_demonstrations
from kedit.longtail.sources import TripleSource
from kedit.longtail.stages import SilentReporter
from kedit.longtail.templates import load_templates
from kedit.longtail.triples import Entity, Triple, TripleSet

# ------------------------------------------------------------------------------ bins and sampling


def test_bins_at_their_edges():
    bins = Bins()
    assert bins.labels == ("[0,10)", "[10,100)", "[100,1000)", "[1000,inf)")
    assert [bins.label(count) for count in (0, 9, 10, 99, 100, 999, 1000, 10**9)] == [
        "[0,10)", "[0,10)", "[10,100)", "[10,100)", "[100,1000)", "[100,1000)", "[1000,inf)", "[1000,inf)"]
    assert Bins.parse("1,10").labels == ("[0,1)", "[1,10)", "[10,inf)")
    assert Bins.parse("1,10").label(1) == "[1,10)"  # the editing script's zero bin [0,1)
    for bad in ("0,10", "10,10", "100,10", "a,b"):
        with pytest.raises(DataError):
            Bins.parse(bad)
    with pytest.raises(DataError):
        bins.label(-1)


def test_sampling_is_reproducible_by_seed_and_independent_of_input_order():
    items = [f"fact-{i:03d}" for i in range(200)]
    bin_of = {item: ("[0,10)" if i < 150 else "[10,100)" if i < 190 else "[100,1000)") for i, item in enumerate(items)}
    labels = ("[0,10)", "[10,100)", "[100,1000)", "[1000,inf)")

    def draw(order, seed, mode, n):
        return sample_per_bin(order, bin_of.__getitem__, lambda item: item, labels, n, mode, seed)

    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert draw(items, 42, "natural", 20) == draw(shuffled, 42, "natural", 20)
    assert draw(items, 42, "natural", 20) != draw(items, 43, "natural", 20)
    natural = draw(items, 42, "natural", 20)
    assert [sum(bin_of[x] == label for x in natural) for label in labels] == [15, 4, 1, 0]  # 150:40:10 of 20
    stratified = draw(items, 42, "stratified", 12)
    assert [sum(bin_of[x] == label for x in stratified) for label in labels] == [12, 12, 10, 0]  # all of a small bin
    assert natural_quota([1, 1, 1], 2) == [1, 1, 0]  # largest remainder, ties to the lower bin
    assert sum(natural_quota([7, 3, 1], 5)) == 5


# ----------------------------------------------------------------------------------- cardinality


def _triples(*rows: tuple[str, str, str]) -> list[Triple]:
    return [Triple(s, r, o) for s, r, o in rows]


def test_cardinality_classes_on_a_hand_made_triple_set():
    triples = _triples(
        ("marfan", "has phenotype", "tall"), ("marfan", "has phenotype", "lens"),   # one subject, two objects
        ("alport", "has phenotype", "deaf"),                                        # one object, alone
        ("x1", "has phenotype", "fever"), ("x2", "has phenotype", "fever"),         # two subjects share an object
        ("x2", "has phenotype", "rash"),
        ("marfan", "inherited", "AD"),                                              # another relation: its own classes
    )
    card = cardinalities(triples)
    assert card == {("marfan", "has phenotype"): "one-to-many", ("alport", "has phenotype"): "one-to-one",
                    ("x1", "has phenotype"): "one-to-one", ("x2", "has phenotype"): "one-to-many",
                    ("marfan", "inherited"): "one-to-one"}
    classes = {key.split("\t")[0] + ">" + key.split("\t")[2]: value for key, value in mapping_classes(triples).items()}
    # conventional names, head first: 1-N = one subject with several objects (the reference code calls it N_to_1)
    assert classes == {"marfan>tall": "1-N", "marfan>lens": "1-N", "alport>deaf": "1-1", "x1>fever": "N-1",
                       "x2>fever": "N-N", "x2>rash": "1-N", "marfan>AD": "1-1"}
    assert object_sets(triples)[("marfan", "has phenotype")] == ("lens", "tall")


# ------------------------------------------------------------------------- templates and relations


def test_templates_shipped_overridden_and_refused(tmp_path):
    book = load_templates()
    assert book.require("Has_Phenotype").prompt() == "What is a clinical feature of {}?"
    with pytest.raises(DataError, match=r"no question template for relation 'treats' \(first triple: t.tsv:3\)"):
        book.require("treats", "t.tsv:3")
    override = tmp_path / "mine.yaml"
    override.write_text("treats:\n  question: ['What does {subject} treat?']\n", encoding="utf-8")
    assert load_templates([override]).require("treats").question("aspirin") == "What does aspirin treat?"
    assert load_templates(fallback="What is the {relation} of {subject}?").require("Treats").question("x") == \
        "What is the treats of x?"
    bad = tmp_path / "bad.yaml"
    bad.write_text("treats:\n  question:\n    - 'What does it treat?'\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.yaml:3: treats question: template .* must contain \{subject\} exactly once"):
        load_templates([bad])
    bad.write_text("treats:\n  questions: ['What does {subject} treat?']\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.yaml:2: relation 'treats': unknown field 'questions'"):
        load_templates([bad])


def test_relation_filter_minimum_and_the_papers_drop_list():
    triples = _triples(*[(f"s{i}", "Finding site", f"o{i}") for i in range(5)],
                       *[(f"s{i}", "Is a", f"o{i}") for i in range(5)],
                       *[(f"s{i}", "Procedure site - Direct (attribute)", f"o{i}") for i in range(5)],
                       ("s0", "Causative agent", "o1"))
    kept, why = RelationFilter(min_triples=2).decide(triples)
    assert kept == {"Finding site"}
    assert why == {"Is a": "on the drop list", "Procedure site - Direct (attribute)": "on the drop list",
                   "Causative agent": "1 triples < --min-triples 2"}


def test_answers_are_cleaned_as_in_the_paper():
    assert clean_answer('"Fever (finding)" ') == "Fever"
    assert clean_answer("Ulnar nerve structure (body structure) (x)") == "Ulnar nerve structure"


# ---------------------------------------------------------------------- assembly on counted triples


def _triple_set(subjects: int, objects_per_subject: int) -> TripleSet:
    entities = {}
    triples = []
    for s in range(subjects):
        entities[f"S:{s}"] = Entity(f"S:{s}", f"Disease {s}")
        for k in range(objects_per_subject if s % 2 else 1):
            o = f"O:{s}-{k}"
            entities[o] = Entity(o, f"Feature {s}-{k} (finding)")
            triples.append(Triple(f"S:{s}", "has phenotype", o, f"t.tsv:{len(triples) + 2}"))
    return TripleSet(entities=entities, triples=tuple(triples))


def test_assembly_holds_out_whole_subjects_and_pairs_each_fact_with_another_subject():
    triple_set = _triple_set(subjects=20, objects_per_subject=3)
    counts = {(t.subject_id, t.object_id): {"document": i * 7, "sentence": i} for i, t in enumerate(triple_set.triples)}
    counted = Counted(levels=("document", "sentence"), pair_counts=counts,
                      frequencies={e: 1 for e in triple_set.entities})
    config = AssemblyConfig(relation_filter=RelationFilter(min_triples=1), demonstrations=3, seed=5)
    assembled = assemble(triple_set, counted, load_templates(), config)
    held = {demo.question for demo in assembled.demonstrations}
    assert len(held) == 3
    case_subjects = {case.fact.subject for case in assembled.cases}
    assert not any(f"of {subject}?" in question for subject in case_subjects for question in held)
    assert len(assembled.cases) + assembled.report["held_out_triples"] == len(triple_set.triples)
    for case in assembled.cases:
        fact = case.fact
        (probe,) = case.case.locality
        assert fact.subject not in probe.prompt and probe.prompt.startswith("What is a clinical feature of")
        assert fact.object == fact.objects[0] and "(" not in fact.object
        assert fact.cardinality == ("one-to-many" if len(fact.objects) == 3 else "one-to-one")
        # every valid object is on the case: MLE edits them all, scoring may accept any
        assert set(case.case.request.extra_targets) == set(fact.objects[1:])
        assert case.case.request.target_new == case.case.request.target_true == fact.object
        assert fact.bins["document"] == Bins().label(fact.counts["document"])
        assert fact.extra["mapping"] in {"1-1", "1-N"}
    again = assemble(triple_set, counted, load_templates(), config)
    assert [c.to_dict() for c in again.cases] == [c.to_dict() for c in assembled.cases]
    cells = AssemblyConfig(relation_filter=RelationFilter(min_triples=1), demonstrations=3, seed=5, sample=2,
                           sampling="stratified", per_cardinality=True)
    sampled = assemble(triple_set, counted, load_templates(), cells).cases
    per_cell = {}
    for case in sampled:
        key = (case.fact.bins["document"], case.fact.cardinality)
        per_cell[key] = per_cell.get(key, 0) + 1
    population = {}
    for case in assembled.cases:
        key = (case.fact.bins["document"], case.fact.cardinality)
        population[key] = population.get(key, 0) + 1
    assert per_cell == {key: min(2, size) for key, size in population.items()}


def test_imported_counts_leave_out_pairs_the_table_lacks():
    triple_set = _triple_set(subjects=4, objects_per_subject=1)
    first = triple_set.triples[0]
    counted = Counted(levels=("document",), pair_counts={(first.subject_id, first.object_id): {"document": 1500}},
                      frequencies=None, imported=True)
    assembled = assemble(triple_set, counted, load_templates(),
                         AssemblyConfig(relation_filter=RelationFilter(min_triples=1), demonstrations=0))
    assert [case.fact.counts for case in assembled.cases] == [{"document": 1500}]
    assert assembled.cases[0].fact.bins == {"document": "[1000,inf)"}
    assert assembled.report["left_out"]["pair not in the count table"] == 3


# ------------------------------------------------------------------------------ end-to-end builds

CORPUS = """\
1|t|Aspirin and rash.
1|a|Aspirin caused a rash. Fever followed aspirin.

2|t|Fever.
2|a|Ibuprofen may cause fever. Rash was absent.

3|t|Headache after aspirin.
3|a|No rash.

4|t|Naproxen and dizziness.
4|a|Nothing else was seen.
"""

TRIPLES = """\
subject_id\tsubject_name\trelation\tobject_id\tobject_name
C:aspirin\tAspirin\tinduces\tD:rash\tRash
C:aspirin\tAspirin\tinduces\tD:fever\tFever
C:aspirin\tAspirin\tinduces\tD:headache\tHeadache
C:ibuprofen\tIbuprofen\tinduces\tD:fever\tFever
C:ibuprofen\tIbuprofen\tinduces\tD:rash\tRash
C:naproxen\tNaproxen\tinduces\tD:dizziness\tDizziness
C:paracetamol\tParacetamol\tinduces\tD:nausea\tNausea
"""


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.PubTator"
    corpus.write_text(CORPUS, encoding="utf-8")
    triples = tmp_path / "triples.tsv"
    triples.write_text(TRIPLES, encoding="utf-8")
    return corpus, triples


def _config(tmp_path: Path, out: str, cache: str, **changes) -> BuildConfig:
    corpus, triples = _inputs(tmp_path)
    return BuildConfig(out=tmp_path / out, triples=(TripleSource("tsv", triples),), docs=(corpus,),
                       link=LinkConfig(methods=("id", "dictionary")), cache=tmp_path / cache,
                       assembly=AssemblyConfig(relation_filter=RelationFilter(min_triples=1), demonstrations=0,
                                               bins=Bins((2,))), chunk_docs=1, **changes)


def test_an_end_to_end_build_counts_documents_and_sentences(tmp_path):
    result = build(_config(tmp_path, "bench", "cache"))
    facts = {(c.fact.subject, c.fact.object): c.fact for c in read_cases(result.out)}
    counts = {key: (fact.counts["document"], fact.counts["sentence"]) for key, fact in facts.items()}
    assert counts == {
        ("Aspirin", "Rash"): (2, 2),        # documents 1 and 3; the title and "Aspirin caused a rash."
        ("Aspirin", "Fever"): (1, 1),       # "Fever followed aspirin."
        ("Aspirin", "Headache"): (1, 1),
        ("Ibuprofen", "Fever"): (1, 1),
        ("Ibuprofen", "Rash"): (1, 0),      # same document, different sentences
        ("Naproxen", "Dizziness"): (1, 1),
    }  # paracetamol is in no document: left out, as the paper does
    assert facts[("Aspirin", "Rash")].bins == {"document": "[2,inf)", "sentence": "[2,inf)"}
    assert facts[("Ibuprofen", "Rash")].bins == {"document": "[0,2)", "sentence": "[0,2)"}
    assert facts[("Aspirin", "Rash")].cardinality == "one-to-many"
    assert facts[("Naproxen", "Dizziness")].cardinality == "one-to-one"
    assert facts[("Aspirin", "Rash")].subject_doc_freq == 2  # documents 1 and 3
    assert facts[("Aspirin", "Rash")].extra["object_doc_freq"] == 3  # rash: documents 1, 2 and 3
    assert result.manifest["report"]["left_out"]["subject or object in no document"] == 1
    assert result.manifest["corpus"]["documents"] == 4
    # the same inputs again: every stage and the benchmark are reused
    again = build(_config(tmp_path, "bench", "cache"))
    assert again.reused and again.manifest == result.manifest


def test_the_cli_builds_counts_and_bench_reads_the_benchmark(tmp_path):
    corpus, triples = _inputs(tmp_path)
    out = tmp_path / "bench"
    runner = CliRunner()
    built = runner.invoke(app, ["longtail", "build", "--docs", str(corpus), "--triples", f"tsv:{triples}",
                                "--out", str(out), "--min-triples", "1", "--demonstrations", "1", "--bins", "2",
                                "--threads", "1"])
    assert built.exit_code == 0, built.output
    shown = runner.invoke(app, ["longtail", "stats", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    stats = json.loads(shown.output)
    assert [level["level"] for level in stats["levels"]] == ["document", "sentence"]
    assert stats["cases"] + 1 <= 6 and stats["demonstrations"] == 1
    assert len(read_demonstrations(out)["induces"]) == 1
    from kedit.data.registry import detect_format, load_dataset

    cases_file = out / "cases.jsonl"
    assert detect_format(cases_file) == "longtail"
    loaded = load_dataset("longtail", cases_file)
    assert len(loaded.cases) == stats["cases"] and not loaded.problems
    assert loaded.cases[0].request.prompt == "Which disease can be induced by {}?"


def test_cli_bad_input_is_one_line_naming_file_line_and_field(tmp_path):
    corpus, triples = _inputs(tmp_path)
    runner = CliRunner()
    treats = tmp_path / "treats.tsv"
    treats.write_text(TRIPLES + "C:aspirin\tAspirin\ttreats\tD:headache\tHeadache\n", encoding="utf-8")
    result = runner.invoke(app, ["longtail", "build", "--docs", str(corpus), "--triples", f"tsv:{treats}",
                                 "--out", str(tmp_path / "b"), "--min-triples", "1", "--threads", "1"])
    assert result.exit_code == 2
    assert "no question template for relation 'treats' (first triple: treats.tsv:9)" in result.output
    assert "--drop-relation" in result.output and "Traceback" not in result.output
    ontology = tmp_path / "drugs.obo"
    ontology.write_text("[Term]\nid: C:aspirin\nname: Aspirin\n\n[Term]\nid: D:rash\nname: Rash\n", encoding="utf-8")
    ids_only = tmp_path / "ids.tsv"
    ids_only.write_text("subject_id\trelation\tobject_id\nC:aspirin\tinduces\tD:rash\nC:aspirin\tinduces\tD:gout\n",
                        encoding="utf-8")
    result = runner.invoke(app, ["longtail", "build", "--docs", str(corpus), "--triples", f"tsv:{ids_only}",
                                 "--ontology", f"obo:{ontology}", "--out", str(tmp_path / "o"), "--min-triples", "1"])
    assert result.exit_code == 2
    assert "ids.tsv:3: field object_id: 'D:gout' is not in the ontology" in result.output
    broken = tmp_path / "broken.PubTator"
    broken.write_text(CORPUS.replace("3|a|No rash.", "3|a|No rash.\n3\t0\t8\tHeadache\tDisease"), encoding="utf-8")
    result = runner.invoke(app, ["longtail", "build", "--docs", str(broken), "--triples", f"tsv:{triples}",
                                 "--out", str(tmp_path / "c"), "--min-triples", "1"])
    assert result.exit_code == 2
    assert "broken.PubTator:9: a PubTator mention line has 5 tab-separated columns" in result.output


class _KillAfter(SilentReporter):
    """Interrupts the build (as Ctrl-C or a kill would) after ``parts`` parts of ``stage``."""

    def __init__(self, stage: str, parts: int) -> None:
        self.stage, self.parts, self.seen = stage, parts, 0

    def advance(self, stage: str, units: int = 1) -> None:
        if stage == self.stage:
            self.seen += units
            if self.seen == self.parts:
                raise KeyboardInterrupt


def test_a_build_killed_midway_resumes_to_the_same_benchmark(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build(_config(tmp_path, "bench", "cache"), _KillAfter("linking", 2))
    (linking,) = (tmp_path / "cache").glob("mentions-*")
    parts = sorted(linking.glob("part-*.parquet"))
    assert len(parts) == 2 and not (linking / "complete.json").exists()  # 2 of 4 documents linked
    written = {part.name: part.stat().st_mtime_ns for part in parts}
    # a part being written when the process died leaves only a temporary file, never a part
    (linking / ".part-000002.parquet.999.tmp").write_bytes(b"half a parquet file")
    assert not (tmp_path / "bench" / "cases.jsonl").exists()
    resumed = build(_config(tmp_path, "bench", "cache"))
    assert {part.name: part.stat().st_mtime_ns for part in sorted(linking.glob("part-*.parquet"))
            if part.name in written} == written  # the finished parts were kept, not redone
    assert len(list(linking.glob("part-*.parquet"))) == 4
    fresh = build(_config(tmp_path, "fresh", "fresh-cache"))
    for name in ("cases.jsonl", "demonstrations.jsonl"):
        assert (resumed.out / name).read_bytes() == (fresh.out / name).read_bytes()
    assert resumed.manifest["report"] == fresh.manifest["report"]
    assert resumed.manifest["stages"] == fresh.manifest["stages"]
