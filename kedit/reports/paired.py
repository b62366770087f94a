"""Two runs on the same cases, compared metric by metric with bootstrap intervals (``kedit report --compare``).

Each row: the two means with their own intervals, and the difference first − second with its
*paired* interval (:func:`kedit.reports.intervals.paired_difference`), computed over the cases
both runs have the metric for. Runs of different case sets are refused: their difference is not
a paired one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kedit.errors import KeditError
from kedit.reports.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    bootstrap,
    paired_columns,
    paired_difference,
    per_case,
)
from kedit.reports.records import metric
from kedit.reports.runs import Run

# (protocol, metric) read from each record's edited state, in table order
COMPARED_METRICS = (
    ("token", "reliability"), ("token", "generalization"), ("token", "locality"), ("token", "portability"),
    ("probability", "efficacy_score"), ("probability", "paraphrase_score"), ("probability", "neighborhood_score"),
)


@dataclass(frozen=True)
class PairedRow:
    protocol: str
    name: str
    first: Interval
    second: Interval
    difference: Interval  # first − second, paired over the shared cases


def _cases_digest(run: Run) -> str | None:
    return (run.info.get("data") or {}).get("cases_sha256")


def same_cases(first: Run, second: Run) -> bool:
    """Whether two runs measured the same cases in the same order (same recorded digest of their cases)."""
    digest = _cases_digest(first)
    return digest is not None and digest == _cases_digest(second)


def check_same_cases(first: Run, second: Run) -> None:
    if not same_cases(first, second):
        digests = (_cases_digest(first), _cases_digest(second))
        raise KeditError(f"{first.path.name} and {second.path.name} were not run on the same cases (data digests "
                         f"{str(digests[0])[:12]} and {str(digests[1])[:12]}); a paired comparison needs the same "
                         "--data, --n and order")


def paired_values(first: Run, second: Run, protocol: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Both runs' edited-state values of one metric over the cases both have it for (aligned), or None."""
    def value(record, protocol=protocol, name=name):
        return metric(record, protocol, "post", name)

    values_first, values_second = per_case(first.records, value), per_case(second.records, value)
    if not set(values_first) & set(values_second):
        return None
    _, a, b = paired_columns(values_first, values_second)
    return a, b


def paired_metric(first: Run, second: Run, protocol: str, name: str, *, resamples: int = DEFAULT_RESAMPLES,
                  level: float = DEFAULT_LEVEL, seed: int = DEFAULT_SEED) -> Interval | None:
    """The paired difference first − second of one metric, or None when no shared case has it."""
    check_same_cases(first, second)
    found = paired_values(first, second, protocol, name)
    if found is None:
        return None
    return paired_difference(*found, resamples=resamples, level=level, seed=seed)


def compare_runs(first: Run, second: Run, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = DEFAULT_SEED) -> list[PairedRow]:
    """One row per metric that both runs measured on at least one shared case."""
    check_same_cases(first, second)
    settings = {"resamples": resamples, "level": level, "seed": seed}
    rows = []
    for protocol, name in COMPARED_METRICS:
        found = paired_values(first, second, protocol, name)
        if found is None:
            continue
        a, b = found
        rows.append(PairedRow(protocol, name, bootstrap(a, **settings), bootstrap(b, **settings),
                              paired_difference(a, b, **settings)))
    if not rows:
        raise KeditError(f"{first.path.name} and {second.path.name} share no measured metric to compare")
    return rows
