"""The resumable benchmark runner: crash + resume gives the uninterrupted run's numbers bit for bit,
resuming with other settings is refused, sequential runs replay their stored edits, batch records
equal evaluate() on the same edit, and the run directory reads back as a report run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import ClassVar

import pytest
import torch

import kedit
from kedit.edits import WeightEdit
from kedit.evaluate import runner as runner_module
from kedit.evaluate.runner import parse_mode, run_bench
from kedit.evaluate.survey import held_out_probe_case
from kedit.methods import load_edit
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.reports.runs import read_run
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.runs import CURVE_FILE, RESULTS_FILE, RUN_FILE, SUMMARY_FILE, ResumeError, read_lines
from tests.tiny_models import build_model

FACTS = [
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French", "Danielle Darrieux speaks"),
    ("{} plays the sport of", "Michael Jordan", "football", "basketball", "Michael Jordan is a player of"),
    ("The Eiffel Tower is located in the city of {}", "Paris", "Rome", "Paris", "The Eiffel Tower stands in"),
    ("{} is the capital of", "Berlin", "Italy", "Germany", "Berlin is a city in"),
    ("The official language of {} is", "Brazil", "Spanish", "Portuguese", "People in Brazil speak"),
    ("{} is a river in", "The Nile", "Europe", "Africa", "The Nile flows through"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar", "Toko Yasuda is known for the"),
    ("{} wrote plays in", "William Shakespeare", "German", "English", "Shakespeare's plays are in"),
]


def make_case(index: int) -> Case:
    prompt, subject, new, true, rephrase = FACTS[index]
    neighbour = FACTS[(index + 1) % len(FACTS)]
    return Case(
        request=EditRequest(prompt, subject, new, target_true=true),
        rephrases=(rephrase,),
        locality=(LocalityProbe(neighbour[0].replace("{}", neighbour[1]), neighbour[3]),),
        case_id=f"c{index}",
    )


CASES = [make_case(index) for index in range(6)]
HELD_OUT = [make_case(6), make_case(7)]


@dataclass(frozen=True)
class ShiftHparams:
    layer: int = 1
    scale: float = 0.5


@register("test-shift")
class Shift:
    """A cheap deterministic method: a random rank-one delta per request, seeded by the request and
    scaled by the current weights, so an edit computed on another model state comes out different."""

    summary: ClassVar[str] = "test method for the runner"
    hparams_class: ClassVar[type] = ShiftHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(self, lm, user_file=None, overrides=None) -> ShiftHparams:
        return build_hparams(ShiftHparams, lm, None, user_file, overrides)

    def compute(self, lm, requests, hparams: ShiftHparams) -> WeightEdit:
        name = lm.anatomy.mlp_out_weight(hparams.layer)
        weight = lm.parameter(name).detach()
        total = torch.zeros_like(weight)
        for request in requests:
            seed = int(hashlib.sha256(f"{request.text}|{request.target_new}".encode()).hexdigest()[:8], 16)
            generator = torch.Generator().manual_seed(seed)
            left = torch.randn(weight.shape[0], generator=generator)
            right = torch.randn(weight.shape[1], generator=generator)
            total += hparams.scale * weight.abs().mean() * torch.outer(left, right)
        return WeightEdit(method="test-shift", requests=tuple(requests), hparams=asdict(hparams),
                          deltas={name: total}, base_fingerprint=lm.fingerprint, info={"layer": hparams.layer})


REAL_COMPUTE = Shift.compute


class Crash(RuntimeError):
    pass


def crash_after(monkeypatch, calls: int) -> list[int]:
    """Make Shift.compute raise on call number ``calls + 1``; returns the call counter."""
    counter = [0]

    def compute(self, lm, requests, hparams):
        counter[0] += 1
        if counter[0] > calls:
            raise Crash(f"simulated crash at compute call {counter[0]}")
        return REAL_COMPUTE(self, lm, requests, hparams)

    monkeypatch.setattr(Shift, "compute", compute)
    return counter


def count_calls(monkeypatch) -> list[int]:
    return crash_after(monkeypatch, 10**9)


def comparable(records: list[dict]) -> list[dict]:
    """Records without wall-clock timings (everything else must match bit for bit)."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def snapshot(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def assert_same_weights(lm, expected: dict[str, torch.Tensor]) -> None:
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


RUN = {"progress": False, "eval_batch": 4}


def test_parse_mode():
    assert parse_mode("single").spec == "single"
    assert parse_mode("batch:100").unit == 100
    assert parse_mode("sequential").eval_every == 10 and parse_mode("sequential:3").eval_every == 3
    assert parse_mode("sequential:3").checkpoints(10) == {3, 6, 9, 10}
    assert parse_mode("sequential:log").spec == "sequential:log"
    assert parse_mode("sequential:log").checkpoints(100) == {1, 2, 5, 10, 20, 50, 100}
    assert parse_mode("sequential:log").checkpoints(1000) == {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
    assert parse_mode("sequential:log").checkpoints(30) == {1, 2, 5, 10, 20, 30}
    grouped = parse_mode("sequential:log:100")
    assert (grouped.unit, grouped.eval_every, grouped.spec) == (100, 0, "sequential:log:100")
    assert parse_mode("sequential:4:2").unit == 2 and parse_mode("sequential:4:2").eval_every == 4
    for bad in ("batch", "batch:0", "sequential:x", "parallel", "single:2", "sequential:log:0", "sequential:2:x"):
        with pytest.raises(kedit.KeditError, match="mode"):
            parse_mode(bad)


@pytest.mark.parametrize("mode", ["single", "batch:2"])
def test_resume_after_crash_gives_the_uninterrupted_records(make_lm, tmp_path, monkeypatch, mode):
    lm = make_lm("llama")
    original = snapshot(lm)
    whole = run_bench(lm, "test-shift", CASES, mode=mode, out_dir=tmp_path / "whole", held_out=HELD_OUT, **RUN)
    expected = read_lines(tmp_path / "whole" / RESULTS_FILE)
    assert_same_weights(lm, original)

    # crash while computing the 4th edit (single) / the 3rd chunk (batch:2): 3 resp. 4 records on disk
    crash_after(monkeypatch, 3 if mode == "single" else 2)
    with pytest.raises(Crash):
        run_bench(lm, "test-shift", CASES, mode=mode, out_dir=tmp_path / "crashed", held_out=HELD_OUT, **RUN)
    assert_same_weights(lm, original)
    results = tmp_path / "crashed" / RESULTS_FILE
    finished = 3 if mode == "single" else 4
    assert len(read_lines(results)) == finished and not (tmp_path / "crashed" / SUMMARY_FILE).exists()
    with open(results, "a") as handle:  # a record cut short by the kill
        handle.write('{"index": 3, "key": "3:abc", "token": {"pr')

    counter = count_calls(monkeypatch)
    summary = run_bench(lm, "test-shift", CASES, mode=mode, out_dir=tmp_path / "crashed", resume=True,
                        held_out=HELD_OUT, **RUN)
    resumed = read_lines(results)
    assert [r["key"] for r in resumed] == [r["key"] for r in expected]  # every case once, in order
    assert comparable(resumed) == comparable(expected)
    assert counter[0] == (3 if mode == "single" else 1)
    assert results.read_text().endswith("\n")
    for key in ("token", "probability", "survey", "survey_probability"):
        assert summary[key] == whole[key]
    assert summary["cases"] == 6 and summary["cases_this_session"] == 6 - finished
    assert_same_weights(lm, original)


def test_resume_recomputes_a_half_written_batch_and_writes_only_its_missing_records(make_lm, tmp_path, monkeypatch):
    lm = make_lm("llama")
    run_bench(lm, "test-shift", CASES, mode="batch:3", out_dir=tmp_path / "whole", **RUN)
    expected = read_lines(tmp_path / "whole" / RESULTS_FILE)
    # a kill in the middle of writing the second chunk: its first record made it, the second in part
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(tmp_path / "whole" / RUN_FILE, crashed / RUN_FILE)
    lines = (tmp_path / "whole" / RESULTS_FILE).read_text().splitlines(keepends=True)
    (crashed / RESULTS_FILE).write_text("".join(lines[:4]) + lines[4][:30])
    counter = count_calls(monkeypatch)
    run_bench(lm, "test-shift", CASES, mode="batch:3", out_dir=crashed, resume=True, **RUN)
    assert counter[0] == 1  # the second chunk, edited as a whole again
    assert comparable(read_lines(crashed / RESULTS_FILE)) == comparable(expected)


def test_resume_with_other_settings_is_refused(make_lm, tmp_path):
    lm = make_lm("llama")
    out = tmp_path / "run"
    run_bench(lm, "test-shift", CASES[:2], out_dir=out, **RUN)
    with pytest.raises(ResumeError, match=r"hyperparameters \(scale: 0.5 -> 0.7\)"):
        run_bench(lm, "test-shift", CASES[:2], out_dir=out, resume=True, overrides={"scale": 0.7}, **RUN)
    with pytest.raises(ResumeError, match="mode"):
        run_bench(lm, "test-shift", CASES[:2], out_dir=out, resume=True, mode="batch:2", **RUN)
    with pytest.raises(ResumeError, match="data digest"):
        run_bench(lm, "test-shift", CASES[:3], out_dir=out, resume=True, **RUN)
    with pytest.raises(ResumeError, match="model fingerprint"):
        run_bench(make_lm("llama", seed=1), "test-shift", CASES[:2], out_dir=out, resume=True, **RUN)
    with pytest.raises(ResumeError, match="--resume"):
        run_bench(lm, "test-shift", CASES[:2], out_dir=out, **RUN)
    # the same settings resume fine (nothing left to do) and rewrite the summary
    summary = run_bench(lm, "test-shift", CASES[:2], out_dir=out, resume=True, **RUN)
    assert summary["cases"] == 2 and summary["cases_this_session"] == 0


def test_sequential_resume_replays_the_stored_edits(make_lm, tmp_path, monkeypatch):
    whole_lm = make_lm("llama")
    run_bench(whole_lm, "test-shift", CASES, mode="sequential:2", out_dir=tmp_path / "whole", restore=False,
              held_out=HELD_OUT, **RUN)
    expected_weights = snapshot(whole_lm)

    lm = make_lm("llama")
    original = snapshot(lm)
    assert any(not torch.equal(original[k], expected_weights[k]) for k in original)
    crash_after(monkeypatch, 4)  # edits 0-3 saved, checkpoints 2 and 4 written, crash computing edit 4
    with pytest.raises(Crash):
        run_bench(lm, "test-shift", CASES, mode="sequential:2", out_dir=tmp_path / "crashed", held_out=HELD_OUT,
                  **RUN)
    assert_same_weights(lm, original)  # restored after the crash
    crashed = tmp_path / "crashed"
    assert sorted(p.name for p in (crashed / "edits").iterdir()) == ["00000", "00001", "00002", "00003"]
    # as if killed after saving edit 4 but before its checkpoint line was complete
    curve_lines = (crashed / CURVE_FILE).read_text().splitlines(keepends=True)
    assert [json.loads(line)["n_edits"] for line in curve_lines] == [2, 4]
    (crashed / CURVE_FILE).write_text(curve_lines[0] + curve_lines[1][:25])

    counter = count_calls(monkeypatch)
    run_bench(lm, "test-shift", CASES, mode="sequential:2", out_dir=crashed, resume=True, restore=False,
              held_out=HELD_OUT, **RUN)
    assert counter[0] == 2  # edits 4 and 5 only; 0-3 were replayed from disk
    assert_same_weights(lm, expected_weights)
    assert comparable(read_lines(crashed / RESULTS_FILE)) == comparable(read_lines(tmp_path / "whole" / RESULTS_FILE))
    assert read_lines(crashed / CURVE_FILE) == read_lines(tmp_path / "whole" / CURVE_FILE)

    run = read_run(crashed)
    assert run.kind == "bench" and run.mode == "sequential" and run.n == 6 and not run.notes
    assert [point.n_edits for point in run.curve] == [2, 4, 6]
    assert run.curve[-1].summary["token"] == run.metrics["token"]


def test_sequential_with_several_cases_per_edit_checkpoints_after_the_edit_reaching_each_point(
        make_lm, tmp_path, monkeypatch):
    """sequential:log:2 on 5 cases: edits of cases (0,1), (2,3), (4); the log points 1, 2, 5 fall
    after edits 1, 1 and 3, so the curve has n_edits 2 and 5; a crash in edit 3 resumes by replay."""
    whole_lm = make_lm("llama")
    counter = count_calls(monkeypatch)
    run_bench(whole_lm, "test-shift", CASES[:5], mode="sequential:log:2", out_dir=tmp_path / "whole", restore=False,
              **RUN)
    assert counter[0] == 3
    expected_weights = snapshot(whole_lm)
    assert [line["n_edits"] for line in read_lines(tmp_path / "whole" / CURVE_FILE)] == [2, 5]
    records = read_lines(tmp_path / "whole" / RESULTS_FILE)
    assert [r["edit"]["unit"] for r in records] == [0, 0, 1, 1, 2]
    assert [r["edit"]["unit_size"] for r in records] == [2, 2, 2, 2, 1]

    # the first edit holds both requests of its group: the same deltas as a batch of the two
    edit = load_edit(tmp_path / "whole" / "edits" / "00000")
    joint = kedit.edit(make_lm("llama"), "test-shift", [c.request for c in CASES[:2]], apply=False)
    assert all(torch.equal(edit.deltas[name], joint.deltas[name]) for name in joint.deltas)

    lm = make_lm("llama")
    crash_after(monkeypatch, 2)
    with pytest.raises(Crash):
        run_bench(lm, "test-shift", CASES[:5], mode="sequential:log:2", out_dir=tmp_path / "crashed", **RUN)
    counter = count_calls(monkeypatch)
    run_bench(lm, "test-shift", CASES[:5], mode="sequential:log:2", out_dir=tmp_path / "crashed", resume=True,
              restore=False, **RUN)
    assert counter[0] == 1
    assert_same_weights(lm, expected_weights)
    assert comparable(read_lines(tmp_path / "crashed" / RESULTS_FILE)) == comparable(records)


def test_single_mode_opens_one_session_for_the_run(make_lm, tmp_path, monkeypatch):
    """What a session computes once (AlphaEdit's projectors) is not recomputed per case."""
    opened = []
    real = runner_module.open_session

    def counting(method, lm, hparams):
        opened.append(method.name)
        return real(method, lm, hparams)

    monkeypatch.setattr(runner_module, "open_session", counting)
    lm = make_lm("llama")
    original = snapshot(lm)
    run_bench(lm, "test-shift", CASES[:3], out_dir=tmp_path, **RUN)
    assert opened == ["test-shift"]
    assert_same_weights(lm, original)


def test_a_tampered_stored_edit_is_refused(make_lm, tmp_path, monkeypatch):
    lm = make_lm("llama")
    crash_after(monkeypatch, 2)
    with pytest.raises(Crash):
        run_bench(lm, "test-shift", CASES, mode="sequential:2", out_dir=tmp_path, **RUN)
    deltas = tmp_path / "edits" / "00001" / "deltas.safetensors"
    deltas.write_bytes(deltas.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(kedit.KeditError, match="sha256"):
        run_bench(lm, "test-shift", CASES, mode="sequential:2", out_dir=tmp_path, resume=True, **RUN)


def test_batch_records_equal_evaluate_on_the_same_edit(make_lm, tmp_path):
    lm = make_lm("gpt2")
    summary = run_bench(lm, "test-shift", CASES, mode="batch:3", out_dir=tmp_path, progress=False, eval_batch=3)
    records = read_lines(tmp_path / RESULTS_FILE)
    for start in (0, 3):
        chunk = CASES[start : start + 3]
        edit = kedit.edit(lm, "test-shift", chunk, apply=False)
        expected = json.loads(json.dumps(kedit.evaluate(lm, chunk, edit)))  # as read back from the file
        for got, want in zip(records[start : start + 3], expected, strict=True):
            for key in ("case_id", "request", "edited", "token", "probability"):
                assert got[key] == want[key], key
            assert got["edit"]["unit"] == start // 3 and got["edit"]["unit_size"] == 3
    assert summary["token"] == kedit.summarize(records)["token"]
    # a batch edit changes the model: the metrics move
    assert all(r["probability"]["post"]["p_new"] != r["probability"]["pre"]["p_new"] for r in records)


def test_held_out_block_measures_the_held_out_facts_before_and_after(make_lm, tmp_path):
    lm = make_lm("llama")
    run_bench(lm, "test-shift", CASES[:2], out_dir=tmp_path, held_out=HELD_OUT, **RUN)
    records = read_lines(tmp_path / RESULTS_FILE)
    probes = [held_out_probe_case(case) for case in HELD_OUT]
    for record, case in zip(records, CASES[:2], strict=True):
        edit = kedit.edit(lm, "test-shift", case, apply=False)
        held = kedit.evaluate(lm, probes, edit)
        for protocol, name in (("token", "locality_accuracy"), ("probability", "neighborhood_score")):
            pre = sum(r[protocol]["pre"][name] for r in held) / len(held)
            post = sum(r[protocol]["post"][name] for r in held) / len(held)
            assert record["held_out"][protocol]["pre"] == pytest.approx(pre, abs=1e-12)
            assert record["held_out"][protocol]["post"] == pytest.approx(post, abs=1e-12)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    drawdown = sum(r["held_out"]["token"]["pre"] - r["held_out"]["token"]["post"] for r in records) / 2
    assert summary["survey"]["drawdown"] == pytest.approx(drawdown)


def test_single_run_reads_back_as_a_bench_run(make_lm, tmp_path):
    lm = make_lm("llama")
    run_bench(lm, "test-shift", CASES[:3], out_dir=tmp_path, data={"name": "tiny", "path": None, "sha256": None},
              model_name="tiny-llama", **RUN)
    run = read_run(tmp_path)
    assert run.kind == "bench" and run.method == "test-shift" and run.model_name == "tiny-llama"
    assert run.fingerprint == lm.fingerprint and run.n == 3 and len(run.records) == 3 and not run.notes
    assert run.data["name"] == "tiny" and run.metrics["cases"] == 3
    assert set(run.summary["survey"]) >= {"success_rate", "generalization_rate", "drawdown"}


# ------------------------------------------------------------------------------------- kill -9 on the CLI

CLI = "import sys, typer; from kedit.cli.bench import bench; sys.argv[0] = 'kedit bench'; typer.run(bench)"
FAST_ROME = ["layer=1", "v_num_grad_steps=2", "context_template_length_params=[[3,1]]", "mom2_adjustment=false"]


@pytest.mark.slow
def test_kill_9_then_resume_leaves_no_duplicates(tokenizer, tmp_path):
    model_dir = tmp_path / "tiny-model"
    build_model("llama", len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "cases.json"
    data.write_text(json.dumps([make_case(i).to_dict() for i in range(8)]))
    out = tmp_path / "run"
    command = [sys.executable, "-c", CLI, "--model", str(model_dir), "--method", "rome", "--data", f"cases:{data}",
               "--n", "8", "--out", str(out), "--no-progress", *[a for s in FAST_ROME for a in ("--set", s)]]
    env = {**os.environ, "KEDIT_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / RESULTS_FILE
    deadline = time.monotonic() + 300
    while not (results.is_file() and results.read_bytes().count(b"\n") >= 1):
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no record within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / SUMMARY_FILE).exists()
    before = len(read_lines(results))
    assert 1 <= before < 8

    finished = subprocess.run([*command, "--resume"], env=env, capture_output=True, timeout=600)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    keys = [record["key"] for record in read_lines(results)]
    assert len(keys) == len(set(keys)) == 8
    assert [int(key.split(":")[0]) for key in keys] == list(range(8))
    assert json.loads((out / SUMMARY_FILE).read_text())["cases"] == 8


def test_bench_data_splits_edited_and_held_out_cases(tmp_path):
    from kedit.data.bench_data import load_bench_data

    data = tmp_path / "cases.json"
    data.write_text(json.dumps([make_case(i).to_dict() for i in range(5)]))
    chosen = load_bench_data(f"cases:{data}", 3, 2)
    assert [c.case_id for c in chosen.cases] == ["c0", "c1", "c2"]
    assert [c.case_id for c in chosen.held_out] == ["c3", "c4"]
    assert chosen.spec["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    with pytest.raises(kedit.KeditError, match="--held-out 3"):
        load_bench_data(f"cases:{data}", 3, 3)
    with pytest.raises(kedit.KeditError, match="NAME:PATH"):
        load_bench_data("counterfact", 3, 0)
