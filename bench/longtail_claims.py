"""The numbers behind docs/BENCHMARKS.md's long-tail findings, from committed run records (no model).

For each of the paper's three findings, on every probe / edit run folder given:

1. accuracy falls with frequency — probing accuracy of the most frequent bin that holds facts minus
   the least frequent one (two independent groups of facts: each resampled on its own);
2. editing helps but the gap persists — reliability gain (post − pre, paired per fact) in the
   least frequent bin, and the most-minus-least-frequent gap after the edit;
3. one-to-many facts gain least — the gain of one-to-one minus that of one-to-many facts (two groups),
   and for MLE against MEMIT on the same one-to-many facts (paired): the own object and the other objects.

Every number is printed with its 95 % percentile-bootstrap interval (10,000 resamples, seed 0).

    .venv/bin/python bench/longtail_claims.py docs/results/longtail/genes/*/
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kedit.longtail.aggregate import ALL, in_cell
from kedit.longtail.evaluate import EDIT_METRICS
from kedit.reports.intervals import bootstrap, paired_difference
from kedit.reports.longtail import PROBE_VALUES, LongTailRun, gain, read_longtail_run

RESAMPLES, LEVEL, SEED = 10_000, 0.95, 0

Value = Callable[[Mapping[str, Any]], float | None]


def ends(run: LongTailRun) -> tuple[str, str]:
    """The least frequent bin and the most frequent bin that holds facts (a small corpus fills only the lowest)."""
    level = run.levels[0]
    filled = [label for label in run.labels if any(in_cell(r, level, label, ALL) for r in run.records)]
    return filled[0], filled[-1]


def values(run: LongTailRun, value: Value, label: str, cardinality: str = ALL) -> list[float]:
    level = run.levels[0]
    return [v for r in run.records if in_cell(r, level, label, cardinality) if (v := value(r)) is not None]


def two_groups(first: Sequence[float], second: Sequence[float]) -> str:
    """mean(first) − mean(second) with a percentile interval, each group resampled on its own."""
    if not first or not second:
        return "n/a (a group is empty)"
    rng = np.random.default_rng(SEED)
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    draws = (a[rng.integers(0, len(a), (RESAMPLES, len(a)))].mean(axis=1)
             - b[rng.integers(0, len(b), (RESAMPLES, len(b)))].mean(axis=1))
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method="inverted_cdf")
    return f"{a.mean() - b.mean():+.3f} [{low:+.3f}, {high:+.3f}] (n = {len(a)}, {len(b)})"


def one_group(found: Sequence[float]) -> str:
    if not found:
        return "n/a (empty)"
    interval = bootstrap(found, resamples=RESAMPLES, level=LEVEL, seed=SEED)
    return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}] (n = {interval.n})"


def probe_lines(run: LongTailRun) -> list[str]:
    low, high = ends(run)
    lines = []
    for variant in ("plain", "demonstrations"):
        lines.append(f"| {run.model} | probe, {variant} | accuracy {high} − {low} | "
                     f"{two_groups(values(run, PROBE_VALUES[variant], high), values(run, PROBE_VALUES[variant], low))} |")
    for cardinality in ("one-to-one", "one-to-many"):
        value = PROBE_VALUES["demonstrations"]
        lines.append(f"| {run.model} | probe, demonstrations, {cardinality} | accuracy {high} − {low} | "
                     f"{two_groups(values(run, value, high, cardinality), values(run, value, low, cardinality))} |")
    best, own = PROBE_VALUES["demonstrations, best object"], PROBE_VALUES["demonstrations"]
    many = [r for r in run.records if r["longtail"]["cardinality"] == "one-to-many"]
    pairs = [(best(r), own(r)) for r in many if best(r) is not None and own(r) is not None]
    if pairs:
        diff = paired_difference([p[0] for p in pairs], [p[1] for p in pairs], resamples=RESAMPLES, level=LEVEL,
                                 seed=SEED)
        lines.append(f"| {run.model} | probe, demonstrations, one-to-many | best valid object − own object | "
                     f"{diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] (n = {diff.n}) |")
    return lines


def edit_lines(run: LongTailRun) -> list[str]:
    low, high = ends(run)
    name = f"edit, {run.method}"
    post = EDIT_METRICS["post.reliability"]
    lines = [f"| {run.model} | {name} | reliability gain in {low} (paired) | {one_group(values(run, gain('reliability'), low))} |",
             f"| {run.model} | {name} | reliability after, {high} − {low} | "
             f"{two_groups(values(run, post, high), values(run, post, low))} |",
             f"| {run.model} | {name} | gain, one-to-one − one-to-many (all bins) | "
             f"{two_groups(_all(run, gain('reliability'), 'one-to-one'), _all(run, gain('reliability'), 'one-to-many'))} |"]
    return lines


def _all(run: LongTailRun, value: Value, cardinality: str) -> list[float]:
    return [v for label in run.labels for v in values(run, value, label, cardinality)]


def mle_lines(runs: Sequence[LongTailRun]) -> list[str]:
    lines = []
    # paired per (model, benchmark): the same facts only exist within one benchmark
    for model, benchmark in dict.fromkeys((run.model, run.benchmark) for run in runs):
        mle = next((r for r in runs if (r.model, r.benchmark, r.method) == (model, benchmark, "mle")), None)
        memit = next((r for r in runs if (r.model, r.benchmark, r.method) == (model, benchmark, "memit")), None)
        if mle is None or memit is None:
            continue
        for metric in ("post.reliability", "post.other_objects"):
            value = EDIT_METRICS[metric]
            left = {r["case_id"]: value(r) for r in mle.records if r["longtail"]["cardinality"] == "one-to-many"}
            right = {r["case_id"]: value(r) for r in memit.records}
            keys = [k for k in left if k in right and left[k] is not None and right[k] is not None]
            if keys:
                diff = paired_difference([left[k] for k in keys], [right[k] for k in keys], resamples=RESAMPLES,
                                         level=LEVEL, seed=SEED)
                lines.append(f"| {model} | MLE − MEMIT, one-to-many (paired), benchmark {benchmark[:12]} | {metric} | "
                             f"{diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] (n = {diff.n}) |")
    return lines


def relation_lines(run: LongTailRun) -> list[str]:
    """Probing accuracy with demonstrations per relation and bin (means with intervals): the relation mix
    differs between bins, so a trend over bins can come from which relations a bin holds."""
    level = run.levels[0]
    value = PROBE_VALUES["demonstrations"]
    lines = []
    for relation in sorted({r["longtail"]["relation"] for r in run.records}):
        cells = []
        for label in run.labels:
            found = [v for r in run.records if r["longtail"]["relation"] == relation and in_cell(r, level, label, ALL)
                     if (v := value(r)) is not None]
            cells.append(one_group(found).replace("+", "") if found else "empty")
        lines.append(f"| {run.model} | {relation} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [read_longtail_run(path) for path in args.runs]
    print("| model | run | quantity | estimate [95 % interval] |")
    print("| :--- | :--- | :--- | ---: |")
    for run in runs:
        for line in probe_lines(run) if run.kind == "probe" else edit_lines(run):
            print(line)
    for line in mle_lines([run for run in runs if run.kind == "edit"]):
        print(line)
    probes = [run for run in runs if run.kind == "probe"]
    if probes:
        print()
        print("| model | relation (probe, with demonstrations) | " + " | ".join(probes[0].labels) + " |")
        print("| :--- | :--- |" + " ---: |" * len(probes[0].labels))
        for run in probes:
            for line in relation_lines(run):
                print(line)


if __name__ == "__main__":
    main()
