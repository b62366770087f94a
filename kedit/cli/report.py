"""``kedit report RUN_DIR … --out DIR``: compare finished runs in one markdown + HTML report.

Registered on the ``kedit`` app by :mod:`kedit.cli`. Exit status: 0 when every
folder was read; 1 when some could not be (the report is still written and lists them, with the
reason); 2 for bad input such as ``--out`` pointing at a run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli.common import reports_errors, stderr_console, stdout_console
from kedit.errors import KeditError
from kedit.reports.intervals import METHOD
from kedit.reports.paired import compare_runs
from kedit.reports.report_writer import write_comparison_report
from kedit.reports.runs import Run
from kedit.reports.sweeps import add_sweep_sections, expand_sweeps
from kedit.runs import command_line

SOME_RUNS_UNREADABLE = 1


@reports_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by kedit bench, kedit pitfalls or kedit demo.")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Folder for report.md, report.html and the PNG plots.")] = Path("report"),
    compare: Annotated[bool, typer.Option("--compare", help="With two runs on the same cases: also print each metric's paired difference (first − second) with 95 % bootstrap intervals.")] = False,
) -> None:
    """Compare runs: metrics by method, sequential curves and pitfalls tables, as markdown and one HTML page."""
    if compare and len(run_dirs) != 2:
        raise KeditError(f"--compare takes exactly two run directories, got {len(run_dirs)}")
    run_dirs, sweeps = expand_sweeps(run_dirs)  # a sweep directory stands for its runs
    written = write_comparison_report(run_dirs, out, command=command_line())
    add_sweep_sections(written.markdown, written.html, sweeps)
    log, console = stderr_console(), stdout_console()
    for failure in written.failures:
        log.print(f"[yellow]not read:[/] {escape(str(failure.path))}: {escape(failure.reason)}", soft_wrap=True)
    for run in written.runs:
        for note in run.notes:
            log.print(f"[dim]note:[/] {escape(str(run.path))}: {escape(note)}", soft_wrap=True)
    console.print(f"read {len(written.runs)} of {len(written.runs) + len(written.failures)} run(s); "
                  f"{len(written.plots)} plot(s)")
    console.print(f"report: {escape(str(written.markdown))}")
    console.print(f"html:   {escape(str(written.html))}")
    if compare and not written.failures:
        console.print(_paired_table(*written.runs))
    if written.failures:
        raise typer.Exit(SOME_RUNS_UNREADABLE)


def _paired_table(first: Run, second: Run) -> Table:
    rows = compare_runs(first, second)
    settings = rows[0].difference
    table = Table(title=f"{escape(first.method)} ({escape(first.path.name)}) − {escape(second.method)} "
                        f"({escape(second.path.name)}): means with {settings.level:.0%} {METHOD} intervals, "
                        f"{settings.resamples} resamples, seed {settings.seed}")
    for column in ("protocol", "metric", "cases", "first", "second", "first − second (paired)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.protocol, row.name, str(row.difference.n), row.first.describe(), row.second.describe(),
                      row.difference.describe())
    return table
