"""What the first screen of a report shows: each mean with its bootstrap interval, per dataset and method.

Everything here is computed from already-read runs (:mod:`kedit.reports.runs`) and drawn nowhere:
the page (:mod:`kedit.reports.comparison_page`) and the plots (:mod:`kedit.reports.plots`) read the
same :class:`Estimate` objects, so a bar, its error bar and the table cell beside it agree.

* An :class:`Estimate` is the value a run recorded (its summary) and, when the run's per-case
  records reproduce that value, the percentile-bootstrap interval over those cases
  (:func:`kedit.reports.intervals.bootstrap`, seeded). A run without records (an unfinished
  sequential run, shown at its last checkpoint) keeps its value and has no interval.
* A :class:`DatasetBlock` is one dataset's rows: the unedited model(s) first, then every edited
  run in the fixed method order of :mod:`kedit.reports.palette`.
* :func:`paired_rows` lists the paired differences of runs that measured the same cases, with
  :mod:`kedit.reports.paired` deciding which runs those are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kedit.reports.comparison import (
    LIFELONG,
    PRE,
    SURVEY,
    SURVEY_PROBABILITY,
    MetricGroup,
    MetricSpec,
    group_value,
    run_labels,
)
from kedit.reports.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    METHOD,
    Interval,
    bootstrap,
    column_mean,
    harmonic_of_column_means,
    indicator,
)
from kedit.reports.paired import paired_metric, same_cases
from kedit.reports.palette import stable_order, variant_numbers
from kedit.reports.records import metric
from kedit.reports.runs import BENCH, CurvePoint, Run

POST = "post"
# Metrics where a smaller value is the better one (the rest: larger is better).
LOWER_IS_BETTER = frozenset({"drawdown"})
AGREEMENT = 1e-9  # how closely the records' mean must reproduce the recorded value to lend it their interval


@dataclass(frozen=True)
class IntervalSettings:
    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = DEFAULT_SEED

    def kwargs(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "level": self.level, "seed": self.seed}

    def describe(self) -> str:
        return f"{self.level * 100:g} % intervals ({METHOD}, {self.resamples:,} resamples, seed {self.seed})"


@dataclass(frozen=True)
class Estimate:
    value: float | None
    interval: Interval | None = None


NO_VALUE = Estimate(None)

# ------------------------------------------------------------------------------------ per-case values


def _survey_protocol(group: MetricGroup) -> str:
    return "probability" if group.name == SURVEY_PROBABILITY.name else "token"


_SURVEY_SOURCE = {  # survey metric -> the per-case metric it is the "exactly 1" rate of, per protocol
    ("token", "success_rate"): "reliability", ("token", "generalization_rate"): "generalization",
    ("probability", "success_rate"): "efficacy_score", ("probability", "generalization_rate"): "paraphrase_score",
}
_ACCURACY = {"token": "locality_accuracy", "probability": "neighborhood_score"}


def _drawdown(record: Mapping[str, Any], protocol: str, held_out: bool) -> float | None:
    if held_out:
        block = (record.get("held_out") or {}).get(protocol) or {}
        pre, post = block.get("pre"), block.get("post")
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (pre, post))
        return float(pre) - float(post) if ok else None
    pre = metric(record, protocol, PRE, _ACCURACY[protocol])
    post = metric(record, protocol, POST, _ACCURACY[protocol])
    return None if pre is None or post is None else pre - post


def case_values(records: Sequence[Mapping[str, Any]], group: MetricGroup, key: str,
                state: str = POST) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
    """The per-case numbers whose statistic is the recorded value, and that statistic; None without any.

    Means over cases for every metric; S is the harmonic mean of the ES, PS and NS means (three
    columns, over the cases that have all three); survey rates are means of per-case indicators
    (and drawdown of per-case pre − post) as :mod:`kedit.evaluate.survey` defines them.
    """
    if group.name in (SURVEY.name, SURVEY_PROBABILITY.name):
        protocol = _survey_protocol(group)
        if key == "drawdown":
            held_out = any("held_out" in record for record in records)
            found = [_drawdown(record, protocol, held_out) for record in records]
        elif (protocol, key) in _SURVEY_SOURCE:
            found = [indicator(metric(record, protocol, POST, _SURVEY_SOURCE[protocol, key])) for record in records]
        else:
            return None
        values = [v for v in found if v is not None]
        return (np.array(values), column_mean) if values else None
    if group.name == LIFELONG.name:
        # edit retention is the mean of the edited cases' token reliability, its rate the fraction
        # equal to 1 (kedit.evaluate.lifelong); the upstream numbers are one value per state
        reliability = [metric(record, "token", POST, "reliability") for record in records]
        if key == "edit_retention":
            found = reliability
        elif key == "edit_retention_rate":
            found = [indicator(value) for value in reliability]
        else:
            return None
        values = [v for v in found if v is not None]
        return (np.array(values), column_mean) if values else None
    if group.name == "probability" and key == "score_s":
        names = ("efficacy_score", "paraphrase_score", "neighborhood_score")
        rows = [[metric(record, group.name, state, name) for name in names] for record in records]
        rows = [row for row in rows if None not in row]
        return (np.array(rows, dtype=np.float64), harmonic_of_column_means) if rows else None
    values = [v for v in (metric(record, group.name, state, key) for record in records) if v is not None]
    return (np.array(values), column_mean) if values else None


def estimate_from(value: float | None, records: Sequence[Mapping[str, Any]], group: MetricGroup, key: str,
                  state: str, settings: IntervalSettings) -> Estimate:
    """``value`` with the records' interval when their statistic reproduces it."""
    if value is None:
        return NO_VALUE
    found = case_values(records, group, key, state) if records else None
    if found is None:
        return Estimate(value)
    values, statistic = found
    interval = bootstrap(values, statistic, **settings.kwargs())
    if abs(interval.estimate - value) > AGREEMENT * max(1.0, abs(value)):
        return Estimate(value)  # the records are not the ones this value was computed from
    return Estimate(value, interval)


@dataclass
class Estimates:
    """Each run's estimates, computed once per (run, group, metric, state) and shared by tables and plots."""

    settings: IntervalSettings = field(default_factory=IntervalSettings)
    _cache: dict[tuple[int, str, str, str], Estimate] = field(default_factory=dict)

    def get(self, run: Run, group: MetricGroup, key: str, state: str = POST) -> Estimate:
        slot = (id(run), group.name, key, state)
        if slot not in self._cache:
            value = group_value(run.metrics, group, key, state)
            self._cache[slot] = estimate_from(value, run.records, group, key, state, self.settings)
        return self._cache[slot]

    def at_checkpoint(self, run: Run, point: CurvePoint, group: MetricGroup, key: str) -> Estimate:
        """A curve point with the interval over the cases measured at that checkpoint, where they were kept."""
        value = group_value(point.summary, group, key)
        records = point.records or final_records_at(run, point.n_edits)
        return estimate_from(value, records, group, key, POST, self.settings)


def final_records_at(run: Run, n_edits: int) -> tuple[Mapping[str, Any], ...]:
    """A sequential run's results.jsonl records, when they were measured after ``n_edits`` edits."""
    counts = {(record.get("edit") or {}).get("n_edits_at_evaluation") for record in run.records}
    return run.records if run.records and counts == {n_edits} else ()


# ------------------------------------------------------------------------------------------- datasets


def dataset_key(run: Run) -> tuple[str, str | None]:
    data = run.data
    return str(data.get("name") or data.get("path") or run.path.name), data.get("sha256")


def dataset_labels(runs: Sequence[Run]) -> dict[tuple[str, str | None], str]:
    """A name per dataset: its registered name, plus a digest prefix where two datasets share a name."""
    keys = list(dict.fromkeys(dataset_key(run) for run in runs))
    names = [name for name, _ in keys]
    return {(name, sha): name if names.count(name) == 1 else f"{name} ({str(sha or '?')[:8]})" for name, sha in keys}


@dataclass(frozen=True)
class Row:
    """One table row and one bar group of a dataset panel: an edited run, or the unedited model."""

    label: str
    method: str | None  # None: the unedited model
    variant: int  # how many runs of the same method come before it in this dataset
    run: Run  # for the unedited model: the run whose "pre" state it is
    cells: Mapping[str, Estimate]

    @property
    def baseline(self) -> bool:
        return self.method is None


@dataclass(frozen=True)
class DatasetBlock:
    label: str
    rows: tuple[Row, ...]

    @property
    def edited(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if not row.baseline)

    @property
    def baselines(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.baseline)


def bench_runs_in_order(runs: Sequence[Run]) -> list[Run]:
    """The bench runs in the fixed method order (runs of one method in the order given)."""
    bench = [run for run in runs if run.kind == BENCH]
    return [bench[index] for index in stable_order([run.method for run in bench])]


def _baseline_key(run: Run) -> tuple[Any, ...]:
    return run.fingerprint or run.model_name, run.n


def headline_blocks(runs: Sequence[Run], group: MetricGroup, specs: Sequence[MetricSpec],
                    estimates: Estimates) -> list[DatasetBlock]:
    """Per dataset (in the order first given): the unedited model(s), then the edited runs with any of ``specs``."""
    names = dataset_labels(runs)
    ordered = bench_runs_in_order(runs)
    blocks = []
    for dataset in dict.fromkeys(dataset_key(run) for run in runs if run.kind == BENCH):
        mine = [run for run in ordered if dataset_key(run) == dataset]
        labels = dict(zip((id(run) for run in mine), run_labels(mine), strict=True))  # unique within the dataset
        edited = []
        for run, variant in zip(mine, variant_numbers([run.method for run in mine]), strict=True):
            cells = {spec.key: estimates.get(run, group, spec.key) for spec in specs}
            if any(cell.value is not None for cell in cells.values()):
                edited.append(Row(labels[id(run)], run.method, variant, run, cells))
        if not edited:
            continue
        baselines: dict[tuple[Any, ...], Run] = {}
        if group.has_baseline:
            for row in edited:
                if any(estimates.get(row.run, group, spec.key, PRE).value is not None for spec in specs):
                    baselines.setdefault(_baseline_key(row.run), row.run)
        reference = list(baselines.values())
        unedited = [
            Row(label, None, 0, run, {spec.key: estimates.get(run, group, spec.key, PRE) for spec in specs})
            for label, run in zip(_unedited_labels(reference), reference, strict=True)
        ]
        blocks.append(DatasetBlock(names[dataset], tuple(unedited + edited)))
    return blocks


def _unedited_labels(runs: Sequence[Run]) -> list[str]:
    """"unedited MODEL", with the case count and then the fingerprint where that alone repeats."""
    namers = (lambda run: f"unedited {run.model_name}", lambda run: f"unedited {run.model_name} (n={run.n})",
              lambda run: f"unedited {run.model_name} (n={run.n}, model {(run.fingerprint or '?')[:8]})")
    labels = [namers[0](run) for run in runs]
    for namer in namers[1:]:
        if len(set(labels)) == len(labels):
            break
        labels = [namer(run) for run in runs]
    return labels


def present_specs(blocks: Sequence[DatasetBlock], specs: Sequence[MetricSpec]) -> list[MetricSpec]:
    """The specs that at least one row of ``blocks`` has a value for."""
    return [spec for spec in specs
            if any(row.cells.get(spec.key, NO_VALUE).value is not None for block in blocks for row in block.rows)]


def best_rows(block: DatasetBlock, key: str, decimals: int = 2) -> set[int]:
    """Indices (in ``block.rows``) of the best edited rows for ``key`` at the shown precision; none when
    fewer than two edited rows have the metric (a best of one says nothing)."""
    scored = [(index, round(row.cells[key].value, decimals)) for index, row in enumerate(block.rows)
              if not row.baseline and row.cells.get(key, NO_VALUE).value is not None]
    if len(scored) < 2:
        return set()
    pick = min if key in LOWER_IS_BETTER else max
    best = pick(value for _, value in scored)
    return {index for index, value in scored if value == best}


# ----------------------------------------------------------------------------------- paired differences


@dataclass(frozen=True)
class PairedRow:
    dataset: str
    first: Row
    second: Row
    n: int  # shared cases (of the first metric that has them)
    differences: Mapping[str, Interval | None]  # metric key -> first − second, paired


def paired_rows(blocks: Sequence[DatasetBlock], group: MetricGroup, specs: Sequence[MetricSpec],
                settings: IntervalSettings) -> list[PairedRow]:
    """Every pair of edited runs of one dataset that measured the same cases, earlier − later in table order."""
    rows = []
    for block in blocks:
        edited = block.edited
        for i, first in enumerate(edited):
            for second in edited[i + 1:]:
                if not (first.run.records and second.run.records and same_cases(first.run, second.run)):
                    continue
                differences = {spec.key: paired_metric(first.run, second.run, group.name, spec.key, **settings.kwargs())
                               for spec in specs}
                counts = [d.n for d in differences.values() if d is not None]
                if counts:
                    rows.append(PairedRow(block.label, first, second, max(counts), differences))
    return rows


# -------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurveLine:
    """One metric of one sequential run against the number of edits, each point with its estimate."""

    label: str
    method: str
    variant: int
    points: tuple[tuple[int, Estimate], ...]  # (n_edits, estimate), ascending, points without a value left out


def curve_lines(runs: Sequence[Run], group: MetricGroup, key: str, estimates: Estimates) -> list[CurveLine]:
    sequential = [run for run in bench_runs_in_order(runs) if run.curve]
    labels = dict(zip((id(run) for run in sequential), run_labels(sequential), strict=True))
    lines = []
    for run, variant in zip(sequential, variant_numbers([run.method for run in sequential]), strict=True):
        points = tuple((point.n_edits, found) for point in run.curve
                       if (found := estimates.at_checkpoint(run, point, group, key)).value is not None)
        if points:
            lines.append(CurveLine(labels[id(run)], run.method, variant, points))
    return lines


def log_spaced(runs: Sequence[Run]) -> bool:
    """Whether the sequential runs' checkpoints are log-spaced (``sequential:log``): then x is drawn on a log axis."""
    specs = [str(run.info.get("mode_spec") or "") for run in runs if run.curve]
    return any(spec.startswith("sequential:log") for spec in specs)
