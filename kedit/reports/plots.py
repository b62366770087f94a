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
from matplotlib.ticker import FuncFormatter, NullFormatter

from kedit.paths import atomic_path
from kedit.reports.comparison import Curve, MetricGroup, Series
from kedit.reports.records import CaseRow, case_row, metric_rows

CASE_PLOT = "case_probabilities.png"
METRICS_PLOT = "metric_means.png"
BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#1f77b4"  # grey = unedited, blue = edited
# One colour per run in comparisons (matplotlib's tab10 without its grey, which marks unedited models).
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
# For reports of more runs than that: matplotlib's tab20 without its greys (grey marks unedited models).
MANY_RUN_COLOURS = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
                    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#bcbd22", "#dbdb8d",
                    "#17becf", "#9edae5")
MAX_EDIT_TICKS = 8
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


# ------------------------------------------------------------------------------------ comparisons of runs


def run_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per run label, in the order given, so one run has one colour in every plot of a report."""
    palette = RUN_COLOURS if len(labels) <= len(RUN_COLOURS) else MANY_RUN_COLOURS
    return {label: palette[index % len(palette)] for index, label in enumerate(labels)}


def _value_range(values: Sequence[float]) -> tuple[float, float]:
    """[0, 1] for rates; widened (never narrowed) when a metric such as drawdown leaves it."""
    low, high = min([0.0, *values]), max([1.0, *values])
    span = high - low
    # A little room below 0 keeps points lying on 0 visible above the axis line.
    return low - 0.03 * span, high + 0.25 * span  # headroom above for labels and legend


def plot_group_bars(series: Sequence[Series], group: MetricGroup, colours: Mapping[str, str],
                    path: str | Path) -> Path:
    """Grouped bars: one group per headline metric of ``group``, one bar per run (unedited models grey, hatched).

    A missing value is written as 'n/a' on the axis instead of drawing a bar of height 0.
    """
    specs = [spec for spec in group.headline if any(s.values.get(spec.key) is not None for s in series)]
    figure = Figure(figsize=(max(6.0, 0.5 * len(series) * len(specs) + 2.5), 4.5))
    axes = figure.subplots()
    positions = np.arange(len(specs))
    width = 0.8 / max(1, len(series))
    present = [v for s in series for spec in specs if (v := s.values.get(spec.key)) is not None]
    for index, row in enumerate(series):
        offsets = positions - 0.4 + width * (index + 0.5)
        values = [row.values.get(spec.key) for spec in specs]
        colour = BEFORE_COLOUR if row.baseline else colours.get(row.label, AFTER_COLOUR)
        axes.bar(offsets, [_bar_value(v) for v in values], width, color=colour, label=row.label,
                 hatch="//" if row.baseline else None, edgecolor="white" if row.baseline else colour)
        for x, value in zip(offsets, values, strict=True):
            below = value is not None and value < 0  # a negative bar (drawdown) is labelled under its end
            axes.annotate("n/a" if value is None else f"{value:.2f}", (x, _bar_value(value)),
                          ha="center", va="top" if below else "bottom", fontsize=7,
                          xytext=(0, -2 if below else 2), textcoords="offset points")
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_xticks(positions, [spec.label for spec in specs])
    axes.set_ylim(*_value_range(present))
    axes.set_ylabel("mean over cases")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(loc="upper center", ncol=min(4, len(series)), fontsize=8, frameon=False)
    axes.set_title(group.title, fontsize=10)
    return _save(figure, Path(path))


def plot_group_curves(curves_by_metric: Sequence[tuple[str, Sequence[Curve]]], title: str,
                      colours: Mapping[str, str], path: str | Path) -> Path:
    """One panel per metric (``(label, curves)`` pairs): metric against the number of edits, log x axis.

    Checkpoints at 0 edits cannot sit on a log axis; they stay in the tables.
    """
    panels = [(label, curves) for label, curves in curves_by_metric if curves]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.6 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes, (label, curves) in zip(grid.flat, panels, strict=False):
        values = []
        for curve in curves:
            points = [(n, v) for n, v in curve.points if n > 0]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            values.extend(ys)
            axes.plot(xs, ys, marker="o", markersize=3, color=colours.get(curve.label, AFTER_COLOUR), label=curve.label)
        axes.set_xscale("log")
        edits = sorted({n for curve in curves for n, _ in curve.points if n > 0})
        if len(edits) <= MAX_EDIT_TICKS:  # few checkpoints: label each one
            axes.set_xticks(edits)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 1000, not 10^3
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_ylim(*_value_range(values))
        axes.set_xlabel("number of edits")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7, frameon=False)
    for axes in list(grid.flat)[len(panels):]:
        axes.set_visible(False)
    figure.suptitle(title)
    return _save(figure, Path(path))
