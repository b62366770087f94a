"""What a benchmark folder holds: facts per frequency bin and cardinality, at every level it counts.

``kedit longtail stats BENCH/`` prints these tables. A table is one level (``document`` or
``sentence``) of one axis (``cooccurrence`` or ``subject-popularity``): the two axes are never
mixed, and a level that no case counts is left out rather than shown empty.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.longtail.schema import CARDINALITIES, LEVELS, LongTailCase, read_cases, read_demonstrations

_LOWER_BOUND = re.compile(r"^\[(\d+),")


def _bin_order(label: str) -> tuple[int, str]:
    """Sort bins by their lower bound (``"[10,100)"`` -> 10); a label of another shape goes last."""
    match = _LOWER_BOUND.match(label)
    return (int(match.group(1)) if match else 1 << 62, label)


@dataclass(frozen=True)
class BinRow:
    """Facts in one bin: how many are one-to-one, one-to-many, and both together."""

    label: str
    one_to_one: int
    one_to_many: int

    @property
    def total(self) -> int:
        return self.one_to_one + self.one_to_many


@dataclass(frozen=True)
class LevelTable:
    """One level of one axis: a row per bin, lowest counts first."""

    axis: str
    level: str
    rows: tuple[BinRow, ...]

    @property
    def total(self) -> int:
        return sum(row.total for row in self.rows)


@dataclass(frozen=True)
class BenchmarkStats:
    """Everything ``kedit longtail stats`` prints about a benchmark folder."""

    cases: int
    tables: tuple[LevelTable, ...]
    relations: tuple[tuple[str, int, int], ...]  # (relation, one-to-one facts, one-to-many facts)
    demonstrations: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "demonstrations": self.demonstrations,
            "levels": [
                {"axis": table.axis, "level": table.level, "total": table.total,
                 "bins": [{"bin": row.label, "one-to-one": row.one_to_one, "one-to-many": row.one_to_many,
                           "total": row.total} for row in table.rows]}
                for table in self.tables
            ],
            "relations": [{"relation": name, "one-to-one": one, "one-to-many": many}
                          for name, one, many in self.relations],
        }


def level_tables(cases: Sequence[LongTailCase], labels: Sequence[str] = ()) -> tuple[LevelTable, ...]:
    """Per (axis, level) the facts of each bin by cardinality.

    ``labels`` are bins to show even when empty (the manifest's bins), so an empty long-tail bin
    reads as 0 instead of vanishing; bins found on the cases are added to them.
    """
    counted: dict[tuple[str, str], Counter[tuple[str, str]]] = {}
    for case in cases:
        fact = case.fact
        for level, label in fact.bins.items():
            counted.setdefault((fact.axis, level), Counter())[(label, fact.cardinality)] += 1
    tables = []
    for (axis, level), counter in sorted(counted.items(), key=lambda item: (item[0][0], LEVELS.index(item[0][1]))):
        shown = sorted(set(labels) | {label for label, _ in counter}, key=_bin_order)
        rows = tuple(BinRow(label, counter[(label, CARDINALITIES[0])], counter[(label, CARDINALITIES[1])])
                     for label in shown)
        tables.append(LevelTable(axis=axis, level=level, rows=rows))
    return tuple(tables)


def benchmark_stats(folder: Path, labels: Sequence[str] = ()) -> BenchmarkStats:
    """Read ``folder`` (cases and demonstrations) and count its facts."""
    cases = read_cases(folder)
    per_relation: dict[str, Counter[str]] = {}
    for case in cases:
        per_relation.setdefault(case.fact.relation, Counter())[case.fact.cardinality] += 1
    relations = tuple((name, counter[CARDINALITIES[0]], counter[CARDINALITIES[1]])
                      for name, counter in sorted(per_relation.items()))
    demonstrations = sum(len(demos) for demos in read_demonstrations(folder).values())
    return BenchmarkStats(cases=len(cases), tables=level_tables(cases, labels), relations=relations,
                          demonstrations=demonstrations)
