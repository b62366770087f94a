"""Long-tail probing and editing: one-to-many best-over-objects scoring, demonstrations that never hold the
probed fact, aggregation per bin x cardinality with bootstrap intervals, the paper's locality, the cases the
runner edits, and both runs end to end on a tiny random model (numbers against direct score() calls)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from kedit.edits import WeightEdit
from kedit.evaluate.metrics import token_accuracy
from kedit.longtail.aggregate import ALL, CellSettings, cell, cells, path_value
from kedit.longtail.evaluate import (
    EDIT_METRICS,
    FACTS_FILE,
    edit_case,
    ike_pool,
    paper_locality,
    run_edit,
    select_cases,
)
from kedit.longtail.probe import (
    DEMONSTRATED,
    PLAIN,
    demonstration_prefix,
    demonstrations_for,
    plan_probe,
    run_probe,
    variant_scores,
)
from kedit.longtail.schema import Demonstration, LongTailCase, LongTailFact, write_jsonl
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.models.scoring import score
from kedit.reports.intervals import bootstrap
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.runs import RESULTS_FILE, read_lines

SMALL = CellSettings(resamples=500)


def make_case(subject: str, relation: str, objects: tuple[str, ...], count: int, cardinality: str,
              bin_label: str, question: str = "Where is {} found?") -> LongTailCase:
    request = EditRequest(question, subject, objects[0], extra_targets=objects[1:])
    case = Case(request, rephrases=(f"Name where {subject} is found.",),
                locality=(LocalityProbe("Where is the river Nile found?", "Africa"),),
                case_id=f"{relation}:{subject}:{objects[0]}")
    fact = LongTailFact(subject_id=subject, subject=subject, relation=relation, object_id=objects[0],
                        object=objects[0], objects=objects, object_ids=objects, cardinality=cardinality,
                        axis="subject-popularity", counts={"document": count}, bins={"document": bin_label})
    return LongTailCase(case, fact)


CASES = [
    make_case("Paris", "place", ("France",), 3, "one-to-one", "[0,10)"),
    make_case("Berlin", "place", ("Germany", "Europe", "Brandenburg", "Spree"), 50, "one-to-many", "[10,100)"),
    make_case("Rome", "place", ("Italy", "Europe"), 5000, "one-to-many", "[1000,inf)"),
]
DEMOS = {"place": [Demonstration("place", "Where is Madrid found?", "Spain"),
                   Demonstration("place", "Where is Paris found?", "France"),  # the probed fact itself
                   Demonstration("place", "Where is Lisbon found?", "Portugal")]}


def write_bench(folder: Path, cases=CASES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "cases.jsonl", [c.to_dict() for c in cases])
    write_jsonl(folder / "demonstrations.jsonl", [d.to_dict() for demos in DEMOS.values() for d in demos])
    (folder / "manifest.json").write_text(json.dumps({
        "axis": "subject-popularity", "levels": ["document"],
        "bins": {"edges": [10, 100, 1000], "labels": ["[0,10)", "[10,100)", "[100,1000)", "[1000,inf)"]}}))
    return folder


# -------------------------------------------------------------------------------------------- scoring


def test_best_over_objects_by_hand():
    # the own object scores 0, another valid object 1: the paper says wrong, the best says right
    scores = variant_scores(("Germany", "Europe", "Spree"), [0.0, 1.0, 0.5])
    assert scores == {"accuracy": 0.0, "best_accuracy": 1.0, "best_object": "Europe", "objects_scored": 3}
    tied = variant_scores(("a", "b", "c"), [0.5, 0.5, 0.25])  # a tie goes to the earlier (own) object
    assert tied["best_object"] == "a" and tied["best_accuracy"] == 0.5
    one = variant_scores(("France",), [2 / 3])
    assert one["accuracy"] == one["best_accuracy"] == 2 / 3


def test_demonstrations_never_include_the_probed_fact():
    paris = CASES[0]
    chosen = demonstrations_for(paris, DEMOS, k=5)
    assert [d.question for d in chosen] == ["Where is Madrid found?", "Where is Lisbon found?"]
    assert all(d.question != paris.case.request.text for d in chosen)
    assert demonstrations_for(CASES[1], DEMOS, k=2) == tuple(DEMOS["place"][:2])  # Berlin: nothing to drop
    assert demonstrations_for(paris, {}, k=5) == ()
    assert demonstration_prefix(chosen) == "Where is Madrid found?\nSpain\n\nWhere is Lisbon found?\nPortugal\n\n"
    plan = plan_probe(paris, DEMOS, k=5)
    assert plan.prompts[PLAIN] == "Where is Paris found?"
    assert plan.prompts[DEMONSTRATED] == demonstration_prefix(chosen) + "Where is Paris found?"
    assert "France" not in plan.prompts[DEMONSTRATED]  # the answer is not given away
    assert plan_probe(CASES[1], DEMOS, k=1, max_objects=2).objects == ("Germany", "Europe")


def test_probe_run_matches_direct_scores_and_resumes(make_lm, tmp_path):
    lm = make_lm("llama")
    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "probe"
    summary = run_probe(lm, bench, out, k=2, chunk=1, progress=False)
    records = read_lines(out / RESULTS_FILE)
    assert [r["case_id"] for r in records] == [c.case.case_id for c in CASES]
    for case, record in zip(CASES, records, strict=True):
        prefix = demonstration_prefix(demonstrations_for(case, DEMOS, 2))
        for variant, prompt in ((PLAIN, case.case.request.text), (DEMONSTRATED, prefix + case.case.request.text)):
            direct = [token_accuracy(s) for s in score(lm, [(prompt, obj) for obj in case.fact.objects])]
            assert record["probe"][variant]["accuracy"] == pytest.approx(direct[0])
            assert record["probe"][variant]["best_accuracy"] == pytest.approx(max(direct))
        assert record["probe"][DEMONSTRATED]["k"] == 2
        assert record["longtail"]["bins"] == dict(case.fact.bins)
    found = {(c["bin"], c["cardinality"], c["metric"]): c for c in summary["cells"]}
    assert found[("[100,1000)", ALL, "plain.accuracy")]["n"] == 0  # an empty bin stays, with no estimate
    assert found[("[100,1000)", ALL, "plain.accuracy")]["estimate"] is None
    assert found[("[0,10)", "one-to-one", "plain.accuracy")]["estimate"] == pytest.approx(
        records[0]["probe"][PLAIN]["accuracy"])
    # kill after the first chunk: resume scores only the rest, and the records are the same
    lines = (out / RESULTS_FILE).read_text().splitlines(keepends=True)
    (out / RESULTS_FILE).write_text(lines[0] + lines[1][:20])  # one whole line and a cut-off one
    again = run_probe(lm, bench, out, k=2, chunk=1, progress=False, resume=True)
    resumed = read_lines(out / RESULTS_FILE)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert again["cells"] == summary["cells"]
    with pytest.raises(Exception, match="different"):
        run_probe(lm, bench, out, k=1, progress=False, resume=True)


# ---------------------------------------------------------------------------------------- aggregation


def record(bin_label: str, cardinality: str, value: float | None) -> dict:
    return {"longtail": {"bins": {"document": bin_label}, "cardinality": cardinality}, "probe": {"v": value}}


def test_cells_per_bin_and_cardinality_by_hand():
    records = [record("[0,10)", "one-to-one", 0.0), record("[0,10)", "one-to-one", 1.0),
               record("[0,10)", "one-to-many", 0.5), record("[0,10)", "one-to-many", 0.5),
               record("[10,100)", "one-to-many", 1.0), record("[10,100)", "one-to-many", None)]
    found = {(c.bin, c.cardinality): c for c in cells(records, {"v": path_value("probe", "v")}, "document",
                                                     ["[0,10)", "[10,100)", "[100,1000)"], settings=SMALL)}
    low_all = found[("[0,10)", ALL)]
    assert (low_all.n, low_all.estimate) == (4, 0.5)
    expected = bootstrap([0.0, 1.0, 0.5, 0.5], resamples=500)  # the same resampling, in file order
    assert (low_all.low, low_all.high) == (expected.low, expected.high)
    assert 0.0 <= low_all.low < 0.5 < low_all.high <= 1.0
    same = found[("[0,10)", "one-to-many")]
    assert (same.n, same.estimate, same.low, same.high) == (2, 0.5, 0.5, 0.5)  # no spread, no width
    assert found[("[0,10)", "one-to-one")].estimate == 0.5
    assert found[("[10,100)", ALL)].n == 1  # the record without the value is left out
    empty = found[("[100,1000)", ALL)]
    assert empty.empty and empty.estimate is None and empty.describe() == "empty"
    assert found[("[10,100)", "one-to-one")].describe() == "empty"
    assert same.describe() == "0.50 [0.50, 0.50]"
    assert cell(records, path_value("probe", "v"), "v", "sentence", "[0,10)", ALL).empty  # no such level


def test_paper_locality_compares_accuracies():
    def rec(pre, post):
        return {"token": {"pre": {"locality_accuracy": pre}, "post": {"locality_accuracy": post, "locality": 0.5}}}

    assert paper_locality(rec(0.5, 0.5)) == 1.0
    assert paper_locality(rec(0.5, 0.25)) == 0.0
    assert paper_locality({"token": {"pre": {}}}) is None
    assert EDIT_METRICS["post.locality"](rec(0.5, 0.5)) == 0.5  # kedit's agreement, kept beside it


# ---------------------------------------------------------------------------------------------- edits


def test_cases_for_the_runner():
    many = CASES[1]
    edited = edit_case(many, max_labels=3)
    assert edited.request.target_new == "Germany"
    assert edited.request.extra_targets == ("Europe", "Brandenburg")  # the own object plus 2 others
    assert [(p.answer, p.kind) for p in edited.portability] == [("Europe", "other-object"), ("Brandenburg", "other-object")]
    assert edit_case(CASES[0], max_labels=3).portability == ()
    assert edit_case(many, max_labels=1).request.extra_targets == ()
    chosen = select_cases(CASES + [make_case("Bonn", "place", ("Germany", "Europe"), 60, "one-to-many", "[10,100)")],
                          per_cell=1)
    assert [c.fact.subject for c in chosen] == ["Paris", "Berlin", "Rome"]  # Bonn: its cell already has one
    assert [c.fact.subject for c in select_cases(CASES, cardinality="one-to-many")] == ["Berlin", "Rome"]
    pool = ike_pool(DEMOS)
    assert [c.request.text for c in pool] == [d.question for d in DEMOS["place"]]
    assert all(c.request.target_new == d.answer for c, d in zip(pool, DEMOS["place"], strict=True))


@dataclass(frozen=True)
class NoChangeHparams:
    layer: int = 0


SEEN: list[EditRequest] = []


@register("test-longtail-nochange")
class NoChange:
    """Edits nothing (zero deltas) and remembers the requests: post must equal pre, locality be perfect."""

    summary: ClassVar[str] = "test method for the long-tail edit run"
    hparams_class: ClassVar[type] = NoChangeHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(self, lm, user_file=None, overrides=None) -> NoChangeHparams:
        return build_hparams(NoChangeHparams, lm, None, user_file, overrides)

    def compute(self, lm, requests, hparams: NoChangeHparams) -> WeightEdit:
        SEEN.extend(requests)
        name = lm.anatomy.mlp_out_weight(hparams.layer)
        return WeightEdit(method="test-longtail-nochange", requests=tuple(requests), hparams=asdict(hparams),
                          deltas={name: torch.zeros_like(lm.parameter(name))}, base_fingerprint=lm.fingerprint)


def test_edit_run_joins_facts_and_aggregates(make_lm, tmp_path):
    lm = make_lm("llama")
    bench = write_bench(tmp_path / "bench")
    SEEN.clear()
    summary = run_edit(lm, bench, "test-longtail-nochange", tmp_path / "edit", max_labels=2, progress=False)
    assert [r.extra_targets for r in SEEN] == [(), ("Europe",), ("Europe",)]
    records = read_lines(tmp_path / "edit" / RESULTS_FILE)
    facts = {f["case_id"]: f["longtail"] for f in read_lines(tmp_path / "edit" / FACTS_FILE)}
    assert set(facts) == {c.case.case_id for c in CASES}
    assert facts["place:Berlin:Germany"]["labels"] == 2
    for case, rec in zip(CASES, records, strict=True):
        direct = token_accuracy(score(lm, [(case.case.request.text, case.fact.object)])[0])
        assert rec["token"]["pre"]["reliability"] == pytest.approx(direct)
        assert rec["token"]["post"]["reliability"] == rec["token"]["pre"]["reliability"]  # nothing was edited
        assert rec["token"]["post"]["locality"] == 1.0 and paper_locality(rec) == 1.0
    berlin = records[1]["token"]["post"]["portability.other-object"]
    assert berlin == pytest.approx(token_accuracy(score(lm, [("Where is Berlin found?", "Europe")])[0]))
    found = {(c["bin"], c["cardinality"], c["metric"]): c for c in summary["cells"]}
    assert found[("[10,100)", "one-to-many", "post.locality_paper")]["estimate"] == 1.0
    assert found[("[100,1000)", ALL, "post.reliability")]["n"] == 0
    assert summary["cases_per_bin"]["document"] == {"[0,10)": 1, "[10,100)": 1, "[100,1000)": 0, "[1000,inf)": 1}
    assert np.isclose(found[("[0,10)", ALL, "pre.reliability")]["estimate"], records[0]["token"]["pre"]["reliability"])
