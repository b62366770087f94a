"""PNG plots of a run, drawn with matplotlib's Agg canvas.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never through pyplot, so
no global backend or figure registry is touched and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kedit.paths import atomic_path
from kedit.reports.records import CaseRow, case_row, metric_rows

CASE_PLOT = "case_probabilities.png"
METRICS_PLOT = "metric_means.png"
BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#1f77b4"  # grey = unedited, blue = edited
# The headline metrics of each protocol, in reading order; others stay in the tables.
HEADLINE_METRICS = {
    "token": ("reliability", "generalization", "portability", "locality"),
    "probability": ("efficacy_score", "paraphrase_score", "neighborhood_score", "score_s"),
}


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def _bar_value(value: float | None) -> float:
    return 0.0 if value is None else value


def _paired_bars(axes: Axes, labels: Sequence[str], before: Sequence[float | None],
                 after: Sequence[float | None], ylabel: str) -> None:
    """Grey/blue bar pairs on a 0-1 axis; a missing value is drawn as 'n/a' instead of a bar."""
    positions = np.arange(len(labels))
    width = 0.38
    for offset, values, colour, name in ((-width / 2, before, BEFORE_COLOUR, "before edit"),
                                         (width / 2, after, AFTER_COLOUR, "after edit")):
        axes.bar(positions + offset, [_bar_value(v) for v in values], width, color=colour, label=name)
        for x, value in zip(positions + offset, values, strict=True):
            axes.annotate("n/a" if value is None else f"{value:.2f}", (x, _bar_value(value)),
                          ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 1.3)  # headroom above 1.0 for the value labels and the legend
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def _case_label(row: CaseRow) -> str:
    return f"{row.subject}\n→ {row.target_new}"


def plot_case_probabilities(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Per fact: P(new object) and P(true object), before and after its edit (two panels)."""
    rows = [case_row(record) for record in records]
    labels = [_case_label(row) for row in rows]
    figure = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 7.5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    _paired_bars(top, labels, [r.p_new_pre for r in rows], [r.p_new_post for r in rows], "P(new object)")
    top.set_title("The new object should become likely …", fontsize=10, loc="left")
    top.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    _paired_bars(bottom, labels, [r.p_true_pre for r in rows], [r.p_true_post for r in rows], "P(true object)")
    bottom.set_title("… and the old one unlikely", fontsize=10, loc="left")
    figure.suptitle("Probability of the objects after each edit prompt")
    return _save(figure, Path(path))


def plot_metric_means(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Mean headline metrics before and after, one panel per protocol (protocols are never mixed)."""
    metrics = summary.get("metrics") or summary
    protocols = [p for p in HEADLINE_METRICS if p in metrics]
    figure = Figure(figsize=(5.0 * max(1, len(protocols)), 4.2))
    panels = figure.subplots(1, max(1, len(protocols)), squeeze=False)[0]
    for axes, protocol in zip(panels, protocols, strict=False):
        rows = {row.name: row for row in metric_rows(metrics, protocol)}
        names = [name for name in HEADLINE_METRICS[protocol] if name in rows]
        _paired_bars(axes, names, [rows[n].pre for n in names], [rows[n].post for n in names], "mean over facts")
        axes.set_title(f"{protocol} protocol", fontsize=10)
    panels[0].legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    figure.suptitle(f"Metric means over {summary.get('cases', '?')} facts")
    return _save(figure, Path(path))


def write_plots(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], directory: str | Path) -> list[Path]:
    """Every plot of a run into ``directory``; returns the files written."""
    directory = Path(directory)
    return [
        plot_case_probabilities(records, directory / CASE_PLOT),
        plot_metric_means(summary, directory / METRICS_PLOT),
    ]
