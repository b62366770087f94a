"""PNG figures of the long-tail section (matplotlib object API, no pyplot, no display).

Every figure puts the frequency bins on the x axis, labelled with the axis they belong to
("subject popularity bin (PubMed articles linked to the subject)" or "co-occurrence bin (…)"), draws
each mean with its bootstrap interval as an error bar, and writes ``empty`` where a bin has no facts
instead of leaving a gap that reads as zero.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kedit.errors import KeditError
from kedit.longtail.aggregate import ALL, Cell, CellSettings
from kedit.longtail.evaluate import EDIT_METRICS
from kedit.reports.longtail import (
    PROBE_VALUES,
    Benchmark,
    LongTailRun,
    bin_axis_label,
    group_benchmarks,
    level_cells,
    longtail_sections,
    read_longtail_run,
)
from kedit.reports.palette import UNEDITED_COLOUR, method_colour, method_rank
from kedit.reports.plots import _save
from kedit.reports.runs import RunFailure

EMPTY_TEXT = "empty"


@dataclass(frozen=True)
class Series:
    """One set of bars (or points): a name, how it looks, and its cells (one per bin, in order)."""

    name: str
    colour: str
    cells: tuple[Cell, ...]
    hatch: str = ""


def _mark_empty(axes: Axes, x: float, width: float) -> None:
    axes.text(x, 0.02, EMPTY_TEXT, rotation=90, ha="center", va="bottom", fontsize=7, color="#555555")


def bar_panel(axes: Axes, labels: Sequence[str], series: Sequence[Series], title: str, xlabel: str) -> None:
    """Grouped bars, a group per bin; error bars from the cells' intervals; ``empty`` where a cell has no facts."""
    positions = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    # a bin where no series has a fact gets one "empty" in its middle; otherwise each missing bar its own
    bare = {index for index in range(len(labels)) if all(entry.cells[index].estimate is None for entry in series)}
    for index in bare:
        _mark_empty(axes, positions[index], 0.0)
    for number, entry in enumerate(series):
        xs = positions - 0.4 + width * (number + 0.5)
        values = [0.0 if c.estimate is None else c.estimate for c in entry.cells]
        axes.bar(xs, values, width, color=entry.colour, label=entry.name, hatch=entry.hatch or None,
                 edgecolor="white" if entry.hatch else entry.colour, linewidth=0.4, zorder=2)
        for index, (x, found) in enumerate(zip(xs, entry.cells, strict=True)):
            if found.estimate is None:
                if index not in bare:
                    _mark_empty(axes, x, width)
                continue
            axes.errorbar([x], [found.estimate], yerr=[[found.estimate - found.low], [found.high - found.estimate]],
                          fmt="none", ecolor="black", elinewidth=0.8, capsize=2, zorder=3)
    axes.set_xticks(positions, list(labels), fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel(xlabel, fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def line_panel(axes: Axes, labels: Sequence[str], series: Sequence[tuple[Series, str]], title: str,
               xlabel: str) -> None:
    """Points joined per series (``(series, line style)``), error bars, ``empty`` at bins without facts."""
    positions = np.arange(len(labels))
    offsets = np.linspace(-0.12, 0.12, max(1, len(series))) if len(series) > 1 else [0.0]
    empty_marked: set[int] = set()
    for (entry, style), offset in zip(series, offsets, strict=True):
        points = [(x + offset, c) for x, c in zip(positions, entry.cells, strict=True) if c.estimate is not None]
        if points:
            xs, found = zip(*points, strict=True)
            ys = [c.estimate for c in found]
            axes.errorbar(xs, ys, yerr=[[c.estimate - c.low for c in found], [c.high - c.estimate for c in found]],
                          color=entry.colour, linestyle=style, marker="o", markersize=3.5, capsize=2,
                          elinewidth=0.8, label=entry.name, zorder=3)
        for index, c in enumerate(entry.cells):
            if c.estimate is None and index not in empty_marked:
                empty_marked.add(index)
                _mark_empty(axes, positions[index], 0.0)
    axes.set_xticks(positions, list(labels), fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_xlim(-0.5, len(labels) - 0.5)
    axes.set_xlabel(xlabel, fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)


def _figure(panels: int, height: float = 3.8, width: float = 4.6) -> tuple[Figure, list[Axes]]:
    columns = min(3, panels)
    rows = -(-panels // columns)
    figure = Figure(figsize=(width * columns, height * rows + 0.9), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
    axes = list(grid.flat)
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def _legend(figure: Figure, axes: Sequence[Axes]) -> None:
    handles: dict[str, object] = {}
    for panel in axes:
        for handle, label in zip(*panel.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
                      fontsize=8, frameon=False)


def probe_figure(bench: Benchmark, level: str, settings: CellSettings) -> Figure:
    """Probing accuracy by bin, a line per model and prompt (no demonstrations: dotted; with: solid)."""
    figure, (axes,) = _figure(1, 4.2, 8.0)
    series = []
    for run in bench.probes:
        colour = method_colour(run.model)
        for variant, style in (("plain", ":"), ("demonstrations", "-")):
            name = f"{run.model}, " + ("no demonstrations" if variant == "plain" else "with demonstrations")
            cells = tuple(level_cells(run, PROBE_VALUES[variant], variant, level, settings))
            series.append((Series(name, colour, cells), style))
    first = bench.first
    line_panel(axes, first.labels, series, "token accuracy before editing (own object)",
               bin_axis_label(first.axis, level))
    axes.set_ylabel("mean token accuracy")
    _legend(figure, [axes])
    figure.suptitle(f"Probing by bin — {bench.title}", fontsize=10)
    return figure


def cardinality_figure(bench: Benchmark, level: str, settings: CellSettings) -> Figure:
    """Per model: one-to-one vs one-to-many by bin (with demonstrations), own object and best valid object."""
    figure, axes = _figure(len(bench.probes))
    first = bench.first
    for panel, run in zip(axes, bench.probes, strict=True):
        series = [
            Series("one-to-one", "#1f77b4",
                   tuple(level_cells(run, PROBE_VALUES["demonstrations"], "acc", level, settings, "one-to-one"))),
            Series("one-to-many, own object", "#ff7f0e",
                   tuple(level_cells(run, PROBE_VALUES["demonstrations"], "acc", level, settings, "one-to-many"))),
            Series("one-to-many, best valid object", "#ff7f0e",
                   tuple(level_cells(run, PROBE_VALUES["demonstrations, best object"], "best", level, settings,
                                     "one-to-many")), hatch="//"),
        ]
        bar_panel(panel, first.labels, series, run.model, bin_axis_label(first.axis, level))
    axes[0].set_ylabel("mean token accuracy (with demonstrations)")
    _legend(figure, axes)
    figure.suptitle(f"One-to-one vs one-to-many before editing — {bench.title}", fontsize=10)
    return figure


def _edits(bench: Benchmark) -> list[LongTailRun]:
    return sorted(bench.edits, key=lambda run: (run.model, method_rank(run.method)))


def edit_figure(bench: Benchmark, level: str, settings: CellSettings) -> Figure:
    """Per method: reliability before (grey) and after (method colour) by bin, and generalization after."""
    runs = _edits(bench)
    figure, axes = _figure(len(runs))
    first = bench.first
    for panel, run in zip(axes, runs, strict=True):
        colour = method_colour(run.method)
        series = [
            Series("before editing: reliability", UNEDITED_COLOUR,
                   tuple(level_cells(run, EDIT_METRICS["pre.reliability"], "pre", level, settings))),
            Series("after: reliability", colour,
                   tuple(level_cells(run, EDIT_METRICS["post.reliability"], "post", level, settings))),
            Series("after: generalization", colour,
                   tuple(level_cells(run, EDIT_METRICS["post.generalization"], "gen", level, settings)), hatch="//"),
        ]
        bar_panel(panel, first.labels, series, f"{run.method} ({run.model})", bin_axis_label(first.axis, level))
    axes[0].set_ylabel("mean token accuracy")
    _legend(figure, axes)
    figure.suptitle(f"Before and after editing, by bin — {bench.title}", fontsize=10)
    return figure


def edit_cardinality_figure(bench: Benchmark, level: str, settings: CellSettings) -> Figure:
    """Per method: reliability after the edit for one-to-one and one-to-many facts, and the other objects."""
    runs = _edits(bench)
    figure, axes = _figure(len(runs))
    first = bench.first
    for panel, run in zip(axes, runs, strict=True):
        series = [
            Series("one-to-one: reliability after", "#1f77b4",
                   tuple(level_cells(run, EDIT_METRICS["post.reliability"], "r", level, settings, "one-to-one"))),
            Series("one-to-many: reliability after", "#ff7f0e",
                   tuple(level_cells(run, EDIT_METRICS["post.reliability"], "r", level, settings, "one-to-many"))),
            Series("one-to-many: other objects after", "#ff7f0e",
                   tuple(level_cells(run, EDIT_METRICS["post.other_objects"], "o", level, settings, "one-to-many")),
                   hatch="//"),
        ]
        bar_panel(panel, first.labels, series, f"{run.method} ({run.model})", bin_axis_label(first.axis, level))
    axes[0].set_ylabel("mean token accuracy after the edit")
    _legend(figure, axes)
    figure.suptitle(f"One-to-one vs one-to-many after editing — {bench.title}", fontsize=10)
    return figure


def levels_figure(bench: Benchmark, settings: CellSettings) -> Figure:
    """Document- and sentence-level bins side by side: probing (with demonstrations) and reliability after edits."""
    levels = bench.first.levels
    figure, axes = _figure(len(levels), 4.0)
    first = bench.first
    for panel, level in zip(axes, levels, strict=True):
        series = []
        for run in bench.probes:
            series.append((Series(f"probe {run.model}, with demonstrations", method_colour(run.model),
                                  tuple(level_cells(run, PROBE_VALUES["demonstrations"], "p", level, settings))), "-"))
        for run in _edits(bench):
            series.append((Series(f"{run.method} ({run.model}): reliability after", method_colour(run.method),
                                  tuple(level_cells(run, EDIT_METRICS["post.reliability"], "r", level, settings, ALL))),
                           "--"))
        line_panel(panel, first.labels, series, f"{level}-level bins", bin_axis_label(first.axis, level))
    axes[0].set_ylabel("mean token accuracy")
    _legend(figure, axes)
    figure.suptitle(f"Document vs sentence level — {bench.title}", fontsize=10)
    return figure


def write_longtail_plots(bench: Benchmark, out_dir: Path, stem: str, settings: CellSettings) -> dict[str, str]:
    """Every figure the benchmark's runs allow; returns role -> file name (inside ``out_dir``)."""
    level = bench.first.levels[0]
    written: dict[str, str] = {}
    jobs = []
    if bench.probes:
        jobs += [("probe", probe_figure), ("cardinality", cardinality_figure)]
    if bench.edits:
        jobs += [("edit", edit_figure), ("edit_cardinality", edit_cardinality_figure)]
    for role, draw in jobs:
        name = f"longtail_{stem}_{role}.png"
        _save(draw(bench, level, settings), out_dir / name)
        written[role] = name
    if len(bench.first.levels) > 1:
        name = f"longtail_{stem}_levels.png"
        _save(levels_figure(bench, settings), out_dir / name)
        written["levels"] = name
    return written


@dataclass(frozen=True)
class LongTailPart:
    """The long-tail blocks of a report page, the plots written for them and the folders not read."""

    sections: tuple[str, ...]
    plots: tuple[Path, ...]
    runs: tuple[LongTailRun, ...]
    failures: tuple[RunFailure, ...]


def _stem(bench: Benchmark) -> str:
    name = str(bench.first.manifest.get("source") or Path(str(bench.first.data.get("path") or "bench")).name)
    # a benchmark's key is its cases' sha256; runs written before it was recorded are keyed by their path
    digest = bench.key if re.fullmatch(r"[0-9a-f]+", bench.key) else hashlib.sha256(bench.key.encode()).hexdigest()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + f"-{digest[:6]}"


def write_longtail_part(directories: Iterable[Path], out_dir: Path, settings: CellSettings) -> LongTailPart:
    """Read the long-tail run folders, draw their figures into ``out_dir`` and return the page's blocks.

    A folder that cannot be read (an unfinished run) is returned as a failure, as the rest of the report
    does; long-tail plots of an earlier report in ``out_dir`` that this one does not draw are removed.
    """
    runs, failures = [], []
    for directory in directories:
        try:
            runs.append(read_longtail_run(Path(directory)))
        except (KeditError, OSError, ValueError) as error:
            failures.append(RunFailure(Path(directory), str(error)))
    plots: dict[str, dict[str, str]] = {}
    for bench in group_benchmarks(runs):
        plots[bench.key] = write_longtail_plots(bench, out_dir, _stem(bench), settings)
    written = {name for roles in plots.values() for name in roles.values()}
    for stale in out_dir.glob("longtail_*.png"):
        if stale.name not in written:
            stale.unlink()
    sections = tuple(longtail_sections(runs, plots, settings)) if runs else ()
    return LongTailPart(sections, tuple(out_dir / name for name in sorted(written)), tuple(runs), tuple(failures))
