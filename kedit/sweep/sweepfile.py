"""Reading a sweep file: shared settings, per-method defaults, grids, listed runs, or a search.

```yaml
name: three-methods                 # shown in the report
shared:                             # every run's settings unless it says otherwise
  model: smollm2-135m
  data: counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
  n: 50
methods:                            # defaults for the runs of one method (over shared)
  memit: {set: {z_cache: false}}
grid:                               # a mapping, or a list of them: the cross product of its axes
  method: [rome, memit, ft-l]       # each axis a list or a range (kedit.sweep.values)
  set: {layer: {from: 2, to: 6, step: 2}}
runs:                               # runs listed one by one (over shared and methods)
  - {method: ft-l, set: {norm_constraint: 5e-4}}
```

A run's ``set`` is the union of shared's, its method's and its own (later wins). ``search:``
(instead of ``grid``/``runs``) declares a Ray Tune search; its fields are a run's plus those of
:data:`SEARCH_FIELDS`. Everything here is shape and type; :mod:`kedit.sweep.validate` checks
names against kedit's registries. Errors name the file and the field (``grid[0].set.layer``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kedit.paths import sha256_text
from kedit.sweep.objective import GOALS, metric_path
from kedit.sweep.settings import (
    FIELDS,
    SET,
    PlannedEntry,
    RunSettings,
    SweepError,
    check_set,
    settings_from_mapping,
    unknown_field_error,
)
from kedit.sweep.values import Dimension, ValueShapeError, axis_values, dimension

TOP_KEYS = ("name", "description", "shared", "methods", "grid", "runs", "search")
SEARCH_FIELDS = ("space", "metric", "goal", "samples", "scheduler", "report_every", "grace", "reduction",
                 "search_seed", "digits", "evaluation")
SCHEDULERS = ("asha", "fifo")


@dataclass(frozen=True)
class SearchSettings:
    """A Ray Tune search: trials are ``base`` with the ``space`` values sampled into its overrides."""

    base: RunSettings
    space: tuple[Dimension, ...]
    metric: str = "S"
    goal: str = "max"
    samples: int = 8
    scheduler: str = "asha"  # "asha": stop trials behind the others early; "fifo": run every trial to the end
    report_every: int = 10  # cases per reported step (a trial's cases run in chunks of this many)
    grace: int = 1  # ASHA: steps every trial runs before it may be stopped
    reduction: int = 2  # ASHA: keep 1 of this many trials at each rung
    search_seed: int = 0  # random state of the sampler (the same seed samples the same trials)
    digits: int = 3  # sampled numbers are rounded to this many significant digits
    evaluation: str | None = None  # the evaluation data (NAME:PATH): the search's cases must not be in it


@dataclass(frozen=True)
class SweepFile:
    path: Path
    text: str
    sha256: str
    name: str
    description: str
    entries: tuple[PlannedEntry, ...]
    search: SearchSettings | None


def _load(path: Path) -> tuple[str, Mapping[str, Any]]:
    from kedit.methods.hparams import load_yaml  # 5e-4 read as a number, as in hyperparameter files

    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        document = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SweepError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(document, Mapping):
        raise SweepError(f"{path}: a sweep file is a mapping with {', '.join(TOP_KEYS)}")
    for key in document:
        if key not in TOP_KEYS:
            raise unknown_field_error(key, TOP_KEYS, str(path))
    return text, document


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _merged(shared: Mapping[str, Any], methods: Mapping[str, Any], entry: Mapping[str, Any],
            where: str) -> dict[str, Any]:
    """shared < methods[method] < entry, with the three ``set`` mappings merged the same way."""
    method = entry.get("method", shared.get("method"))
    own = _mapping(methods.get(str(method).lower()) if isinstance(method, str) else None, f"methods.{method}")
    merged = {**shared, **own, **entry}
    merged[SET] = {**check_set(shared.get(SET), f"{where} (from shared)"),
                   **check_set(own.get(SET), f"{where} (from methods.{method})"),
                   **check_set(entry.get(SET), where)}
    return merged


def _axis(value: Any, where: str) -> list[Any]:
    try:
        return axis_values(value)
    except ValueShapeError as error:
        raise SweepError(f"{where}: {error}") from None


def _grid_points(grid: Mapping[str, Any], where: str) -> list[tuple[dict[str, Any], str]]:
    """Each point of one grid as (run mapping, its axis values for messages)."""
    axes: list[tuple[tuple[str, ...], list[Any]]] = []
    for key, value in grid.items():
        if key == SET:
            for name, values in _mapping(value, f"{where}.set").items():
                axes.append(((SET, str(name)), _axis(values, f"{where}.set.{name}")))
        elif key not in FIELDS:
            raise unknown_field_error(key, FIELDS, where)
        else:
            axes.append(((str(key),), _axis(value, f"{where}.{key}")))
    points = []
    for combination in itertools.product(*(values for _, values in axes)):
        entry: dict[str, Any] = {SET: {}}
        for (path, _), value in zip(axes, combination, strict=True):
            if path[0] == SET:
                entry[SET][path[1]] = value
            else:
                entry[path[0]] = value
        label = ", ".join(f"{'.'.join(path)}={value}" for (path, _), value in zip(axes, combination, strict=True))
        points.append((entry, label))
    return points


def _entries(path: Path, document: Mapping[str, Any], shared: Mapping[str, Any],
             methods: Mapping[str, Any]) -> list[PlannedEntry]:
    entries = []
    grids = document.get("grid")
    grid_list = [grids] if isinstance(grids, Mapping) else list(grids or [])
    if grids is not None and not isinstance(grids, Mapping | Sequence):
        raise SweepError(f"{path}: grid must be a mapping of axes or a list of them")
    for number, grid in enumerate(grid_list):
        where = f"{path}: grid[{number}]" if not isinstance(grids, Mapping) else f"{path}: grid"
        for point, (entry, label) in enumerate(_grid_points(_mapping(grid, where), where)):
            origin = f"{where} point {point} ({label})"
            entries.append(PlannedEntry(origin, settings_from_mapping(_merged(shared, methods, entry, origin), origin)))
    runs = document.get("runs") or []
    if not isinstance(runs, Sequence) or isinstance(runs, str):
        raise SweepError(f"{path}: runs must be a list of run mappings")
    for number, entry in enumerate(runs):
        entry = _mapping(entry, f"{path}: runs[{number}]")
        origin = f"{path}: runs[{number}]" + (f" ({entry['method']})" if "method" in entry else "")
        entries.append(PlannedEntry(origin, settings_from_mapping(_merged(shared, methods, entry, origin), origin)))
    return entries


def _whole(value: Any, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{where}.{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _search(path: Path, section: Mapping[str, Any], shared: Mapping[str, Any],
            methods: Mapping[str, Any]) -> SearchSettings:
    where = f"{path}: search"
    run_part = {key: value for key, value in section.items() if key not in SEARCH_FIELDS}
    base = settings_from_mapping(_merged(shared, methods, run_part, where), where)
    space = _mapping(section.get("space"), f"{where}.space")
    if not space:
        raise SweepError(f"{where}.space is empty: name at least one hyperparameter and its range")
    dimensions = []
    for name, value in space.items():
        try:
            dimensions.append(dimension(str(name), value))
        except ValueShapeError as error:
            raise SweepError(f"{where}.space.{name}: {error}") from None
    fixed = sorted(set(space) & set(base.overrides_dict()))
    if fixed:
        raise SweepError(f"{where}: {', '.join(fixed)} is both searched (space) and fixed (set); keep one")
    metric = str(section.get("metric", "S"))
    try:
        metric_path(metric)
    except SweepError as error:
        raise SweepError(f"{where}.metric: {error}") from None
    goal = str(section.get("goal", "max"))
    if goal not in GOALS:
        raise SweepError(f"{where}.goal must be one of {', '.join(GOALS)}, got {goal!r}")
    scheduler = str(section.get("scheduler", "asha"))
    if scheduler not in SCHEDULERS:
        raise SweepError(f"{where}.scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    report_every = _whole(section.get("report_every", max(1, base.n // 5)), "report_every", where, 1)
    if base.shards != 1:
        raise SweepError(f"{where}: shards is not for a search (a trial's cases run in chunks of report_every)")
    evaluation = section.get("evaluation")
    if evaluation is not None and (not isinstance(evaluation, str) or not evaluation.strip()):
        raise SweepError(f"{where}.evaluation must be a dataset as NAME:PATH, got {evaluation!r}")
    return SearchSettings(
        base=base, space=tuple(dimensions), metric=metric, goal=goal,
        samples=_whole(section.get("samples", 8), "samples", where, 1), scheduler=scheduler,
        report_every=report_every, grace=_whole(section.get("grace", 1), "grace", where, 1),
        reduction=_whole(section.get("reduction", 2), "reduction", where, 2),
        search_seed=_whole(section.get("search_seed", 0), "search_seed", where, 0),
        digits=_whole(section.get("digits", 3), "digits", where, 1), evaluation=evaluation,
    )


def read_sweep_file(path: str | Path) -> SweepFile:
    """Parse ``path`` into its runs (grids expanded, in file order) or its search."""
    path = Path(path)
    text, document = _load(path)
    shared = _mapping(document.get("shared"), f"{path}: shared")
    for key in shared:
        if key not in FIELDS:
            raise unknown_field_error(key, FIELDS, f"{path}: shared")
    methods = {str(name).lower(): _mapping(value, f"{path}: methods.{name}")
               for name, value in _mapping(document.get("methods"), f"{path}: methods").items()}
    for name, values in methods.items():
        for key in values:
            if key not in FIELDS or key == "method":
                raise unknown_field_error(key, tuple(f for f in FIELDS if f != "method"), f"{path}: methods.{name}")
    entries = _entries(path, document, shared, methods)
    search_section = document.get("search")
    search = _search(path, _mapping(search_section, f"{path}: search"), shared, methods) if search_section else None
    if search is not None and entries:
        raise SweepError(f"{path}: a sweep holds runs (grid, runs) or a search, not both; "
                         "put the search in a file of its own")
    if search is None and not entries:
        raise SweepError(f"{path}: no runs: give a grid, a list of runs or a search")
    name = document.get("name") or path.stem
    return SweepFile(path, text, sha256_text(text), str(name), str(document.get("description") or ""),
                     tuple(entries), search)
