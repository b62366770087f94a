"""Frequency bins: half-open count intervals, the paper's [0,10) [10,100) [100,1000) [1000,inf) by default."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from kedit.errors import DataError

DEFAULT_EDGES: tuple[int, ...] = (10, 100, 1000)


@dataclass(frozen=True)
class Bins:
    """Bins cut at ``edges`` (strictly increasing, > 0): [0,e1) [e1,e2) ... [ek,inf)."""

    edges: tuple[int, ...] = DEFAULT_EDGES

    def __post_init__(self) -> None:
        edges = tuple(int(edge) for edge in self.edges)
        if not edges or edges[0] <= 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise DataError(f"bin edges must be positive and strictly increasing, got {self.edges!r} "
                            "(e.g. 10,100,1000)")
        object.__setattr__(self, "edges", edges)

    @property
    def labels(self) -> tuple[str, ...]:
        """Bin labels in order, lowest counts first, e.g. ``("[0,10)", ..., "[1000,inf)")``."""
        bounds = (0, *self.edges)
        return tuple(f"[{low},{high})" for low, high in zip(bounds, self.edges, strict=False)) + (f"[{self.edges[-1]},inf)",)

    def index(self, count: int) -> int:
        """The bin a count falls in: an edge belongs to the bin it opens (10 is in [10,100))."""
        if count < 0:
            raise DataError(f"a count cannot be negative, got {count}")
        return bisect.bisect_right(self.edges, count)

    def label(self, count: int) -> str:
        return self.labels[self.index(count)]

    @classmethod
    def parse(cls, text: str) -> Bins:
        """``"10,100,1000"`` -> Bins; a one-line error otherwise."""
        try:
            return cls(tuple(int(part) for part in text.split(",") if part.strip()))
        except ValueError:
            raise DataError(f"bin edges {text!r}: expected comma-separated integers such as 10,100,1000") from None
