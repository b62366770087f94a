"""``kedit report``: read run directories, draw the plots, write ``report.md`` and ``report.html``.

The PNGs are written beside ``report.md`` (which links them by name); ``report.html`` is the same
page with every PNG embedded, so it can be mailed or archived as one file. Each file is written
atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import KeditError
from kedit.paths import atomic_path
from kedit.reports.comparison import CURVE_GROUPS, GROUPS
from kedit.reports.comparison_page import (
    bars_plot_name,
    comparison_report,
    curves_plot_name,
    groups_with_lines,
)
from kedit.reports.headline import (
    Estimates,
    IntervalSettings,
    curve_lines,
    headline_blocks,
    log_spaced,
    present_specs,
)
from kedit.reports.html import markdown_to_html
from kedit.reports.plots import plot_dataset_panels, plot_metric_curves
from kedit.reports.runs import Run, RunFailure, read_runs
from kedit.runs import RESULTS_FILE, RUN_FILE

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


@dataclass(frozen=True)
class ComparisonReport:
    """What ``write_comparison_report`` wrote and what it could not read."""

    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    runs: tuple[Run, ...]
    failures: tuple[RunFailure, ...]


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _plot_names() -> set[str]:
    return {name for group in CURVE_GROUPS for name in (bars_plot_name(group), curves_plot_name(group))}


def write_comparison_plots(runs: list[Run], out_dir: Path, estimates: Estimates) -> list[Path]:
    """Per metric group: bars with one panel per dataset, and curves (a panel per metric) where runs are
    sequential; stale plots of ours in ``out_dir`` are removed."""
    written = []
    for group in GROUPS:
        blocks = headline_blocks(runs, group, group.headline, estimates)
        if blocks and (specs := present_specs(blocks, group.headline)):
            written.append(plot_dataset_panels(blocks, specs, f"{group.title}: mean after editing",
                                               out_dir / bars_plot_name(group)))
    log_x = log_spaced(runs)
    for group in groups_with_lines(runs, estimates):
        panels = [(spec.label, curve_lines(runs, group, spec.key, estimates)) for spec in group.headline]
        written.append(plot_metric_curves(panels, f"{group.title}: sequential editing", log_x,
                                          out_dir / curves_plot_name(group)))
    # A plot left by an earlier report in this folder would sit beside the page without being on it.
    for name in _plot_names() - {path.name for path in written}:
        (out_dir / name).unlink(missing_ok=True)
    return written


def write_comparison_report(run_dirs: Iterable[str | Path], out_dir: str | Path, command: str | None = None,
                            settings: IntervalSettings | None = None) -> ComparisonReport:
    """Compare the runs in ``run_dirs`` and write the report into ``out_dir`` (created if needed).

    Unreadable folders do not stop the report: they are listed on it, with the reason, and
    returned in ``failures``. ``settings``: the bootstrap's resamples, level and seed (default
    10,000, 95 %, 0), stated on the page.
    """
    out_dir = Path(out_dir)
    if (out_dir / RUN_FILE).exists() or (out_dir / RESULTS_FILE).exists():
        raise KeditError(f"--out {out_dir} is a run directory; write the report to a folder of its own")
    # the long-tail part is imported here: kedit.longtail.aggregate reads kedit.reports.intervals
    from kedit.longtail.aggregate import CellSettings
    from kedit.reports.longtail import is_longtail_run, is_probe_run
    from kedit.reports.longtail_plots import write_longtail_part

    run_dirs = [Path(directory) for directory in run_dirs]
    # long-tail probe folders are read only by the long-tail part; edit folders are bench runs too
    runs, failures = read_runs([directory for directory in run_dirs if not is_probe_run(directory)])
    out_dir.mkdir(parents=True, exist_ok=True)
    estimates = Estimates(settings or IntervalSettings())  # each interval computed once, for tables and plots
    plots = write_comparison_plots(runs, out_dir, estimates)
    longtail = write_longtail_part([d for d in run_dirs if is_longtail_run(d)], out_dir,
                                   CellSettings(**estimates.settings.kwargs()))
    failures = [*failures, *longtail.failures]
    plots = [*plots, *longtail.plots]
    markdown = comparison_report(runs, failures, {path.name: path.name for path in plots}, command, estimates,
                                 extra_sections=longtail.sections,
                                 extra_runs=sum(run.kind == "probe" for run in longtail.runs))
    title = markdown.splitlines()[0].removeprefix("# ")
    markdown_path = _write_text(out_dir / MARKDOWN_FILE, markdown)
    html_path = _write_text(out_dir / HTML_FILE, markdown_to_html(markdown, out_dir, title))
    return ComparisonReport(markdown_path, html_path, tuple(plots), tuple(runs), tuple(failures))
