"""Checking hyperparameter values against their dataclass field types and obvious ranges.

Every value that reaches a method's frozen dataclass — from its defaults YAML, a user file,
``--set`` or ``kedit.edit(**overrides)`` — passes :func:`check_values` first, so a wrong value ends
in one line naming the field, what it must be and where it came from, not in a traceback from
inside the optimiser (``--set v_lr=abc`` used to fail in ``torch.optim.Adam``).

Types come from the field annotations: ``int``, ``float``, ``bool``, ``str``, ``X | None`` and
tuples (``tuple[int, ...]``, ``tuple[tuple[int, int], ...]``); YAML lists become tuples, an int is
accepted for a float, and a float with an integral value for an int (``mom2_tokens=1e5``). Ranges
follow the names: step and count fields are >= 1 (IKE's ``k`` >= 0), learning rates > 0, factors, decays,
coefficients, weights and thresholds >= 0, fractions in [0, 1]. A dataclass may list in
``FALSE_MEANS_NONE`` the fields where other toolkits write ``false`` for "none" (EasyEdit's
``norm_constraint: false``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from kedit.errors import KeditError

_AT_LEAST_ONE = ("steps", "_count", "_tokens", "_per_chunk", "_budget", "batch_size")
_POSITIVE = ("lr",)
_NON_NEGATIVE = ("_factor", "decay", "_coef", "_weight", "threshold", "_loss", "l2", "norm_constraint")
_NON_NEGATIVE_NAMES = ("k",)  # IKE's demonstration count: 0 shows the new fact alone


def _range_rule(name: str) -> tuple[Callable[[float], bool], str] | None:
    """The range a field's name implies, as (test, what the value must be)."""
    if name.endswith(_AT_LEAST_ONE):
        return (lambda v: v >= 1), ">= 1"
    if name == "lr" or name.endswith(tuple("_" + s for s in _POSITIVE)):
        return (lambda v: v > 0), "> 0"
    if name.endswith("fraction"):
        return (lambda v: 0 <= v <= 1), "between 0 and 1"
    if name.endswith(_NON_NEGATIVE) or name in _NON_NEGATIVE_NAMES:
        return (lambda v: v >= 0), ">= 0"
    return None


_SHORT = {int: "int", float: "number", bool: "bool", str: "str"}


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return "[" + ", ".join(_SHORT.get(a, str(a)) for a in args) + "]"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(annotation,
                                                                                              str(annotation))


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` where that loses nothing; raise _Mismatch otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(_describe(annotation))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch(_describe(annotation))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0]) for item in value)
        if len(value) != len(args):
            raise _Mismatch(_describe(annotation))
        return tuple(_coerce(item, kind) for item, kind in zip(value, args, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(_describe(annotation))
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch(_describe(annotation))
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch(_describe(annotation))
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(_describe(annotation))
    return value  # an annotation this checker does not know: left to the dataclass


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, tuple):
        return [number for item in value for number in _numbers(item)]
    return []


def check_values(cls: type, values: Mapping[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    """``values`` converted to the field types of dataclass ``cls``; a :class:`KeditError` naming
    the field, the expected type or range and ``origins[field]`` (where the value came from)."""
    hints = typing.get_type_hints(cls)
    false_means_none = getattr(cls, "FALSE_MEANS_NONE", frozenset())
    checked: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, origin = values[f.name], origins.get(f.name, "the arguments")
        if value is False and f.name in false_means_none:
            value = None
        try:
            converted = _coerce(value, hints[f.name])
        except _Mismatch as mismatch:
            raise KeditError(f"hyperparameter {f.name} ({cls.__name__}, from {origin}) must be {mismatch.expected}, "
                             f"got {value!r}; fix: e.g. --set {f.name}={_example(f)}") from None
        rule = _range_rule(f.name)
        if rule is not None:
            test, wanted = rule
            bad = [number for number in _numbers(converted) if not test(number)]
            if bad:
                raise KeditError(f"hyperparameter {f.name} ({cls.__name__}, from {origin}) must be {wanted}, "
                                 f"got {value!r}; fix: e.g. --set {f.name}={_example(f)}")
        checked[f.name] = converted
    return checked


def _example(f: dataclasses.Field) -> str:
    """The field's default, spelled as --set would take it."""
    default = f.default
    if default is dataclasses.MISSING or default is None:
        return "null"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return str(_as_lists(default)).replace(" ", "")
    return str(default)


def _as_lists(value: Any) -> Any:
    return [_as_lists(item) for item in value] if isinstance(value, tuple) else value
