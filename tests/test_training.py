"""The shared training machinery: schedule and durations, the loop's stops (steps, time budget,
patience), resume identity, artifacts (corruption, base model), the overlap check, and
``kedit train`` / ``kedit bench`` on a tiny model folder."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from typer.testing import CliRunner

from kedit.cli import app
from kedit.errors import KeditError, KeditWarning
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.training import Schedule, TrainingKeys, check_no_overlap, parse_duration, run_loop
from kedit.training.artifact import (
    ArtifactManifest,
    check_artifact_base,
    load_artifact,
    save_artifact,
    training_overlap,
)

runner = CliRunner()


class CountingTrainee:
    """A scalar "editor" x trained towards 3; validation returns a prescribed sequence of losses."""

    def __init__(self, val_losses=None) -> None:
        self.x = torch.zeros(())
        self.val_losses = list(val_losses or [])
        self.validations = 0

    def state(self):
        return {"x": self.x.clone(), "validations": self.validations}

    def load_state(self, state):
        self.x, self.validations = state["x"].clone(), state["validations"]

    def step(self, step):
        self.x = self.x + 0.5 * (3 - self.x)
        return {"loss": float((self.x - 3) ** 2)}

    def validate(self):
        self.validations += 1
        value = self.val_losses[self.validations - 1] if self.validations <= len(self.val_losses) else 0.0
        return {"val_loss": value}

    def artifact_tensors(self):
        return {"x": self.x.reshape(1)}


def test_durations_and_schedules():
    assert parse_duration("90s") == 90 and parse_duration("45m") == 2700
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("12") == 12
    with pytest.raises(KeditError, match="write it like"):
        parse_duration("two hours")
    with pytest.raises(KeditError, match="needs an end"):
        Schedule()


def test_patience_stops_at_the_best_validation_and_keeps_its_state(tmp_path):
    trainee = CountingTrainee(val_losses=[5.0, 2.0, 3.0, 4.0, 6.0])
    outcome = run_loop(trainee, Schedule(max_steps=100, val_every=2, patience=6, progress=False), tmp_path, {})
    # validations at steps 2, 4 (best), 6, 8, 10: 10 - 4 >= 6 → stop before step 11
    assert (outcome.stopped, outcome.steps, outcome.best_step, outcome.best_val) == ("early-stop", 10, 4, 2.0)
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "best.safetensors"))["x"]
    expected = 3 - 3 * 0.5**4  # x after 4 steps
    assert float(best) == pytest.approx(expected)


def test_time_budget_stops_the_session_and_the_next_session_continues(tmp_path):
    outcome = run_loop(CountingTrainee(), Schedule(time_budget_s=1e-9, progress=False), tmp_path, {})
    assert outcome.stopped == "time-budget" and outcome.steps == 0
    outcome = run_loop(CountingTrainee(), Schedule(max_steps=3, progress=False), tmp_path, {})
    assert outcome.steps == 3 and outcome.resumed_from == 0
    again = run_loop(CountingTrainee(), Schedule(max_steps=5, progress=False), tmp_path, {})
    assert again.resumed_from == 3 and again.steps == 5
    lines = [json.loads(line) for line in (tmp_path / "train-log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5]


def test_resume_with_other_arguments_is_refused(tmp_path):
    run_loop(CountingTrainee(), Schedule(max_steps=1, progress=False), tmp_path, {"lr": 1e-6})
    with pytest.raises(KeditError, match="other lr"):
        run_loop(CountingTrainee(), Schedule(max_steps=2, progress=False), tmp_path, {"lr": 1e-5})


def test_a_log_line_written_after_the_checkpoint_is_dropped_on_resume(tmp_path):
    run_loop(CountingTrainee(), Schedule(max_steps=2, progress=False), tmp_path, {})
    with open(tmp_path / "train-log.jsonl", "a") as log:  # what a kill after step 3's log line leaves
        log.write(json.dumps({"step": 3, "loss": 123.0}) + "\n" + '{"step": 4, "lo')
    run_loop(CountingTrainee(), Schedule(max_steps=4, progress=False), tmp_path, {})
    lines = [json.loads(line) for line in (tmp_path / "train-log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4] and 123.0 not in [line["loss"] for line in lines]


def _case(prompt_subject: str, target: str, case_id: str) -> Case:
    return Case(EditRequest("{} is located in", prompt_subject, target), rephrases=(f"Where is {prompt_subject}?",),
                locality=(LocalityProbe("The Nile is a river in", "Africa"),), case_id=case_id)


def _manifest(fingerprint="f" * 64) -> ArtifactManifest:
    keys = TrainingKeys.of([_case("The Louvre", "Rome", "0")], "counterfact")
    return ArtifactManifest(method="mend", editor_version=1, base_fingerprint=fingerprint, base_source="tiny",
                            training_hparams={"rank": 8}, data={"name": "counterfact", "keys_digest": keys.digest()},
                            versions={})


def test_artifact_round_trip_corruption_and_base_model(tmp_path):
    keys = TrainingKeys.of([_case("The Louvre", "Rome", "0")], "counterfact")
    saved = save_artifact(tmp_path / "a", _manifest(), {"w": torch.arange(4.0)}, keys)
    loaded = load_artifact(tmp_path / "a", "mend")
    assert torch.equal(loaded.tensors()["w"], torch.arange(4.0)) and loaded.training_keys() == keys
    assert loaded.manifest.key == saved.manifest.key
    check_artifact_base(loaded, "f" * 64, "tiny")
    with pytest.raises(KeditError, match="was trained on tiny"):
        check_artifact_base(loaded, "e" * 64, "other")
    with pytest.raises(KeditError, match="not 'serac'"):
        load_artifact(tmp_path / "a", "serac")
    (tmp_path / "a" / "editor.safetensors").write_bytes(b"garbage")
    with pytest.raises(KeditError, match="corrupted"):
        load_artifact(tmp_path / "a", "mend")
    with pytest.raises(KeditError, match="not a trained-editor artifact"):
        load_artifact(tmp_path, "mend")


def test_overlap_by_prompt_anywhere_and_by_id_within_a_dataset(tmp_path):
    training = [_case("The Louvre", "Rome", "7"), _case("Mount Everest", "Paris", "8")]
    keys = TrainingKeys.of(training, "counterfact")
    evaluation = [_case("the  louvre", "Tokyo", "100"),  # same prompt up to case and spacing
                  _case("The Nile", "Spain", "8"),  # same id
                  _case("Apple", "Japan", "9")]
    overlap = training_overlap(keys, evaluation, "counterfact")
    assert overlap.by_prompt == ("100",) and overlap.by_id == ("8",)
    assert training_overlap(keys, evaluation, "zsre").by_id == ()  # ids of another format mean nothing
    artifact = save_artifact(tmp_path / "a", _manifest(), {"w": torch.zeros(1)}, keys)
    with pytest.raises(KeditError, match="1 share a prompt with the training data.*1 have the case id"):
        check_no_overlap(artifact, evaluation, "counterfact")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_no_overlap(artifact, evaluation, "counterfact", allow=True)
    assert any(issubclass(w.category, KeditWarning) and "TRAINING OVERLAP" in str(w.message) for w in caught)
    check_no_overlap(artifact, evaluation[2:], "counterfact")  # no overlap: no error


def _cases_file(path, subjects_targets, start=0):
    cases = [_case(subject, target, str(start + i)).to_dict() for i, (subject, target) in enumerate(subjects_targets)]
    path.write_text(json.dumps(cases))
    return path


TRAIN = [("The Eiffel Tower", "Rome"), ("The Louvre", "Berlin"), ("Mount Everest", "Paris"),
         ("The Colosseum", "Tokyo"), ("The Nile", "Spain")]
HELD = [("Apple", "Japan"), ("Berlin", "Italy")]


def test_kedit_train_refuses_untrained_methods_and_trains_resumes_and_feeds_bench(tiny_folder, tmp_path):
    train_file = _cases_file(tmp_path / "train.json", TRAIN)
    val_file = _cases_file(tmp_path / "val.json", HELD, start=100)
    refused = runner.invoke(app, ["train", "ft-l", "--model", str(tiny_folder), "--data", f"cases:{train_file}",
                                  "--out", str(tmp_path / "x"), "--steps", "1"])
    assert refused.exit_code == 2 and "does not train an editor" in refused.output and "mend" in refused.output
    args = ["train", "mend", "--model", str(tiny_folder), "--data", f"cases:{train_file}", "--val",
            f"cases:{val_file}", "--out", str(tmp_path / "run"), "--val-every", "2", "--no-progress",
            "--set", "rank=8", "--set", "edits_per_step=2", "--set", "lr=1e-3"]
    first = runner.invoke(app, [*args, "--steps", "2"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*args, "--steps", "4"])
    assert second.exit_code == 0, second.output
    manifest = json.loads((tmp_path / "run" / "artifact" / "artifact.json").read_text())
    assert manifest["training"]["steps"] == 4 and manifest["training"]["resumed_from"] == 2
    assert manifest["data"]["cases"] == 5 and manifest["data"]["val_cases"] == 2
    bench = ["bench", "--model", str(tiny_folder), "--method", "mend", "--set", "rank=8", "--set",
             "edits_per_step=2", "--set", "lr=1e-3", "--n", "2", "--no-progress"]
    leaked = runner.invoke(app, [*bench, "--data", f"cases:{train_file}", "--out", str(tmp_path / "leak")])
    assert leaked.exit_code == 2 and "share a prompt with the training data" in leaked.output
    ok = runner.invoke(app, [*bench, "--data", f"cases:{val_file}", "--out", str(tmp_path / "bench")])
    assert ok.exit_code == 0, ok.output
    run = json.loads((tmp_path / "bench" / "run.json").read_text())
    assert run["trained_editor"]["editor_sha256"] == manifest["files"]["editor.safetensors"]
    assert run["trained_editor"]["steps"] == 4
    records = [json.loads(line) for line in (tmp_path / "bench" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["edited"] and r["edit"]["method"] == "mend" for r in records)
    assert all(math.isfinite(r["token"]["post"]["reliability"]) for r in records)
    assert all(str(tmp_path) not in json.dumps(r) for r in records)  # no machine path in the records


def test_kedit_train_killed_with_sigkill_resumes_to_the_uninterrupted_run(tiny_folder, tmp_path):
    """A real ``kill -9`` of ``kedit train``: the rerun continues from the last checkpoint and ends with
    the losses of an uninterrupted run, step for step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    train_file = _cases_file(tmp_path / "train.json", TRAIN)
    val_file = _cases_file(tmp_path / "val.json", HELD, start=100)

    def command(out):
        return [sys.executable, "-m", "kedit", "train", "mend", "--model", str(tiny_folder), "--data",
                f"cases:{train_file}", "--val", f"cases:{val_file}", "--out", str(out), "--steps", "60",
                "--val-every", "20", "--checkpoint-every", "5", "--no-progress", "--set", "rank=8",
                "--set", "edits_per_step=2", "--set", "lr=1e-3"]

    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "whole"), check=True, env=env, capture_output=True)
    victim = subprocess.Popen(command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "cut" / "train-log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if (tmp_path / "cut" / "checkpoint.pt").is_file() and log.is_file() and log.stat().st_size > 1000:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    subprocess.run(command(tmp_path / "cut"), check=True, env=env, capture_output=True)

    def losses(folder):
        lines = [json.loads(line) for line in (folder / "train-log.jsonl").read_text().splitlines()]
        return [(line["step"], line["loss"]) for line in lines if "loss" in line]

    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert len(whole) == 60 and whole == cut
    manifest = json.loads((tmp_path / "cut" / "artifact" / "artifact.json").read_text())
    assert 0 < manifest["training"]["resumed_from"] < 60


def test_bench_can_leave_out_the_cases_a_trained_editor_saw(tiny_folder, tmp_path):
    train_file = _cases_file(tmp_path / "train.json", TRAIN)
    mixed = _cases_file(tmp_path / "mixed.json", [TRAIN[0], HELD[0], TRAIN[1], HELD[1]], start=200)
    val_file = _cases_file(tmp_path / "val.json", [("Tokyo", "Paris")], start=100)
    common = ["--model", str(tiny_folder), "--set", "rank=8", "--set", "edits_per_step=2", "--set", "lr=1e-3"]
    trained = runner.invoke(app, ["train", "mend", *common, "--data", f"cases:{train_file}", "--val",
                                  f"cases:{val_file}", "--out", str(tmp_path / "run"), "--steps", "1",
                                  "--no-progress"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["bench", "--method", "mend", *common, "--data", f"cases:{mixed}", "--n", "2",
                                 "--drop-training-overlap", "--no-progress", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["request"]["subject"] for r in records] == ["Apple", "Berlin"]
    data = json.loads((tmp_path / "b" / "run.json").read_text())["data"]
    assert data["dropped_training_overlap"] == 2 and data["records_spanned"] == 4
    same = runner.invoke(app, ["bench", "--method", "ft-l", "--model", str(tiny_folder), "--data", f"cases:{mixed}",
                               "--n", "2", "--drop-seen-by", str(tmp_path / "run"), "--no-progress",
                               "--set", "num_steps=2", "--out", str(tmp_path / "ft")])
    assert same.exit_code == 0, same.output
    ft_run = json.loads((tmp_path / "ft" / "run.json").read_text())["data"]
    assert ft_run["cases_sha256"] == data["cases_sha256"]  # the same cases: a paired comparison is possible
    too_many = runner.invoke(app, ["bench", "--method", "mend", *common, "--data", f"cases:{mixed}", "--n", "3",
                                   "--drop-training-overlap", "--no-progress", "--out", str(tmp_path / "c")])
    assert too_many.exit_code == 2 and "only 2 cases remain" in too_many.output


def test_an_interrupt_inside_a_step_keeps_the_last_whole_checkpoint(tmp_path):
    class Interrupted(CountingTrainee):
        def step(self, step):
            if step == 3:
                self.x = self.x + 100.0  # half an update, then Ctrl-C
                raise KeyboardInterrupt
            return super().step(step)

    with pytest.raises(KeyboardInterrupt):
        run_loop(Interrupted(), Schedule(max_steps=5, checkpoint_every=1, progress=False), tmp_path, {})
    resumed = run_loop(CountingTrainee(), Schedule(max_steps=5, progress=False), tmp_path, {})
    assert resumed.resumed_from == 2
    whole = run_loop(CountingTrainee(), Schedule(max_steps=5, progress=False), tmp_path / "whole", {})
    from safetensors.torch import load_file

    assert whole.steps == resumed.steps == 5
    assert torch.equal(load_file(str(tmp_path / "best.safetensors"))["x"],
                       load_file(str(tmp_path / "whole" / "best.safetensors"))["x"])
