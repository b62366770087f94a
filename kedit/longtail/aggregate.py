"""Means per frequency bin x cardinality with percentile-bootstrap intervals, from plain records.

The long-tail bins are small (tens of facts), so every mean is shown with its interval
(:func:`kedit.reports.intervals.bootstrap`, resampling the facts of the cell). A record is any
mapping with a ``"longtail"`` block holding ``bins`` (level -> bin label) and ``cardinality``: the
probe records and the edit records (joined with their facts) both qualify. A cell without facts
is kept, with ``n = 0`` and no estimate, so that tables and plots can say it is empty.

Pure functions over numbers and dicts (numpy only; no torch), so reports can use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.reports.intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap

ALL = "all"  # the cardinality "column" holding every fact of a bin
CARDINALITY_GROUPS: tuple[str, ...] = (ALL, "one-to-one", "one-to-many")

Value = Callable[[Mapping[str, Any]], float | None]


@dataclass(frozen=True)
class CellSettings:
    """The bootstrap's resamples, level and seed (stated on every report)."""

    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = DEFAULT_SEED


DEFAULT_SETTINGS = CellSettings()


@dataclass(frozen=True)
class Cell:
    """The mean of one metric over the facts of one bin x cardinality (``n = 0``: the cell is empty)."""

    level: str
    bin: str
    cardinality: str
    metric: str
    n: int
    estimate: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def empty(self) -> bool:
        return self.n == 0

    def describe(self) -> str:
        """``0.42 [0.31, 0.55]``; ``empty`` for a cell without facts."""
        if self.estimate is None:
            return "empty"
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "bin": self.bin, "cardinality": self.cardinality, "metric": self.metric,
                "n": self.n, "estimate": self.estimate, "low": self.low, "high": self.high}


def in_cell(record: Mapping[str, Any], level: str, bin_label: str, cardinality: str) -> bool:
    """Whether a record's fact is in ``bin_label`` at ``level`` and of ``cardinality`` (``all``: any)."""
    fact = record.get("longtail") or {}
    if (fact.get("bins") or {}).get(level) != bin_label:
        return False
    return cardinality == ALL or fact.get("cardinality") == cardinality


def cell(records: Sequence[Mapping[str, Any]], value: Value, metric: str, level: str, bin_label: str,
         cardinality: str, settings: CellSettings = DEFAULT_SETTINGS) -> Cell:
    """The bootstrap mean of ``value`` over the records of one cell (records whose value is None are left out)."""
    values = [v for record in records if in_cell(record, level, bin_label, cardinality)
              if (v := value(record)) is not None]
    if not values:
        return Cell(level, bin_label, cardinality, metric, 0)
    interval = bootstrap(values, resamples=settings.resamples, level=settings.level, seed=settings.seed)
    return Cell(level, bin_label, cardinality, metric, interval.n, interval.estimate, interval.low, interval.high)


def cells(records: Sequence[Mapping[str, Any]], metrics: Mapping[str, Value], level: str, labels: Sequence[str],
          cardinalities: Sequence[str] = CARDINALITY_GROUPS, settings: CellSettings = DEFAULT_SETTINGS) -> list[Cell]:
    """Every metric x bin x cardinality cell at one level, in that order (empty cells included)."""
    return [cell(records, value, metric, level, label, card, settings)
            for metric, value in metrics.items() for label in labels for card in cardinalities]


def path_value(*keys: str) -> Value:
    """A getter for a nested number, e.g. ``path_value("probe", "plain", "accuracy")`` (None when absent)."""

    def get(record: Mapping[str, Any]) -> float | None:
        node: Any = record
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None

    return get
