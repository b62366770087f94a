"""``kedit train``: meta-train a trained editor (MEND, SERAC) for one model, resumably.

Registered on the ``kedit`` app by :mod:`kedit.cli`. The folder ``--out`` holds the checkpoint, the
best state and the log (:mod:`kedit.training.loop`); running the same command again continues
from the last checkpoint, also after ``kill -9``. The finished artifact is written to
``<out>/artifact`` and copied into ``$KEDIT_HOME/artifacts``, where ``kedit edit`` / ``kedit bench``
find it for the same model and hyperparameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kedit.cli import common
from kedit.errors import KeditError
from kedit.models.loading import DEFAULT_MODEL

DEFAULT_HELD_OUT = 200  # validation cases held out of --data when no --val is given


def held_out_cases(train_cases, candidates, dataset: str):
    """The held-out candidates that share no prompt with the training cases, and how many were dropped
    (a file like CounterFact has several records per subject prompt; such a record validates nothing)."""
    from kedit.training import TrainingKeys
    from kedit.training.artifact import training_overlap

    overlap = set(training_overlap(TrainingKeys.of(train_cases, dataset), candidates, dataset).by_prompt)
    kept = tuple(case for index, case in enumerate(candidates)
                 if (str(case.case_id) if case.case_id is not None else f"#{index}") not in overlap)
    return kept, len(candidates) - len(kept)


@common.reports_errors
def train(
    method: Annotated[str, typer.Argument(help="A trained editor: mend or serac (see `kedit methods`).")],
    data: Annotated[str, typer.Option(help="Training data as NAME:PATH, e.g. counterfact-easyedit:train.json "
                                      "(names: `kedit data list`).")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Training folder (checkpoint, log, artifact/); "
                                      "the same command continues what it holds.")],
    model: common.ModelOption = DEFAULT_MODEL,
    val: Annotated[str | None, typer.Option(help="Validation data as NAME:PATH; default: the last "
                                            f"--held-out cases of --data ({DEFAULT_HELD_OUT}).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many optimiser steps (all sessions).")] = None,
    time_budget: Annotated[str | None, typer.Option(help="Stop this session after a duration: 90s, 45m, 2h, 1h30m.")] = None,
    n: Annotated[int | None, typer.Option(min=1, help="Train on the first N cases of --data (default: all).")] = None,
    held_out: Annotated[int, typer.Option(min=1, help="Without --val: cases at the end of --data kept for validation.")] = DEFAULT_HELD_OUT,
    val_every: Annotated[int, typer.Option(min=1, help="Validate (and keep the best state) every K steps.")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many steps without a better validation.")] = 2000,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Checkpoint at least every K steps (and every 2 min).")] = 50,
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Meta-train METHOD's editor for --model on --data; resumes what --out holds."""
    from kedit.data.bench_data import load_bench_data
    from kedit.methods import get_method
    from kedit.methods.base import is_trained, registered_methods
    from kedit.training import Schedule, TrainingData, parse_duration

    chosen = get_method(method)
    if not is_trained(chosen):
        trained = sorted(name for name, cls in registered_methods().items() if is_trained(cls))
        raise KeditError(f"{method!r} does not train an editor (it edits directly); trained methods: "
                         f"{', '.join(trained) or 'none'}")
    schedule = Schedule(max_steps=steps, time_budget_s=parse_duration(time_budget) if time_budget else None,
                        val_every=val_every, patience=patience, checkpoint_every=checkpoint_every, progress=progress)
    overrides = common.parse_overrides(set_)
    common.check_method(method, hparams, overrides)
    limit = n if n is not None else 10**9
    if val:
        training = load_bench_data(data, limit, 0)
        validation = load_bench_data(val, 10**9, 0)
        val_cases, spec = validation.cases, dict(training.spec) | {"val": dict(validation.spec)}
        cases = training.cases
    else:
        everything = load_bench_data(data, 10**9, 0)
        if len(everything.cases) <= held_out:
            raise KeditError(f"--data {data} has {len(everything.cases)} cases; holding out {held_out} for "
                             "validation leaves none to train on. Give --val or lower --held-out.")
        cases = everything.cases[: len(everything.cases) - held_out][:limit]
        val_cases, dropped = held_out_cases(cases, everything.cases[len(everything.cases) - held_out:],
                                            str(everything.spec.get("name")))
        spec = dict(everything.spec) | {"val": dict(everything.spec) | {"held_out_last": held_out,
                                                                        "dropped_sharing_a_prompt": dropped}}
    no_ops = sum(1 for case in cases if case.request.target_new == case.request.target_true)
    cases = tuple(case for case in cases if case.request.target_new != case.request.target_true)
    log = common.stderr_console()
    if no_ops:
        log.print(f"{no_ops} training case(s) whose new target is the true answer are left out (nothing to edit)")
    log.print(f"training {escape(method)} on {len(cases)} case(s) from {escape(data)}, validating on "
              f"{len(val_cases)}; folder {escape(str(out))}")
    lm, _ = common.load_lm(model, device, log, start_token)
    resolved = chosen.default_hparams(lm, hparams, overrides)
    training_data = TrainingData(tuple(cases), tuple(val_cases), spec)
    try:
        artifact = chosen.train(lm, training_data, resolved, schedule, out)
    except KeyboardInterrupt:
        log.print(f"[yellow]interrupted:[/] the last checkpoint is in {escape(str(out))}; run the same command "
                  "to continue")
        raise
    summary = artifact.manifest.training
    console = common.stdout_console()
    best = summary.get("best_val")
    console.print(f"{summary['steps']} step(s), stopped by {summary['stopped']}; best validation loss "
                  f"{best if best is None else f'{best:.4f}'} at step {summary['best_step']}; "
                  f"{summary['seconds']:.0f} s of training")
    console.print(f"artifact: {escape(str(artifact.folder))} (also in the store for {escape(model)})")
