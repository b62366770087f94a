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
from kedit.reports.comparison import MetricSpec
from kedit.reports.headline import CurveLine, DatasetBlock, Estimate
from kedit.reports.palette import UNEDITED_COLOUR, hatch, line_style, method_colour
from kedit.reports.records import CaseRow, case_row, metric_rows

CASE_PLOT = "case_probabilities.png"
METRICS_PLOT = "metric_means.png"
BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#1f77b4"  # grey = unedited, blue = edited
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


def _value_range(values: Sequence[float]) -> tuple[float, float]:
    """[0, 1] for rates; widened (never narrowed) when a metric such as drawdown leaves it."""
    low, high = min([0.0, *values]), max([1.0, *values])
    span = high - low
    # A little room below 0 keeps points lying on 0 visible above the axis line.
    return low - 0.03 * span, high + 0.06 * span


def _extent(estimate: Estimate) -> list[float]:
    """The value and its interval's ends: what the y axis must show of one estimate."""
    if estimate.value is None:
        return []
    if estimate.interval is None:
        return [estimate.value]
    return [estimate.value, estimate.interval.low, estimate.interval.high]


def _error_bar(axes: Axes, x: float, estimate: Estimate) -> None:
    if estimate.interval is None or estimate.value is None:
        return
    below, above = estimate.value - estimate.interval.low, estimate.interval.high - estimate.value
    axes.errorbar([x], [estimate.value], yerr=[[max(0.0, below)], [max(0.0, above)]], fmt="none",
                  ecolor="black", elinewidth=0.9, capsize=2.5, zorder=3)


def _figure_legend(figure: Figure, grid: Sequence[Axes]) -> None:
    """One legend for the whole figure, below the panels, each label once (in first-drawn order)."""
    handles: dict[str, Any] = {}
    for axes in grid:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside lower center",
                      ncol=min(3, len(handles)), fontsize=8, frameon=False)


def _dataset_panel(axes: Axes, block: DatasetBlock, specs: Sequence[MetricSpec]) -> list[float]:
    """Bars of one dataset (a group per metric, a bar per edited run) and the unedited model as lines."""
    positions = np.arange(len(specs))
    edited = block.edited
    width = 0.8 / max(1, len(edited))
    seen: list[float] = []
    for index, row in enumerate(edited):
        offsets = positions - 0.4 + width * (index + 0.5)
        cells = [row.cells.get(spec.key) or Estimate(None) for spec in specs]
        colour, pattern = method_colour(row.method or ""), hatch(row.variant)
        axes.bar(offsets, [_bar_value(cell.value) for cell in cells], width, color=colour, label=row.label,
                 hatch=pattern or None, edgecolor="white" if pattern else colour, linewidth=0.4, zorder=2)
        for x, cell in zip(offsets, cells, strict=True):
            if cell.value is None:
                axes.annotate("n/a", (x, 0.0), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                              textcoords="offset points")
            _error_bar(axes, x, cell)
            seen.extend(_extent(cell))
    for index, row in enumerate(block.baselines):
        for number, (position, spec) in enumerate(zip(positions, specs, strict=True)):
            cell = row.cells.get(spec.key) or Estimate(None)
            if cell.value is None:
                continue
            axes.hlines(cell.value, position - 0.45, position + 0.45, colors=UNEDITED_COLOUR,
                        linestyles=line_style(index + 1), linewidth=1.8, zorder=4,
                        label=row.label if number == 0 else None)
            seen.append(cell.value)
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_xticks(positions, [spec.label for spec in specs], fontsize=8)
    axes.set_title(block.label, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    return seen


def plot_dataset_panels(blocks: Sequence[DatasetBlock], specs: Sequence[MetricSpec], title: str,
                        path: str | Path) -> Path:
    """:func:`dataset_figure` as a PNG."""
    return _save(dataset_figure(blocks, specs, title), Path(path))


def dataset_figure(blocks: Sequence[DatasetBlock], specs: Sequence[MetricSpec], title: str) -> Figure:
    """One panel per dataset (shared y axis): bars per metric and run in the fixed method colours, the
    bootstrap interval as an error bar on every bar that has one, the unedited model as a grey line."""
    bars = [max(1, len(block.edited)) * len(specs) for block in blocks]
    width = sum(max(3.2, 0.32 * count + 1.2) for count in bars)
    figure = Figure(figsize=(max(6.0, width), 4.6), layout="constrained")
    grid = figure.subplots(1, len(blocks), sharey=True, squeeze=False, width_ratios=[max(1, c) for c in bars])[0]
    seen: list[float] = []
    for axes, block in zip(grid, blocks, strict=True):
        seen.extend(_dataset_panel(axes, block, specs))
    grid[0].set_ylim(*_value_range(seen))
    grid[0].set_ylabel("mean over cases")
    _figure_legend(figure, grid)
    figure.suptitle(title, fontsize=11)
    return figure


def _contiguous(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, end) spans of consecutive True flags."""
    spans, start = [], None
    for index, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            spans.append((start, index))
            start = None
    return spans


def _curve(axes: Axes, line: CurveLine, log_x: bool) -> list[float]:
    points = [(n, e) for n, e in line.points if n > 0 or not log_x]
    if not points:
        return []
    xs = [n for n, _ in points]
    estimates = [e for _, e in points]
    colour = method_colour(line.method)
    axes.plot(xs, [e.value for e in estimates], marker="o", markersize=3, color=colour,
              linestyle=line_style(line.variant), label=line.label, zorder=3)
    for start, end in _contiguous([e.interval is not None for e in estimates]):
        if end - start == 1:  # a single checkpoint with an interval: an error bar
            _error_bar(axes, xs[start], estimates[start])
        else:
            axes.fill_between(xs[start:end], [e.interval.low for e in estimates[start:end]],
                              [e.interval.high for e in estimates[start:end]], color=colour, alpha=0.18,
                              linewidth=0, zorder=2)
    return [v for e in estimates for v in _extent(e)]


def plot_metric_curves(panels: Sequence[tuple[str, Sequence[CurveLine]]], title: str, log_x: bool,
                       path: str | Path) -> Path:
    """:func:`curves_figure` as a PNG."""
    return _save(curves_figure(panels, title, log_x), Path(path))


def curves_figure(panels: Sequence[tuple[str, Sequence[CurveLine]]], title: str, log_x: bool) -> Figure:
    """One panel per metric (``(label, lines)`` pairs): metric against the number of edits, in the method
    colours; bands (or an error bar) where checkpoints have intervals. ``log_x`` for log-spaced runs,
    whose checkpoints at 0 edits cannot sit on the axis (they stay in the tables)."""
    panels = [(label, lines) for label, lines in panels if lines]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.4 * rows + 0.8), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True)
    for axes, (label, lines) in zip(grid.flat, panels, strict=False):
        values = [v for line in lines for v in _curve(axes, line, log_x)]
        edits = sorted({n for line in lines for n, _ in line.points if n > 0 or not log_x})
        if log_x:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())
        if len(edits) <= MAX_EDIT_TICKS:  # few checkpoints: label each one
            axes.set_xticks(edits)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 1000, not 10^3
        axes.set_ylim(*_value_range(values))
        axes.set_xlabel("number of edits" + (" (log scale)" if log_x else ""))
        axes.set_title(label, fontsize=10)
        axes.grid(alpha=0.3, which="both")
    for axes in list(grid.flat)[len(panels):]:
        axes.set_visible(False)
    _figure_legend(figure, list(grid.flat)[: len(panels)])
    figure.suptitle(title, fontsize=11)
    return figure
