"""``kedit data list | check PATH [--name NAME] [--strict] | download NAME --out DIR [--url URL]``.

``check`` reads a dataset file the way a benchmark would and prints what came out: counts of
records, cases and probes, the file's sha256 and a table of the records that were skipped, with the
field at fault. Exit status: 0 when every record loaded; 1 when some were skipped; 2 for bad input
(an unreadable file, an unknown name, or the first bad record under ``--strict``).
Registered on the ``kedit`` app by :mod:`kedit.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli.common import reports_errors, stderr_console, stdout_console

SKIPPED = 1
SHOWN_PROBLEMS = 50

data_app = typer.Typer(
    name="data",
    help="Benchmark datasets: list the known ones, check a file, download a file.",
    no_args_is_help=True,
)


@data_app.command("list")
@reports_errors
def list_datasets() -> None:
    """The dataset formats kedit reads and the files it can download."""
    from kedit.data.download import SOURCES
    from kedit.data.registry import DATASETS

    console = stdout_console()
    formats = Table(title="Dataset formats (kedit data check PATH --name NAME)")
    formats.add_column("name")
    formats.add_column("what")
    for spec in DATASETS.values():
        formats.add_row(spec.name, escape(spec.summary))
    console.print(formats)
    files = Table(title="Downloads (kedit data download NAME --out DIR)")
    for column in ("name", "format", "file", "sha256", "from"):
        files.add_column(column)
    for source in SOURCES.values():
        files.add_row(source.name, source.dataset, source.filename,
                      source.sha256[:12] if source.sha256 else "[yellow]unknown[/]", escape(source.origin))
    console.print(files)


@data_app.command()
@reports_errors
def check(
    path: Annotated[Path, typer.Argument(help="The dataset file (JSON list, JSON lines or the file's own layout).")],
    name: Annotated[str, typer.Option("--name", help="Its format (see kedit data list), or 'auto' to detect.")] = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="Stop with an error at the first malformed record.")] = False,
    limit: Annotated[int | None, typer.Option(help="Read only the first N records.")] = None,
) -> None:
    """Load a dataset file; print counts and the records that were skipped, with why."""
    from kedit.data.registry import load_dataset

    loaded = load_dataset(name, path, limit=limit, strict=strict)
    console = stdout_console()
    cases = loaded.cases
    console.print(f"[bold]{escape(str(loaded.path))}[/] read as [bold]{loaded.name}[/]", soft_wrap=True)
    counts = Table(show_header=False)
    counts.add_column("what")
    counts.add_column("count", justify="right")
    rows = [("records read", loaded.records_read), ("records skipped", len(loaded.problems))]
    if loaded.records:
        rows.append(("records loaded", len(loaded.records)))
    else:
        rows += [("cases", len(cases)),
                 ("rephrases", sum(len(case.rephrases) for case in cases)),
                 ("locality probes", sum(len(case.locality) for case in cases)),
                 ("portability probes", sum(len(case.portability) for case in cases))]
    for what, count in rows:
        counts.add_row(what, str(count))
    console.print(counts)
    console.print(f"sha256 {loaded.sha256}")
    if not loaded.problems:
        console.print("[green]every record loaded[/]")
        return
    problems = Table(title=f"Skipped records ({len(loaded.problems)})")
    for column in ("record", "id", "field", "why"):
        problems.add_column(column)
    for problem in loaded.problems[:SHOWN_PROBLEMS]:
        problems.add_row(str(problem.index), escape(problem.record_id or ""), escape(problem.field),
                         escape(problem.message))
    console.print(problems)
    if len(loaded.problems) > SHOWN_PROBLEMS:
        console.print(f"… and {len(loaded.problems) - SHOWN_PROBLEMS} more")
    raise typer.Exit(SKIPPED)


@data_app.command()
@reports_errors
def download(
    name: Annotated[str, typer.Argument(help="A download name (see kedit data list), or any name with --url.")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="The folder to save the file in.")],
    url: Annotated[str | None, typer.Option(help="Fetch from this URL instead (a mirror, or a file kedit does not list).")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 (overrides the recorded one).")] = None,
) -> None:
    """Download one dataset file, verify its sha256 when known, and write it atomically."""
    from kedit.data.download import download as fetch
    from kedit.data.download import resolve_source
    from kedit.paths import sha256_file

    source = resolve_source(name, url, sha256)
    stderr_console().print(f"fetching {escape(source.url)}")
    saved = fetch(name, out, url=url, sha256=sha256)
    checked = "verified" if source.sha256 else "[yellow]not verified: no known checksum[/]"
    stdout_console().print(f"{escape(str(saved))}  sha256 {sha256_file(saved)} ({checked})")
