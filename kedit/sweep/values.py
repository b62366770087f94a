"""Values written in a sweep file: lists, inclusive ranges, and the search spaces built from them.

A grid axis (``n``, ``seed``, a hyperparameter under ``set``) is a list of values or a range:

* ``{from: A, to: B, step: S}`` — A, A+S, ... up to B inclusive (integers stay integers);
* ``{from: A, to: B, num: K}`` — K values evenly spaced from A to B inclusive, ``log: true`` for
  evenly spaced logarithms (``{from: 5e-4, to: 2e-2, num: 6, log: true}``).

A search space entry is a list (a choice among its values), a range with ``step`` or ``num`` (a
choice among the values it expands to), or a range without either: every value from A to B,
uniform (``log: true``: log-uniform; integers: every integer from A to B).

Pure functions over plain values; nothing here imports Ray. Bad shapes raise :class:`ValueShapeError`
with the problem only; the sweep-file reader adds the file and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.errors import KeditError

RANGE_KEYS = frozenset({"from", "to", "step", "num", "log"})
RANGE_HINT = "a list of values or a range {from: A, to: B, step: S} / {from: A, to: B, num: K, log: true}"


class ValueShapeError(KeditError):
    """A grid or search value that is neither a list nor a well-formed range."""


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueShapeError(f"'{what}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueShapeError(f"'{what}' must be finite, got {value!r}")
    return value


def _tidy(value: float) -> float:
    """Round away the binary noise of repeated addition (0.1 + 0.2 → 0.3): 12 significant digits."""
    return float(f"{value:.12g}")


def is_range(value: Any) -> bool:
    return isinstance(value, Mapping) and "from" in value


def _checked_range(spec: Mapping[str, Any]) -> tuple[float | int, float | int]:
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown:
        raise ValueShapeError(f"range has unknown key(s) {', '.join(unknown)}; a range takes {', '.join(sorted(RANGE_KEYS))}")
    if "to" not in spec:
        raise ValueShapeError("range needs 'to' beside 'from'")
    low, high = _number(spec["from"], "from"), _number(spec["to"], "to")
    if high < low:
        raise ValueShapeError(f"range 'to' ({high}) is below 'from' ({low})")
    if "step" in spec and "num" in spec:
        raise ValueShapeError("range takes 'step' or 'num', not both")
    if spec.get("log") and low <= 0:
        raise ValueShapeError(f"a log range needs 'from' > 0, got {low}")
    if not isinstance(spec.get("log", False), bool):
        raise ValueShapeError(f"range 'log' must be true or false, got {spec['log']!r}")
    return low, high


def expand_range(spec: Mapping[str, Any]) -> list[Any]:
    """The values of a ``step`` or ``num`` range, in increasing order."""
    low, high = _checked_range(spec)
    if "step" in spec:
        step = _number(spec["step"], "step")
        if step <= 0:
            raise ValueShapeError(f"range 'step' must be > 0, got {step}")
        if spec.get("log"):
            raise ValueShapeError("a log range takes 'num', not 'step'")
        count = math.floor((high - low) / step + 1e-9) + 1
        if all(isinstance(v, int) for v in (low, high, step)):
            return [low + index * step for index in range(count)]
        return [_tidy(low + index * step) for index in range(count)]
    if "num" in spec:
        num = spec["num"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueShapeError(f"range 'num' must be a whole number >= 1, got {num!r}")
        if num == 1:
            return [low]
        if spec.get("log"):
            a, b = math.log(low), math.log(high)
            return [_tidy(math.exp(a + (b - a) * index / (num - 1))) for index in range(num)]
        return [_tidy(low + (high - low) * index / (num - 1)) for index in range(num)]
    raise ValueShapeError("a grid range needs 'step' or 'num' (a range without them is only for a search)")


def axis_values(value: Any) -> list[Any]:
    """A grid axis as its list of values."""
    if is_range(value):
        return expand_range(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ValueShapeError("the list of values is empty")
        return list(value)
    raise ValueShapeError(f"expected {RANGE_HINT}, got {value!r}")


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a choice among ``choices``, or every value from ``low`` to ``high``."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False

    @property
    def continuous(self) -> bool:
        return not self.choices

    @property
    def integer(self) -> bool:
        return self.continuous and isinstance(self.low, int) and isinstance(self.high, int) and not self.log

    def bounds(self) -> tuple[Any, ...]:
        """The values to validate up front: every choice, or the two ends of the interval."""
        return self.choices or (self.low, self.high)


def dimension(name: str, value: Any) -> Dimension:
    """A search space entry (see the module docstring)."""
    if is_range(value) and "step" not in value and "num" not in value:
        low, high = _checked_range(value)
        return Dimension(name, low=low, high=high, log=bool(value.get("log", False)))
    return Dimension(name, choices=tuple(axis_values(value)))


def round_significant(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits (a sampled 0.0073154… becomes 0.00732)."""
    return float(f"{value:.{digits}g}")
