"""Confidence intervals for what reports compare: bootstrap over cases, and paired differences.

A run's number is a mean over its cases (a survey rate is the mean of a per-case 0/1 indicator), so
its uncertainty comes from which cases were drawn. The interval here is the *percentile bootstrap*:
resample the cases with replacement ``resamples`` times (seeded, so a report is reproducible),
compute the statistic on each resample, and take the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles. When two runs measured the same cases (same data digest and case keys), their
difference is bootstrapped *paired*: one set of resampled case indices is used for both runs, so
the case-to-case variation they share cancels and the interval is far tighter than two
independent ones would suggest.

Pure functions over numbers and records; no torch (reports run where no model is loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kedit.errors import KeditError

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
METHOD = "percentile bootstrap over cases"

# statistic of a resample: (resamples, n, k) values -> (resamples,) numbers
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval, and what it was computed from."""

    estimate: float
    low: float
    high: float
    n: int  # cases (pairs, for a paired difference) that had the metric
    level: float
    resamples: int
    seed: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        """``0.891 [0.847, 0.931]`` style text."""
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def column_mean(samples: np.ndarray) -> np.ndarray:
    """The default statistic: the mean of the first column over the resampled cases."""
    return samples[..., 0].mean(axis=-1)


def harmonic_of_column_means(samples: np.ndarray) -> np.ndarray:
    """S of the probability protocol: the harmonic mean of the column means (ES, PS, NS), 0 when any is 0."""
    means = samples.mean(axis=-2)
    positive = (means > 0).all(axis=-1)
    safe = np.where(means > 0, means, 1.0)
    return np.where(positive, means.shape[-1] / (1.0 / safe).sum(axis=-1), 0.0)


def bootstrap(values: Sequence[float] | np.ndarray, statistic: Statistic = column_mean, *,
              resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = DEFAULT_SEED,
              chunk: int = 1_000) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over the cases (rows) of ``values``.

    ``values`` is (n,) — one number per case — or (n, k) when the statistic reads several columns
    per case (e.g. the harmonic mean of three dataset means). Resamples are drawn in chunks so
    memory stays at ``chunk × n × k`` numbers.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] == 0:
        raise KeditError(f"bootstrap needs one row per case and at least one case, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise KeditError("bootstrap values must be finite numbers (leave cases without the metric out)")
    _check_settings(resamples, level)
    generator = np.random.default_rng(seed)
    n = data.shape[0]
    found = []
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        indices = generator.integers(0, n, size=(count, n))
        found.append(statistic(data[indices]))
    return _interval(float(statistic(data[None])[0]), np.concatenate(found), n, level, resamples, seed)


def paired_difference(first: Sequence[float] | np.ndarray, second: Sequence[float] | np.ndarray,
                      statistic: Statistic = column_mean, *, resamples: int = DEFAULT_RESAMPLES,
                      level: float = DEFAULT_LEVEL, seed: int = DEFAULT_SEED, chunk: int = 1_000) -> Interval:
    """Interval of ``statistic(first) - statistic(second)`` where row i of both is the same case.

    Each resample draws one set of case indices and applies it to both runs.
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise KeditError(f"a paired difference needs the same cases in both runs; shapes {a.shape} and {b.shape}")
    width = 1 if a.ndim == 1 else a.shape[1]
    both = np.concatenate([a.reshape(len(a), -1), b.reshape(len(b), -1)], axis=1)  # (n, 2k)

    def difference(samples: np.ndarray) -> np.ndarray:
        return statistic(samples[..., :width]) - statistic(samples[..., width:])

    return bootstrap(both, difference, resamples=resamples, level=level, seed=seed, chunk=chunk)


def per_case(records: Sequence[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], float | None]) -> dict[str, float]:
    """``{case key: value}`` for the records that have the value (``value`` returns None otherwise).

    The key is the runner's resume key (``"index:digest"``) when present, else ``case_id``; records
    without either cannot be paired and are refused.
    """
    found: dict[str, float] = {}
    for number, record in enumerate(records):
        key = record.get("key") or record.get("case_id")
        if key is None:
            raise KeditError(f"record {number} has neither a 'key' nor a 'case_id'; its cases cannot be paired")
        if key in found:
            raise KeditError(f"case {key!r} occurs twice in the records")
        number_value = value(record)
        if number_value is not None:
            found[str(key)] = float(number_value)
    return found


def paired_columns(first: Mapping[str, float], second: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The cases both runs have a value for (in the first run's order) and their two value columns."""
    keys = [key for key in first if key in second]
    if not keys:
        raise KeditError("the two runs share no case with this metric; they cannot be compared pairwise")
    return keys, np.array([first[key] for key in keys]), np.array([second[key] for key in keys])


def bounded_mean_interval(mean: float, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The widest normal-approximation interval a mean of ``n`` values in [0, 1] can have, from the mean alone.

    For values in [0, 1] the variance is at most μ(1 − μ) (Bhatia–Davis; equality for 0/1 values),
    so ``μ ± z·√(μ(1 − μ)/n)`` (clipped to [0, 1]) is at least as wide as the normal interval the
    cases themselves would give. For results whose per-case records were not kept: it needs only
    the recorded mean and the number of cases. Not a bootstrap, and not for metrics outside [0, 1].
    """
    from statistics import NormalDist

    _check_settings(1, level)
    if not 0 <= mean <= 1 or n < 1:
        raise KeditError(f"a bounded-mean interval needs a mean in [0, 1] and n >= 1, got {mean!r} and {n!r}")
    half = NormalDist().inv_cdf((1 + level) / 2) * float(np.sqrt(mean * (1 - mean) / n))
    return max(0.0, mean - half), min(1.0, mean + half)


def indicator(value: float | None, threshold: float = 1.0) -> float | None:
    """1.0 when ``value`` reaches ``threshold`` (the survey's "perfect" cases), 0.0 below, None when absent."""
    return None if value is None else float(value >= threshold)


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise KeditError(f"resamples must be a whole number of at least 1, got {resamples!r}")
    if not 0 < level < 1:
        raise KeditError(f"level must be between 0 and 1 (0.95 for a 95 % interval), got {level!r}")


def _interval(estimate: float, draws: np.ndarray, n: int, level: float, resamples: int, seed: int) -> Interval:
    tail = (1 - level) / 2
    # "inverted_cdf" takes observed resample values as the bounds (no interpolation between them)
    low, high = np.quantile(draws, [tail, 1 - tail], method="inverted_cdf")
    return Interval(estimate=estimate, low=float(low), high=float(high), n=n, level=level, resamples=resamples,
                    seed=seed)
