"""Sweeps on Ray, on a local instance started here with two CPUs (one for the whole module: Ray's
start-up is slow): a 6-run sweep and its report, a worker killed mid-run and the sweep resumed
(every case measured exactly once), and a Ray Tune search whose best configuration --hparams reads."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kedit.cli import app
from kedit.runs import RESULTS_FILE, RUN_FILE, SUMMARY_FILE, read_lines
from kedit.sweep.drive import run_plan
from kedit.sweep.layout import SweepLayout
from kedit.sweep.plan import make_plan
from tests.requirements import require
from tests.test_runner import make_case
from tests.test_sweep import FAST_FT, FAST_ROME, write_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory):
    """The module's Ray instance; its workers share this cache folder and use one thread each."""
    require(importlib.util.find_spec("ray") is not None, "Ray (pip install 'kedit[ray]')")
    import ray

    home = tmp_path_factory.mktemp("ray-kedit-home")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"KEDIT_HOME": str(home), "OMP_NUM_THREADS": "1"}})
    yield home
    ray.shutdown()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-data") / "cases.json"
    path.write_text(json.dumps([make_case(index % 8).to_dict() | {"case_id": f"c{index}"} for index in range(16)]))
    return path


def ray_executor(retries: int = 0):
    from kedit.sweep.ray_pool import RayPool

    return lambda: RayPool("auto", 1.0, 0.0, retries)


def test_six_runs_complete_on_ray_and_the_report_lists_them(ray_home, tiny_folder, data_file, tmp_path):
    sweep = write_sweep(tmp_path, {
        "name": "six", "shared": {"model": str(tiny_folder), "data": f"cases:{data_file}", "eval_batch": 2},
        "methods": {"rome": {"set": FAST_ROME}, "ft-l": {"set": FAST_FT}},
        "grid": {"method": ["rome", "ft-l"], "n": [2, 3, 4]}})
    plan = make_plan(sweep)
    outcome = run_plan(plan, tmp_path / "out", ray_executor(), progress=False, log=lambda line: None)
    assert not outcome.failures and len(outcome.finished) == 6
    for run in plan.runs:
        assert len(read_lines(tmp_path / "out" / "runs" / run.name / RESULTS_FILE)) == run.settings.n
    result = CliRunner().invoke(app, ["report", str(tmp_path / "out"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "read 6 of 6 run(s)" in result.output and "# kedit report: 6 run(s)" in page
    assert all(f"`{run.name}`" in page for run in plan.runs) and "## Sweep: six" in page


def _wait_for_worker(layout: SweepLayout, name: str, shard: int) -> int:
    """The pid of the worker running ``shard`` once it has written a record (and is still at it)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status_file = layout.status_file(name, shard)
        results = layout.shard_dir(name, shard) / RESULTS_FILE
        if status_file.is_file() and results.is_file() and results.read_bytes().count(b"\n") >= 1:
            status = json.loads(status_file.read_text())
            assert status["state"] == "running", "the shard finished before it could be killed"
            return int(status["pid"])
        time.sleep(0.02)
    raise AssertionError("the shard wrote no record within 240 s")


def test_a_killed_worker_then_resume_measures_every_case_exactly_once(ray_home, tiny_folder, data_file, tmp_path):
    slow_rome = FAST_ROME | {"v_num_grad_steps": 25}  # long enough per case to be killed part way
    sweep = write_sweep(tmp_path, {
        "shared": {"model": str(tiny_folder), "data": f"cases:{data_file}", "eval_batch": 2},
        "runs": [{"method": "rome", "n": 16, "shards": 2, "set": slow_rome}]})
    plan = make_plan(sweep)
    (run,) = plan.runs
    layout = SweepLayout(tmp_path / "out")
    outcomes = []
    driver = threading.Thread(target=lambda: outcomes.append(
        run_plan(plan, layout.root, ray_executor(retries=0), progress=False, log=lambda line: None)))
    driver.start()
    os.kill(_wait_for_worker(layout, run.name, 1), signal.SIGKILL)
    driver.join(300)
    (outcome,) = outcomes
    assert [failure.task for failure in outcome.failures] == [f"{run.name}.shard1"] and outcome.failures[0].crashed
    killed = layout.shard_dir(run.name, 1)
    assert not (killed / SUMMARY_FILE).exists() and 1 <= len(read_lines(killed / RESULTS_FILE)) < 8

    resumed = run_plan(plan, layout.root, ray_executor(), resume=True, progress=False, log=lambda line: None)
    assert not resumed.failures and resumed.finished == (run.name,)
    keys = [record["key"] for record in read_lines(layout.run_dir(run.name) / RESULTS_FILE)]
    assert [int(key.split(":")[0]) for key in keys] == list(range(16)) and len(set(keys)) == 16
    shard_keys = [record["key"] for record in read_lines(killed / RESULTS_FILE)]
    assert len(shard_keys) == len(set(shard_keys)) == 8
    assert len(json.loads((killed / RUN_FILE).read_text())["sessions"]) == 2  # the run resumed, not restarted


def test_a_tune_search_writes_the_best_configuration_for_hparams(ray_home, tiny_folder, data_file, tmp_path):
    from kedit.methods import get_method
    from kedit.sweep.search import run_search

    sweep = write_sweep(tmp_path, {
        "shared": {"model": str(tiny_folder), "eval_batch": 2},
        "search": {"method": "ft-l", "data": f"cases:{data_file}", "n": 4, "set": FAST_FT,
                   "space": {"norm_constraint": {"from": 1e-4, "to": 1e-1, "log": True}},
                   "samples": 2, "report_every": 2, "scheduler": "fifo"}})
    best = run_search(make_plan(sweep), tmp_path / "out", "auto", cpus=1, gpus=0, resume=False, command=None,
                      threads=1, log=lambda line: None, progress=False)
    search = json.loads((tmp_path / "out" / "search.json").read_text())
    assert len(search["trials"]) == 2 and all(trial["finished"] and trial["cases"] == 4 for trial in search["trials"])
    assert best.value == max(trial["S"] for trial in search["trials"])
    summary = json.loads((tmp_path / "out" / "runs" / best.trial / SUMMARY_FILE).read_text())
    assert summary["probability"]["post"]["score_s"] == pytest.approx(best.value, abs=0)
    hparams = get_method("ft-l").default_hparams(None, best.file, {})
    assert hparams.norm_constraint == best.values["norm_constraint"] and hparams.num_steps == 2
    assert yaml.safe_load(best.file.read_text())["norm_constraint"] == best.values["norm_constraint"]


def test_a_space_of_lists_is_searched_exhaustively_and_rounded_samples_are_one_trial(tiny_folder, data_file, tmp_path):
    require(importlib.util.find_spec("ray") is not None, "Ray (pip install 'kedit[ray]')")
    from kedit.sweep.search import _space, exhaustive, trial_for

    def planned(space):
        return make_plan(write_sweep(tmp_path, {"shared": {"model": str(tiny_folder)}, "search": {
            "method": "ft-l", "data": f"cases:{data_file}", "n": 4, "space": space}})).search

    listed = planned({"norm_constraint": [1e-3, 1e-2]})
    assert exhaustive(listed) and _space(listed) == {"norm_constraint": {"grid_search": [0.001, 0.01]}}
    sampled = planned({"norm_constraint": {"from": 1e-4, "to": 1e-1, "log": True}})
    assert not exhaustive(sampled)
    first, second = trial_for(sampled, {"norm_constraint": 0.0073154}), trial_for(sampled, {"norm_constraint": 0.007318})
    assert first.values == second.values == {"norm_constraint": 0.00732} and first.name == second.name
    assert first.spans == ((0, 1), (1, 2), (2, 3), (3, 4))  # report_every defaults to n // 5, at least 1
