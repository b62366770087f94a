"""One run of a sweep, as plain settings: what ``kedit bench`` would be given, plus the case sample.

A :class:`RunSettings` holds exactly what decides a run's numbers (and ``device``, which does not
enter its name: a run may be resumed on another device, as ``kedit bench --resume`` may).
:func:`settings_from_mapping` checks each field's type and range from a sweep file's mapping; the
checks that need kedit's registries (method, hyperparameters, dataset format, mode) are in
:mod:`kedit.sweep.validate`. No torch here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kedit.errors import KeditError

DEFAULT_N = 500  # as kedit bench --n
DEFAULT_EVAL_BATCH = 64  # as kedit bench --eval-batch


class SweepError(KeditError):
    """A sweep file, plan or directory that cannot be used; the message names the file, run and field."""


@dataclass(frozen=True)
class RunSettings:
    """Everything one run is given. ``overrides`` are the ``--set`` values, sorted by key."""

    method: str
    data: str  # NAME:PATH as kedit bench --data takes it, or "demo"
    model: str | None = None  # None: kedit's default model (kedit.models.loading.DEFAULT_MODEL)
    n: int = DEFAULT_N
    mode: str = "single"
    seed: int | None = None  # None: the first n cases; a number: n cases drawn with this seed, in file order
    overrides: tuple[tuple[str, Any], ...] = ()
    hparams: str | None = None  # a YAML file of hyperparameters (kedit bench --hparams)
    held_out: int = 0
    eval_batch: int = DEFAULT_EVAL_BATCH
    start_token: str = "auto"
    device: str = "cpu"
    shards: int = 1  # single-mode runs: cases split into this many consecutive parts, run apart, merged

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    def with_overrides(self, extra: Mapping[str, Any]) -> RunSettings:
        return replace(self, overrides=tuple(sorted((self.overrides_dict() | dict(extra)).items())))


# The sweep file spells the overrides "set", as the command line does.
SET = "set"
FIELDS = tuple(SET if f.name == "overrides" else f.name for f in fields(RunSettings))
REQUIRED = ("method", "data")


def _close(name: str, known: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_field_error(name: Any, known: tuple[str, ...], where: str) -> SweepError:
    return SweepError(f"{where}: unknown field {name!r}{_close(str(name), known)}; known: {', '.join(known)}")


def _whole(value: Any, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{where}: {name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SweepError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value.strip()


def check_set(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise SweepError(f"{where}: set must be a mapping of hyperparameter names to values, got {value!r}")
    return dict(value)


def settings_from_mapping(values: Mapping[str, Any], where: str) -> RunSettings:
    """A run's merged mapping (shared, method defaults, grid point or list entry) as checked settings."""
    for name in values:
        if name not in FIELDS:
            raise unknown_field_error(name, FIELDS, where)
    for name in REQUIRED:
        if values.get(name) is None:
            raise SweepError(f"{where}: no {name!r}; give it in the run, the grid or 'shared'")
    seed = values.get("seed")
    if seed is not None:
        _whole(seed, "seed", where, 0)
    hparams = values.get("hparams")
    model = values.get("model")
    settings = RunSettings(
        method=_text(values["method"], "method", where).lower(),
        data=_text(values["data"], "data", where),
        model=_text(model, "model", where) if model is not None else None,
        n=_whole(values.get("n", DEFAULT_N), "n", where, 1),
        mode=_text(values.get("mode", "single"), "mode", where),
        seed=seed,
        overrides=tuple(sorted(check_set(values.get(SET), where).items())),
        hparams=_text(hparams, "hparams", where) if hparams is not None else None,
        held_out=_whole(values.get("held_out", 0), "held_out", where, 0),
        eval_batch=_whole(values.get("eval_batch", DEFAULT_EVAL_BATCH), "eval_batch", where, 1),
        start_token=_text(values.get("start_token", "auto"), "start_token", where),
        device=_text(values.get("device", "cpu"), "device", where),
        shards=_whole(values.get("shards", 1), "shards", where, 1),
    )
    if settings.shards > settings.n:
        raise SweepError(f"{where}: shards ({settings.shards}) exceeds n ({settings.n}); use at most one shard per case")
    return settings


@dataclass(frozen=True)
class PlannedEntry:
    """A run as the sweep file gives it: where it came from (for messages) and its settings."""

    origin: str  # e.g. "grid[0] point 3 (method=rome)" or "runs[2] (ft-l)"
    settings: RunSettings
