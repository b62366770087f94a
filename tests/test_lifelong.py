"""Lifelong metrics (kedit.evaluate.lifelong): edit retention (GRACE's ERR) and upstream accuracy /
retention (TRR) on a hand-made sequence of checkpoint records, in every curve line of a sequential run
(checked against kedit.evaluate on the final state), `kedit bench --upstream`, and the report's curves."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import kedit
from kedit.cli import app
from kedit.evaluate.lifelong import lifelong_summary
from kedit.evaluate.runner import run_bench
from kedit.evaluate.survey import held_out_probe_case
from kedit.reports.report_writer import write_comparison_report
from kedit.runs import CURVE_FILE, RESULTS_FILE, read_lines
from tests.test_runner import CASES, HELD_OUT, make_case

pytestmark = pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")


def _record(reliability_pre: float, reliability_post: float, upstream: tuple[float, float] | None) -> dict:
    record = {"token": {"pre": {"reliability": reliability_pre}, "post": {"reliability": reliability_post}}}
    if upstream is not None:
        record["held_out"] = {"token": {"pre": upstream[0], "post": upstream[1]}, "probability": {"pre": 0.9, "post": 0.1}}
    return record


def test_lifelong_metrics_of_a_hand_made_sequence():
    # three checkpoints after 1, 2 and 3 edits; the upstream set's accuracy is 0.8 before editing
    sequence = {
        1: [_record(0.0, 1.0, (0.8, 0.8))],
        2: [_record(0.0, 1.0, (0.8, 0.7)), _record(0.5, 1.0, (0.8, 0.7))],
        3: [_record(0.0, 0.5, (0.8, 0.6)), _record(0.5, 1.0, (0.8, 0.6)), _record(0.0, 0.0, (0.8, 0.6))],
    }
    expected = {  # (ERR, perfectly recalled, TRR, TRR / TRR before, ERR before)
        1: (1.0, 1.0, 0.8, 1.0, 0.0),
        2: (1.0, 1.0, 0.7, 0.875, 0.25),
        3: (0.5, 1 / 3, 0.6, 0.75, 1 / 6),
    }
    for count, records in sequence.items():
        block = lifelong_summary(records)["lifelong"]
        post, pre = block["post"], block["pre"]
        err, rate, trr, retention, err_pre = expected[count]
        assert post["edit_retention"] == pytest.approx(err)
        assert post["edit_retention_rate"] == pytest.approx(rate)
        assert post["upstream_accuracy"] == pytest.approx(trr)
        assert post["upstream_retention"] == pytest.approx(retention)
        assert pre == {"edit_retention": pytest.approx(err_pre), "upstream_accuracy": 0.8}
        assert block["cases"] == count
    without = lifelong_summary([_record(0.0, 1.0, None)])["lifelong"]["post"]  # no upstream set
    assert without["upstream_accuracy"] is None and without["upstream_retention"] is None
    assert without["edit_retention"] == 1.0


def test_every_checkpoint_of_a_sequential_run_carries_the_lifelong_metrics(make_lm, tmp_path):
    lm = make_lm("llama")
    out = tmp_path / "run"
    summary = run_bench(lm, "test-shift", CASES[:4], mode="sequential:2", out_dir=out, held_out=HELD_OUT,
                        progress=False, restore=False)  # the edits stay: the final state is measured below
    curve = read_lines(out / CURVE_FILE)
    assert [line["n_edits"] for line in curve] == [2, 4]
    for line in curve:
        block, token = line["summary"]["lifelong"], line["summary"]["token"]
        assert block["post"]["edit_retention"] == pytest.approx(token["post"]["reliability"])
        assert block["cases"] == line["n_edits"]
        held = line["summary"]["survey"]  # drawdown on the upstream set = accuracy before − now
        assert block["pre"]["upstream_accuracy"] - block["post"]["upstream_accuracy"] == pytest.approx(
            held["drawdown_held_out"])
    # the final state, measured again from scratch: upstream accuracy = token accuracy of the true answers
    probes = [held_out_probe_case(case) for case in HELD_OUT]
    now = kedit.evaluate(lm, probes)
    accuracy = sum(record["token"]["pre"]["locality_accuracy"] for record in now) / len(now)
    assert curve[-1]["summary"]["lifelong"]["post"]["upstream_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert summary["lifelong"] == curve[-1]["summary"]["lifelong"]
    assert summary["lifelong"] == lifelong_summary(read_lines(out / RESULTS_FILE))["lifelong"]


def test_single_runs_have_no_lifelong_block(make_lm, tmp_path):
    summary = run_bench(make_lm("llama"), "test-shift", CASES[:2], out_dir=tmp_path / "run", progress=False)
    assert "lifelong" not in summary


def _cases_file(path, indices) -> str:
    path.write_text(json.dumps([make_case(i).to_dict() for i in indices]))
    return f"cases:{path}"


def test_bench_upstream_is_a_held_out_set_from_its_own_file(tiny_folder, tmp_path):
    runner = CliRunner()
    data = _cases_file(tmp_path / "edits.json", range(4))
    upstream = _cases_file(tmp_path / "upstream.json", [6, 7, 5])
    out = tmp_path / "run"
    args = ["bench", "--model", str(tiny_folder), "--method", "rome", "--data", data, "--n", "2",
            "--mode", "sequential:1", "--no-progress", "--set", "layer=1", "--set", "v_num_grad_steps=1",
            "--set", "mom2_adjustment=false", "--set", "context_template_length_params=[[3,1]]"]
    result = runner.invoke(app, [*args, "--upstream", upstream, "--upstream-n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "lifelong (token): edit retention" in result.output
    info = json.loads((out / "run.json").read_text())
    assert info["held_out"]["n"] == 2 and info["held_out"]["data"]["name"] == "cases"
    assert info["held_out"]["data"]["n"] == 2 and info["held_out"]["data"]["sha256"]
    lines = read_lines(out / CURVE_FILE)
    assert [line["n_edits"] for line in lines] == [1, 2]
    assert all(line["summary"]["lifelong"]["post"]["upstream_accuracy"] is not None for line in lines)
    both = runner.invoke(app, [*args, "--upstream", upstream, "--held-out", "1", "--out", str(tmp_path / "b")])
    assert both.exit_code != 0 and "--upstream and --held-out" in both.output
    overlapping = _cases_file(tmp_path / "overlap.json", [1, 6])  # case 1 is also edited
    refused = runner.invoke(app, [*args, "--upstream", overlapping, "--out", str(tmp_path / "c")])
    assert refused.exit_code != 0 and "holds 1 of the cases edited" in refused.output


def test_the_report_draws_the_lifelong_curves(make_lm, tmp_path):
    lm = make_lm("llama")
    run_bench(lm, "test-shift", CASES[:4], mode="sequential:1", out_dir=tmp_path / "run", held_out=HELD_OUT,
              progress=False)
    report = write_comparison_report([tmp_path / "run"], tmp_path / "report")
    assert "curves_lifelong.png" in {path.name for path in report.plots}
    page = report.markdown.read_text()
    assert "edit retention (ERR)" in page and "upstream accuracy (TRR)" in page
    assert "![Lifelong editing" in page
