"""The training loop every trained editor shares: steps, validation, the best checkpoint, early
stopping, time budgets, and resuming after ``kill -9``.

A method supplies a :class:`Trainee` — the thing being trained, with its optimisers — and the loop
drives it. One *step* is one optimiser update (a trainee that accumulates gradients over several
micro-batches does so inside its step), so a checkpoint always falls between updates.

Resuming is exact: the trainee's :meth:`Trainee.step` must depend only on its state and on the step
index (it draws its batch and any randomness from ``(seed, step)``), and its :meth:`Trainee.state`
must hold everything that changes (parameters, optimiser moments, running statistics). Then a run
killed after step k and resumed from its checkpoint at step c ≤ k repeats steps c+1 … k exactly as
they first ran (a test checks this step for step).

Files in the training folder (``--out``):

    train.json          who is being trained (method, model, hyperparameters, data); a resume with
                        other values is refused
    checkpoint.pt       the last checkpoint (trainee state + loop state), replaced atomically
    best.safetensors    the artifact tensors at the best validation so far
    train-log.jsonl     one line per step (losses) and per validation; on resume, lines after the
                        checkpoint are dropped so the log matches the state
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kedit.errors import KeditError
from kedit.paths import atomic_path, write_json_atomic

TRAIN_FILE = "train.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.safetensors"
LOG_FILE = "train-log.jsonl"
VAL_KEY = "val_loss"  # what early stopping minimises; a trainee's validate() must return it


class Trainee(Protocol):
    """What the loop trains."""

    def state(self) -> dict[str, Any]:
        """Everything that changes during training, as a ``torch.save``-able dict."""

    def load_state(self, state: Mapping[str, Any]) -> None: ...

    def step(self, step: int) -> dict[str, float]:
        """One optimiser update (steps count from 1); returns its losses (at least ``loss``)."""

    def validate(self) -> dict[str, float]:
        """Metrics on the held-out cases (at least ``val_loss``, minimised), without training."""

    def artifact_tensors(self) -> dict[str, Any]:
        """The tensors a trained editor needs at edit time (saved at the best validation)."""


@dataclass(frozen=True)
class Schedule:
    """When to stop, validate and checkpoint. ``max_steps`` counts all steps of the run, across
    resumes; ``time_budget_s`` limits this session only (resume to continue)."""

    max_steps: int | None = None
    time_budget_s: float | None = None
    val_every: int = 100
    patience: int | None = 2000  # steps without a better validation before stopping; None: never
    checkpoint_every: int = 50
    checkpoint_seconds: float = 120.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps is None and self.time_budget_s is None:
            raise KeditError("training needs an end: give --steps N or --time-budget (e.g. 2h)")
        for name in ("max_steps", "val_every", "checkpoint_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise KeditError(f"{name} must be >= 1, got {value}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise KeditError(f"the time budget must be positive, got {self.time_budget_s} s")


def parse_duration(text: str) -> float:
    """``90s``, ``45m``, ``2h``, ``1h30m`` or a number of seconds → seconds."""
    import re

    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise KeditError(f"--time-budget {text!r}: write it like 90s, 45m, 2h or 1h30m")
    return sum(float(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)


@dataclass
class LoopState:
    """What the loop itself carries across a resume."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    validations: int = 0
    seconds: float = 0.0  # training time over all sessions
    last_val: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingOutcome:
    steps: int
    best_step: int
    best_val: float
    stopped: str  # "max-steps" | "time-budget" | "early-stop"
    seconds: float
    resumed_from: int  # the step the run continued from (0: a fresh run)
    last_val: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"best_val": self.best_val if math.isfinite(self.best_val) else None}


def _check_identity(folder: Path, identity: Mapping[str, Any]) -> None:
    path = folder / TRAIN_FILE
    wanted = json.loads(json.dumps(dict(identity), default=str))
    if path.is_file():
        stored = json.loads(path.read_text())
        differing = sorted(key for key in set(stored) | set(wanted) if stored.get(key) != wanted.get(key))
        if differing:
            raise KeditError(f"{folder} holds a training run with other {', '.join(differing)}; "
                             "resume it with the same arguments or choose another --out")
    else:
        write_json_atomic(path, wanted)


def _trim_log(path: Path, last_step: int) -> None:
    """Keep the log lines of steps ≤ ``last_step`` (the ones the checkpoint contains)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the partial line a kill left behind
        if int(entry.get("step", 0)) <= last_step:
            kept.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _save_checkpoint(folder: Path, trainee: Trainee, loop: LoopState) -> None:
    import torch

    final = folder / CHECKPOINT_FILE
    with atomic_path(final) as tmp:
        torch.save({"trainee": trainee.state(), "loop": asdict(loop)}, tmp)


def _save_best(folder: Path, trainee: Trainee) -> None:
    from safetensors.torch import save_file

    with atomic_path(folder / BEST_FILE) as tmp:
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in trainee.artifact_tensors().items()},
                  str(tmp))


def load_best(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / BEST_FILE))


def run_loop(trainee: Trainee, schedule: Schedule, folder: Path, identity: Mapping[str, Any]) -> TrainingOutcome:
    """Train until the schedule says stop; resume from ``folder``'s checkpoint when it has one."""
    import torch
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_identity(folder, identity)
    loop = LoopState()
    checkpoint = folder / CHECKPOINT_FILE
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        trainee.load_state(saved["trainee"])
        loop = LoopState(**saved["loop"])
    resumed_from = loop.step
    _trim_log(folder / LOG_FILE, loop.step)
    started = time.monotonic()
    last_checkpoint = (loop.step, started)
    stopped = "max-steps"
    in_step = False
    bar = tqdm(total=schedule.max_steps, initial=loop.step, desc="train", unit="step",
               disable=not schedule.progress, dynamic_ncols=True)

    def session_seconds() -> float:
        return time.monotonic() - started

    with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
        try:
            while True:
                if schedule.max_steps is not None and loop.step >= schedule.max_steps:
                    stopped = "max-steps"
                    break
                if schedule.time_budget_s is not None and session_seconds() >= schedule.time_budget_s:
                    stopped = "time-budget"
                    break
                if (schedule.patience is not None and loop.validations > 0
                        and loop.step - loop.best_step >= schedule.patience):
                    stopped = "early-stop"
                    break
                step = loop.step + 1
                step_started = time.monotonic()
                in_step = True
                losses = trainee.step(step)
                in_step = False
                loop.step = step
                loop.seconds += time.monotonic() - step_started
                if not all(math.isfinite(value) for value in losses.values()):
                    raise KeditError(f"step {step}: a loss became {losses}; lower the learning rates")
                log.write(json.dumps({"step": step, **losses}) + "\n")
                bar.update(1)
                postfix = {"loss": f"{losses.get('loss', float('nan')):.4f}"}
                if step % schedule.val_every == 0:
                    val_started = time.monotonic()
                    metrics = trainee.validate()
                    if VAL_KEY not in metrics:
                        raise KeditError(f"the trainee's validate() returned no {VAL_KEY!r}: {sorted(metrics)}")
                    loop.validations += 1
                    loop.last_val = dict(metrics)
                    loop.seconds += time.monotonic() - val_started
                    improved = metrics[VAL_KEY] < loop.best_val
                    if improved:
                        loop.best_val, loop.best_step = metrics[VAL_KEY], step
                        _save_best(folder, trainee)
                    log.write(json.dumps({"step": step, "validation": metrics, "best": improved}) + "\n")
                    log.flush()
                    os.fsync(log.fileno())
                    _save_checkpoint(folder, trainee, loop)
                    last_checkpoint = (step, time.monotonic())
                postfix["val"] = f"{loop.last_val.get(VAL_KEY, float('nan')):.4f}"
                bar.set_postfix(postfix)
                due = (step - last_checkpoint[0] >= schedule.checkpoint_every
                       or time.monotonic() - last_checkpoint[1] >= schedule.checkpoint_seconds)
                if due:
                    log.flush()
                    os.fsync(log.fileno())
                    _save_checkpoint(folder, trainee, loop)
                    last_checkpoint = (step, time.monotonic())
        except KeyboardInterrupt:
            log.flush()
            if not in_step:
                # Between steps the state is whole; inside one it may be half-updated (an optimiser
                # stopped mid-step), so the last checkpoint is kept instead: resume stays exact.
                _save_checkpoint(folder, trainee, loop)
            raise
        finally:
            bar.close()
        log.flush()
        _save_checkpoint(folder, trainee, loop)
    if loop.validations == 0 or not (folder / BEST_FILE).is_file():
        # Never validated (a run shorter than val_every): the last state is the only candidate.
        metrics = trainee.validate()
        loop.validations += 1
        loop.last_val = dict(metrics)
        loop.best_val, loop.best_step = metrics.get(VAL_KEY, math.inf), loop.step
        _save_best(folder, trainee)
        _save_checkpoint(folder, trainee, loop)
    return TrainingOutcome(steps=loop.step, best_step=loop.best_step, best_val=loop.best_val, stopped=stopped,
                           seconds=loop.seconds, resumed_from=resumed_from, last_val=loop.last_val)
