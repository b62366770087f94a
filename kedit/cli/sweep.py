"""``kedit sweep plan|run|status``: many bench runs from one sweep file, on a local pool or on Ray.

Registered on the ``kedit`` app by :mod:`kedit.cli`. ``plan`` checks the whole file and prints the
runs with their directory names; ``run`` executes it into a sweep directory (``--resume`` continues
one); ``status`` prints where a sweep directory stands. docs/SWEEPS.md describes the file format.
Exit status of ``run``: 0 when every run finished, 1 when some failed (the others are kept), 2 for
bad input (before any work).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli import common
from kedit.errors import KeditError
from kedit.runs import command_line

SOME_RUNS_FAILED = 1

sweep_app = typer.Typer(
    help="Run methods × datasets × models × hyperparameters from one sweep file, on a local pool or on Ray.",
    no_args_is_help=True,
)


@sweep_app.command("plan")
@common.reports_errors
def plan(sweep_file: Annotated[Path, typer.Argument(help="The sweep file (YAML, see docs/SWEEPS.md).")]) -> None:
    """Check every run of SWEEP_FILE and print the runs with their run-directory names; nothing is run."""
    from kedit.sweep.plan import make_plan

    planned = make_plan(sweep_file)
    console = common.stdout_console()
    if planned.runs:
        table = Table(title=f"{escape(planned.sweep.name)}: {len(planned.runs)} run(s), {planned.cases} case(s)")
        table.add_column("#")
        table.add_column("run directory (runs/…): method, model, data, mode, n, --set values, digest", overflow="fold")
        for column in ("device", "shards"):
            table.add_column(column)
        for number, run in enumerate(planned.runs):
            table.add_row(str(number), escape(run.name), escape(run.settings.device), str(len(run.spans)))
        console.print(table)
    if planned.search is not None:
        search = planned.search.settings
        table = Table(title=f"search: {search.samples} trial(s) of {escape(search.base.method)} on "
                            f"{search.base.n} case(s), {search.goal}imise {escape(search.metric)} "
                            f"({search.scheduler}, a report every {search.report_every} cases)")
        for column in ("hyperparameter", "values"):
            table.add_column(column)
        for dimension in search.space:
            values = (", ".join(map(str, dimension.choices)) if dimension.choices else
                      f"{dimension.low} … {dimension.high}" + (" (log)" if dimension.log else ""))
            table.add_row(escape(dimension.name), escape(values))
        console.print(table)


@sweep_app.command("run")
@common.reports_errors
def run(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep file (YAML, see docs/SWEEPS.md).")],
    out: Annotated[Path, typer.Option(file_okay=False, help="The sweep directory: plan.json, runs/NAME/, status/.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --out: finished runs are skipped, "
                                         "partial ones resume at their last case.")] = False,
    ray: Annotated[str | None, typer.Option(help="Run on Ray: 'auto' (the instance this machine knows, else a new "
                                            "local one) or a cluster ADDRESS. Without it, a local process pool.")] = None,
    gpus_per_run: Annotated[float, typer.Option(min=0, help="GPUs each run asks Ray for; a fraction (0.25) puts "
                                                "several runs on one GPU.")] = 0.0,
    cpus_per_run: Annotated[float, typer.Option(min=0.01, help="CPUs each run asks for; also its torch threads "
                                                "(at least 1).")] = 1.0,
    workers: Annotated[int | None, typer.Option(min=1, help="Local pool: processes side by side (default: CPU "
                                                "count / --cpus-per-run).")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Ray: times a task whose worker died is started again "
                                         "(it resumes at its last case).")] = 1,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this run (a name from `kedit sweep "
                                                   "plan`). Repeatable.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the sweep's progress bar on stderr.")] = True,
) -> None:
    """Run every run of SWEEP_FILE (checked first, all of them) into the sweep directory --out."""
    from kedit.sweep.drive import run_plan
    from kedit.sweep.plan import make_plan

    planned = make_plan(sweep_file)
    if ray is not None:
        from kedit.sweep.ray_pool import import_ray

        import_ray()  # not installed: say so before the sweep directory is made
    log = common.stderr_console()
    threads = max(1, int(cpus_per_run))
    command = command_line()
    if planned.search is not None:
        from kedit.sweep.search import run_search

        if ray is None:
            raise KeditError("this sweep declares a search, which runs on Ray Tune: add --ray auto "
                                    "(pip install 'kedit[ray]')")
        best = run_search(planned, out, ray, cpus=cpus_per_run, gpus=gpus_per_run, resume=resume, command=command,
                          threads=threads, log=lambda line: log.print(escape(line), soft_wrap=True))
        common.stdout_console().print(f"best: {escape(best.describe())}; hyperparameters: {escape(str(best.file))}")
        return
    if ray is None and gpus_per_run:
        raise KeditError("--gpus-per-run places runs on GPUs through Ray; add --ray auto (the local pool "
                                "runs every run on the device its settings name)")
    if gpus_per_run and all(run.settings.device == "cpu" for run in planned.runs):
        log.print("[yellow]note:[/] --gpus-per-run is given but every run's device is cpu; "
                  "set device: cuda in the sweep file to compute on the GPUs")

    def make_executor():
        if ray is not None:
            from kedit.sweep.ray_pool import RayPool

            return RayPool(ray, cpus_per_run, gpus_per_run, retries)
        from kedit.sweep.local_pool import LocalPool

        return LocalPool(workers or max(1, (os.cpu_count() or 1) // threads))

    try:
        outcome = run_plan(planned, out, make_executor, resume=resume, only=only or (), progress=progress,
                           command=command, threads=threads, log=lambda line: log.print(escape(line), soft_wrap=True))
    except KeyboardInterrupt:
        log.print(f"[yellow]interrupted:[/] finished cases are in {escape(str(out))}; "
                  "run the same command with --resume to continue")
        raise
    console = common.stdout_console()
    console.print(f"{len(outcome.finished)} of {len(only or planned.runs)} run(s) finished"
                  + (f" ({outcome.skipped} before this session)" if outcome.skipped else "")
                  + f"; {len(outcome.failures)} failed; sweep directory: {escape(str(out))}")
    if outcome.failures:
        raise typer.Exit(SOME_RUNS_FAILED)


@sweep_app.command("status")
@common.reports_errors
def status(directory: Annotated[Path, typer.Argument(file_okay=False, help="A sweep directory (kedit sweep run --out).")]) -> None:
    """Print a table of the runs in a sweep directory: cases measured, state, where each runs, S when finished."""
    from kedit.sweep.status import sweep_status

    rows = sweep_status(directory)
    table = Table(title=f"{escape(str(directory))}: {sum(row.state == 'done' for row in rows)} of {len(rows)} run(s) done")
    table.add_column("run", overflow="fold")
    for column in ("method", "mode", "cases", "state", "where / why", "S"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(escape(row.name), escape(row.method), escape(row.mode), f"{row.done}/{row.n}", row.state,
                      escape(row.detail), f"{row.score_s:.3f}" if row.score_s is not None else "–")
    common.stdout_console().print(table)
