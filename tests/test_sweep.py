"""Sweeps without Ray: the file format, checks before any work, stable names, shards merged bit for
bit, the local process pool with resume, status and the report of a sweep directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kedit.cli import app
from kedit.evaluate.runner import run_bench
from kedit.runs import RESULTS_FILE, SUMMARY_FILE, read_lines
from kedit.sweep.merge import merge_shards
from kedit.sweep.naming import run_identity, run_name
from kedit.sweep.plan import make_plan, shard_spans
from kedit.sweep.settings import RunSettings, SweepError
from kedit.sweep.values import ValueShapeError, axis_values, dimension
from tests.test_runner import make_case

runner = CliRunner()
FAST_ROME = {"layer": 1, "v_num_grad_steps": 2, "context_template_length_params": [[3, 1]], "mom2_adjustment": False}
FAST_FT = {"layers": [1], "num_steps": 2}


@pytest.fixture
def cases_file(tmp_path) -> Path:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([make_case(index % 8).to_dict() | {"case_id": f"c{index}"} for index in range(12)]))
    return path


def write_sweep(folder: Path, document: dict, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def small_sweep(model: Path, data: Path) -> dict:
    return {"name": "small", "shared": {"model": str(model), "data": f"cases:{data}", "n": 4, "eval_batch": 2},
            "methods": {"rome": {"set": FAST_ROME}, "ft-l": {"set": FAST_FT}},
            "grid": {"method": ["rome", "ft-l"]},
            "runs": [{"method": "rome", "n": 8, "shards": 2}]}


# ------------------------------------------------------------------------------------------ values


def test_ranges_expand_inclusively_and_log_ranges_are_evenly_spaced_in_log():
    assert axis_values({"from": 2, "to": 8, "step": 3}) == [2, 5, 8]
    assert axis_values({"from": 0.1, "to": 0.3, "step": 0.1}) == [0.1, 0.2, 0.3]  # no 0.30000000000000004
    assert axis_values({"from": 1e-3, "to": 1e-1, "num": 3, "log": True}) == [0.001, 0.01, 0.1]
    assert axis_values([[4], [4, 5]]) == [[4], [4, 5]]  # a list-valued hyperparameter's values
    searched = dimension("eps", {"from": 5e-4, "to": 2e-2, "log": True})
    assert searched.continuous and searched.log and searched.bounds() == (5e-4, 2e-2)
    assert dimension("layer", {"from": 2, "to": 6}).integer
    with pytest.raises(ValueShapeError, match="'to'"):
        axis_values({"from": 3, "to": 1, "step": 1})


def test_shards_are_cut_at_eval_batch_chunks():
    assert shard_spans(10, 3, 2) == ((0, 4), (4, 8), (8, 10))
    assert shard_spans(50, 2, 64) == ((0, 50),)  # one chunk: cutting it would change the unedited scores
    assert shard_spans(8, 2, 4) == ((0, 4), (4, 8))


# ------------------------------------------------------------------------------------------- names


def test_plan_names_are_stable(tiny_folder, cases_file, tmp_path):
    settings = RunSettings(method="rome", data="counterfact-easyedit:/data/cf.json", model="smollm2-135m", n=50,
                           overrides=(("layer", 4),))
    name = run_name(settings, run_identity(settings, "ab" * 32, None))
    assert name == "rome-smollm2-135m-counterfact-easyedit-single-n50-layer=4-45599a6ace"  # must never change
    # the device is not part of the name (a run may be resumed on another device); every setting is
    assert run_name(RunSettings(**{**settings.__dict__, "device": "cuda"}), run_identity(settings, "ab" * 32, None)) == name
    other = RunSettings(**{**settings.__dict__, "n": 51})
    assert run_name(other, run_identity(other, "ab" * 32, None)) != name

    first = make_plan(write_sweep(tmp_path, small_sweep(tiny_folder, cases_file)))
    again = make_plan(write_sweep(tmp_path, small_sweep(tiny_folder, cases_file), "again.yaml"))
    # the same data file elsewhere, read through a relative path from another working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(cases_file, elsewhere / "copied.json")
    moved = small_sweep(tiny_folder, Path("copied.json"))
    third = make_plan(write_sweep(elsewhere, moved), base=elsewhere)
    names = [run.name for run in first.runs]
    assert names == [run.name for run in again.runs] == [run.name for run in third.runs]
    assert len(set(names)) == 3 and names[0].startswith("rome-tiny-llama") and names[1].startswith("ft-l-")
    assert [len(run.spans) for run in first.runs] == [1, 1, 2]


# ------------------------------------------------------------------------------- checks before work

BAD = [
    ({"grid": {"method": ["rome", "romee"]}}, "grid point 1 (method=romee): method: unknown method 'romee'"),
    ({"runs": [{"method": "rome", "data": "counterfakt:{data}"}]}, "runs[0] (rome): data: unknown dataset 'counterfakt'"),
    ({"runs": [{"method": "rome", "set": {"lyer": 3}}]}, "runs[0] (rome): set: unknown hyperparameter 'lyer'"),
    ({"runs": [{"method": "rome", "set": {"v_lr": "fast"}}]}, "runs[0] (rome): set: hyperparameter v_lr"),
    ({"runs": [{"method": "rome", "mode": "batches:2"}]}, "runs[0] (rome): mode: unknown mode 'batches:2'"),
    ({"runs": [{"method": "rome", "nn": 3}]}, "runs[0] (rome): unknown field 'nn' (did you mean 'n'?)"),
    ({"runs": [{"method": "rome", "n": 0}]}, "runs[0] (rome): n must be a whole number >= 1"),
    ({"runs": [{"method": "rome", "n": 99}]}, "gives 12 case(s), fewer than n = 99"),
    ({"runs": [{"method": "rome", "mode": "sequential", "shards": 2}]}, "shards: only single-mode runs"),
    ({"grid": {"method": "rome"}}, "grid.method: expected a list of values or a range"),
    ({"runs": [{"method": "rome", "data": "cases:{data}.missing"}]}, "does not exist"),
    ({"search": {"method": "ft-l", "space": {"norm_constraint": {"from": 1e-3, "to": "x"}}}},
     "search.space.norm_constraint: 'to' must be a number"),
    ({"search": {"method": "ft-l", "space": {"norm_constraint": {"from": -1, "to": 1}}}},
     "search.space.norm_constraint: hyperparameter norm_constraint"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_a_bad_sweep_file_fails_before_any_work_with_one_line_naming_run_and_field(tiny_folder, cases_file,
                                                                                      tmp_path, extra, message):
    document = {"shared": {"model": str(tiny_folder), "data": f"cases:{cases_file}", "n": 2}} | json.loads(
        json.dumps(extra).replace("{data}", str(cases_file)))
    sweep = write_sweep(tmp_path, document)
    with pytest.raises(SweepError) as caught:
        make_plan(sweep)
    assert message in str(caught.value) and str(sweep) in str(caught.value) and "\n" not in str(caught.value)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", "run", str(sweep), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "error:" in result.output
    assert not out.exists()  # nothing was started


# ---------------------------------------------------------------------------------------- merging


def test_shards_merge_into_the_unsharded_run_bit_for_bit_in_case_order(make_lm, tmp_path):
    lm = make_lm("llama")
    cases = [make_case(index) for index in range(6)]
    common = {"mode": "single", "overrides": {"scale": 0.5}, "progress": False, "eval_batch": 2}
    run_bench(lm, "test-shift", cases, out_dir=tmp_path / "whole", **common)
    spans = ((0, 2), (2, 6))
    folders = [tmp_path / "shards" / str(k) for k in range(2)]
    for folder, (start, stop) in zip(reversed(folders), reversed(spans), strict=True):  # finished out of order
        run_bench(lm, "test-shift", cases[start:stop], out_dir=folder, **common)
    target = tmp_path / "runs" / "merged"
    summary = merge_shards(target, folders, spans, cases, "kedit sweep run ...")

    def comparable(path):
        return [{k: v for k, v in record.items() if k not in ("seconds",)} for record in read_lines(path)]

    assert comparable(target / RESULTS_FILE) == comparable(tmp_path / "whole" / RESULTS_FILE)
    whole_info = json.loads((tmp_path / "whole" / "run.json").read_text())
    merged_info = json.loads((target / "run.json").read_text())
    assert merged_info["data"]["cases_sha256"] == whole_info["data"]["cases_sha256"]
    assert [shard["cases"] for shard in merged_info["shards"]] == [[0, 2], [2, 6]]
    whole_summary = json.loads((tmp_path / "whole" / SUMMARY_FILE).read_text())
    assert summary["probability"] == whole_summary["probability"] and summary["token"] == whole_summary["token"]

    # a case measured twice, or a record of another case, is refused rather than merged
    records = read_lines(folders[1] / RESULTS_FILE)
    with open(folders[1] / RESULTS_FILE, "a") as handle:
        handle.write(json.dumps(records[0]) + "\n")
    with pytest.raises(SweepError, match="measured twice"):
        merge_shards(tmp_path / "runs" / "again", folders, spans, cases, None)
    with pytest.raises(SweepError, match="another case"):
        merge_shards(tmp_path / "runs" / "again", folders, spans, [make_case(7)] + cases[1:], None)


# ------------------------------------------------------------------------------ the local pool (CLI)

@pytest.mark.slow
def test_local_pool_runs_the_plan_resumes_and_reports(tiny_folder, cases_file, tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path, small_sweep(tiny_folder, cases_file))
    out = tmp_path / "sweep"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the pool's processes inherit it (and KEDIT_HOME)
    command = ["sweep", "run", str(sweep), "--out", str(out), "--workers", "2", "--no-progress"]
    done = runner.invoke(app, command)
    assert done.exit_code == 0, done.output
    plan = make_plan(sweep)
    for run in plan.runs:
        keys = [record["key"] for record in read_lines(out / "runs" / run.name / RESULTS_FILE)]
        assert [int(key.split(":")[0]) for key in keys] == list(range(run.settings.n))
    sharded = json.loads((out / "runs" / plan.runs[2].name / "run.json").read_text())
    assert sharded["command"].endswith(f"--only {plan.runs[2].name}") and len(sharded["shards"]) == 2

    again = runner.invoke(app, [*command, "--resume"])
    assert again.exit_code == 0 and "3 of 3 run(s) finished (3 before this session)" in again.output
    refused = runner.invoke(app, command)
    assert refused.exit_code == 2 and "--resume" in refused.output

    status = runner.invoke(app, ["sweep", "status", str(out)])
    assert status.exit_code == 0 and status.output.count("│ done ") == 3 and "4/4" in status.output
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "read 3 of 3 run(s)" in report.output and "## Sweep: small" in page and "```yaml" in page
    assert all(run.name in page for run in plan.runs)
