"""``kedit bench``: run a dataset through a method in single, batch or sequential mode, resumably.

Registered on the ``kedit`` app by :mod:`kedit.cli`. The run directory it writes (laid out by
:mod:`kedit.runs`) is what ``kedit report`` reads; ``--resume`` continues a run that was interrupted,
even by ``kill -9``. The cases come from :func:`kedit.data.bench_data.load_bench_data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli import common
from kedit.data.bench_data import BenchData, load_bench_data
from kedit.errors import KeditError
from kedit.models.loading import DEFAULT_MODEL
from kedit.requests import Case
from kedit.runs import command_line


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _survey_table(summary: Mapping[str, Any]) -> Table:
    """SR, GR, DD per protocol (one row each: the protocols are never merged)."""
    table = Table(title="Survey metrics")
    for column in ("protocol", "success rate", "generalization rate", "drawdown", "drawdown measured on"):
        table.add_column(column)
    for key, label in (("survey", "token"), ("survey_probability", "probability")):
        block = summary.get(key) or {}
        table.add_row(label, _fmt(block.get("success_rate")), _fmt(block.get("generalization_rate")),
                      _fmt(block.get("drawdown")), escape(str(block.get("drawdown_source", "–"))))
    return table


def _lifelong_line(summary: Mapping[str, Any]) -> str | None:
    """Edit retention and upstream accuracy of a sequential run's final state (kedit.evaluate.lifelong)."""
    block = (summary.get("lifelong") or {}).get("post")
    if not block:
        return None
    return (f"lifelong (token): edit retention {_fmt(block.get('edit_retention'))}, upstream accuracy "
            f"{_fmt(block.get('upstream_accuracy'))} (retention {_fmt(block.get('upstream_retention'))})")


def _upstream_data(upstream: str | None, upstream_n: int, held_out: int) -> tuple[tuple[Case, ...], dict[str, Any] | None]:
    """The cases of ``--upstream NAME:PATH`` (a held-out set from its own file) and what run.json records of it."""
    if upstream is None:
        return (), None
    if held_out:
        raise KeditError("--upstream and --held-out both give the held-out set; use one of them")
    chosen = load_bench_data(upstream, upstream_n, 0)
    return chosen.cases, dict(chosen.spec) | {"n": len(chosen.cases)}


def _without_training_overlap(lm: Any, method: str, hparams_file: Path | None, overrides: dict[str, Any],
                              chosen: BenchData, n: int, held_out: int, log: Any,
                              seen_by: Path | None = None) -> BenchData:
    """The first ``n`` (+ ``held_out``) cases the trained editor of ``method`` (or the artifact in
    ``seen_by``, for any method: the same cases as that editor's run) has not seen in training."""
    from kedit.methods import method_for
    from kedit.methods.base import is_trained
    from kedit.training import load_artifact, without_training_overlap

    if seen_by is not None:
        artifact = load_artifact(seen_by, verify=False)
    else:
        trained = method_for(lm, method)
        if not is_trained(trained):
            raise KeditError(f"--drop-training-overlap is for trained editors; {method!r} is not trained "
                             "(--drop-seen-by DIR takes the cases a trained editor's run would take)")
        artifact = trained.trained_artifact(lm, trained.default_hparams(lm, hparams_file, overrides))
    kept, dropped = without_training_overlap(artifact, chosen.cases, str(chosen.spec.get("name")))
    if len(kept) < n + held_out:
        raise KeditError(f"only {len(kept)} cases remain after dropping {dropped} seen in training; lower --n")
    last = next(i for i, case in enumerate(chosen.cases) if case is kept[n + held_out - 1])
    skipped = last + 1 - (n + held_out)  # dropped among the records the run reaches into
    log.print(f"{skipped} of the first {last + 1} cases were seen in training and are left out "
              f"({dropped} in the whole file)")
    return BenchData(tuple(kept[:n]), tuple(kept[n:n + held_out]),
                     dict(chosen.spec) | {"dropped_training_overlap": skipped, "records_spanned": last + 1})


@common.reports_errors
def bench(
    data: Annotated[str, typer.Option(help="Dataset as NAME:PATH, e.g. counterfact:/data/counterfact.json "
                                      "(names: see `kedit data list`; 'cases' for a file of kedit cases; 'demo').")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Run directory: run.json, results.jsonl, summary.json, curve.jsonl.")],
    model: common.ModelOption = DEFAULT_MODEL,
    method: common.MethodOption = "rome",
    n: Annotated[int, typer.Option(min=1, help="Number of cases to edit (the first N of the data).")] = 500,
    mode: Annotated[str, typer.Option(help="single | batch:N | sequential[:E[:B]] (checkpoint every E edited cases, default 10; sequential:log checkpoints after 1, 2, 5, 10, 20, 50, ... cases; B cases per edit, default 1, e.g. sequential:log:100).")] = "single",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")] = False,
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    held_out: Annotated[int, typer.Option(min=0, help="Cases after the first N kept unedited to measure drawdown.")] = 0,
    upstream: Annotated[str | None, typer.Option(help="A held-out set from its own file, NAME:PATH (instead of "
                                                 "--held-out): never edited; every state measures the token accuracy "
                                                 "of its true answers — drawdown, and in sequential runs upstream "
                                                 "accuracy at each checkpoint (GRACE's TRR).")] = None,
    upstream_n: Annotated[int, typer.Option(min=1, help="How many cases of --upstream (its first ones).")] = 100,
    eval_batch: Annotated[int, typer.Option(min=1, help="Cases whose probes share one batched scoring call.")] = 64,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    drop_training_overlap: Annotated[bool, typer.Option(
        "--drop-training-overlap", help="Trained editors: leave out cases whose prompts the editor was trained "
        "on, then take the first N (run.json records how many were dropped).")] = False,
    drop_seen_by: Annotated[Path | None, typer.Option(
        help="Any method: leave out the cases the trained editor in this artifact folder saw, as "
        "--drop-training-overlap does for it (so both runs measure the same cases).")] = None,
) -> None:
    """Benchmark a method on a dataset; every case's record is on disk as soon as it is measured."""
    from kedit.evaluate.runner import parse_mode, run_bench

    overrides = common.parse_overrides(set_)
    parsed_mode = parse_mode(mode)
    common.check_method(method, hparams, overrides)
    dropping = drop_training_overlap or drop_seen_by is not None
    upstream_cases, upstream_spec = _upstream_data(upstream, upstream_n, held_out)
    chosen = load_bench_data(data, 10**9 if dropping else n, 0 if dropping else held_out)
    log = common.stderr_console()
    log.print(f"{len(chosen.cases)} case(s) from {escape(data)}"
              + (f", {len(chosen.held_out)} held out" if chosen.held_out else "")
              + (f", {len(upstream_cases)} upstream from {escape(str(upstream))}" if upstream_cases else "")
              + f"; {escape(method)} in {parsed_mode.spec} mode; writing to {escape(str(out))}")
    lm, _ = common.load_lm(model, device, log, start_token)
    if dropping:
        chosen = _without_training_overlap(lm, method, hparams, overrides, chosen, n, held_out, log, drop_seen_by)
    if upstream_cases:
        edited = {(case.request.text, case.request.target_true) for case in chosen.cases}
        if shared := sum((case.request.text, case.request.target_true) in edited for case in upstream_cases):
            raise KeditError(f"--upstream {upstream} holds {shared} of the cases edited from --data; "
                             "take another file, or --held-out N for the cases after the first --n")
        chosen = BenchData(chosen.cases, upstream_cases, chosen.spec)
    try:
        summary = run_bench(lm, method, chosen.cases, mode=parsed_mode, out_dir=out, overrides=overrides,
                            resume=resume, progress=progress, eval_batch=eval_batch, held_out=chosen.held_out,
                            hparams_file=hparams, model_name=model, data=chosen.spec,
                            command=command_line(), held_out_data=upstream_spec)
    except KeyboardInterrupt:
        log.print(f"[yellow]interrupted:[/] finished cases are in {escape(str(out))}; "
                  "run the same command with --resume to continue")
        raise
    console = common.stdout_console()
    console.print(_survey_table(summary))
    if lifelong := _lifelong_line(summary):
        console.print(lifelong)
    console.print(f"{summary['cases']} case(s); {_fmt(summary.get('cases_per_second'))} cases/s this session; "
                  f"results: {escape(str(out))}")
