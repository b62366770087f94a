"""A sweep file → its plan: every run checked, named and cut into shards, before any work starts.

:func:`make_plan` is what ``kedit sweep plan`` prints and what ``kedit sweep run`` executes; it
fails on the first bad run with one line (file, run, field). :meth:`Plan.to_json` is the plan.json
of the sweep directory (what ``kedit sweep status`` and ``kedit report`` read).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.sweep.layout import SWEEP_KIND
from kedit.sweep.naming import run_name
from kedit.sweep.settings import RunSettings, SweepError
from kedit.sweep.sweepfile import SearchSettings, SweepFile, read_sweep_file
from kedit.sweep.validate import CheckedRun, check_run


@dataclass(frozen=True)
class PlannedRun:
    name: str
    origin: str
    settings: RunSettings
    identity: Mapping[str, Any]
    spans: tuple[tuple[int, int], ...]  # [start, stop) of the cases of each shard; one span when unsharded

    @property
    def sharded(self) -> bool:
        return len(self.spans) > 1

    def to_json(self) -> dict[str, Any]:
        settings = dataclasses.asdict(self.settings)
        settings["set"] = dict(settings.pop("overrides"))
        return {"name": self.name, "origin": self.origin, "settings": settings, "identity": dict(self.identity),
                "shards": [list(span) for span in self.spans] if self.sharded else None}


@dataclass(frozen=True)
class PlannedSearch:
    settings: SearchSettings
    base: CheckedRun  # the trial before its sampled values: checked, with its identity as written

    def to_json(self) -> dict[str, Any]:
        search = self.settings
        return {"method": search.base.method, "metric": search.metric, "goal": search.goal,
                "samples": search.samples, "scheduler": search.scheduler, "report_every": search.report_every,
                "space": [dataclasses.asdict(dimension) for dimension in search.space],
                "base": PlannedRun("", "search", self.base.settings, self.base.identity, ((0, search.base.n),)).to_json()}


@dataclass(frozen=True)
class Plan:
    sweep: SweepFile
    runs: tuple[PlannedRun, ...]
    search: PlannedSearch | None

    @property
    def cases(self) -> int:
        return sum(run.settings.n for run in self.runs)

    def run(self, name: str) -> PlannedRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise SweepError(f"no run named {name!r} in {self.sweep.path}; `kedit sweep plan` lists them")

    def to_json(self) -> dict[str, Any]:
        from kedit.runs import portable_path

        return {"kind": SWEEP_KIND, "name": self.sweep.name, "description": self.sweep.description,
                "sweep_file": portable_path(self.sweep.path), "sweep_sha256": self.sweep.sha256,
                "runs": [run.to_json() for run in self.runs],
                "search": self.search.to_json() if self.search else None}


def shard_spans(n: int, shards: int, eval_batch: int) -> tuple[tuple[int, int], ...]:
    """Up to ``shards`` consecutive case ranges covering 0..n, each a whole number of ``eval_batch`` chunks.

    The runner scores the unedited model in fixed chunks of ``eval_batch`` cases, and a case's
    scores depend on the chunk it is scored in (in the last bits); cut at chunk boundaries, a sharded
    run writes the records of the unsharded run bit for bit. So a run of n ≤ eval_batch cases is
    not cut at all: lower ``eval_batch`` to shard it.
    """
    size = math.ceil(math.ceil(n / shards) / eval_batch) * eval_batch
    return tuple((start, min(start + size, n)) for start in range(0, n, size))


def _check_search(where: str, search: SearchSettings, base: Path, seen: dict[Any, Any]) -> PlannedSearch:
    from kedit.evaluate.runner import BATCH, SINGLE, parse_mode
    from kedit.methods import get_method

    checked = check_run(where, search.base, base, seen)
    mode = parse_mode(checked.settings.mode)
    if mode.kind not in (SINGLE, BATCH):
        raise SweepError(f"{where}: mode: a search reports after every report_every cases, which a "
                         f"{mode.spec} run cannot (its cases are measured together at the end); use single or batch:N")
    if mode.kind == BATCH and search.report_every % mode.unit:
        raise SweepError(f"{where}: report_every ({search.report_every}) must be a multiple of the batch size "
                         f"({mode.unit}), so that no batch is cut in two")
    method = get_method(checked.settings.method)
    hparams = Path(checked.settings.hparams) if checked.settings.hparams else None
    for dimension in search.space:
        for value in dimension.bounds():
            overrides = checked.settings.overrides_dict() | {dimension.name: value}
            try:
                method.default_hparams(None, hparams, overrides)
            except KeditError as error:
                raise SweepError(f"{where}.space.{dimension.name}: {error}") from None
    if search.evaluation is not None:
        _refuse_overlap(where, checked.settings, search.evaluation, base)
    return PlannedSearch(search, checked)


def _refuse_overlap(where: str, settings: RunSettings, evaluation: str, base: Path) -> None:
    """The search must not choose on cases it will be judged on: refuse validation cases whose prompt is
    among the evaluation data's."""
    from kedit.sweep.cases import resolved_data, run_cases
    from kedit.sweep.validate import check_data_format

    data = resolved_data(evaluation, base)
    try:
        check_data_format(data)
    except KeditError as error:
        raise SweepError(f"{where}: evaluation: {error}") from None
    judged = run_cases(dataclasses.replace(settings, data=data, n=10**12, seed=None, held_out=0)).cases
    prompts = {case.request.text for case in judged}
    shared = [case for case in run_cases(settings).cases if case.request.text in prompts]
    if shared:
        raise SweepError(f"{where}: {len(shared)} of the search's {settings.n} cases are in the evaluation data "
                         f"{evaluation} (e.g. {shared[0].request.text!r}); search on a validation split")


def make_plan(path: str | Path, base: Path | None = None) -> Plan:
    """Read, check and name every run of the sweep file ``path``; relative paths in it are read
    against ``base`` (default: the working directory, as for ``kedit bench``)."""
    base = Path(base or Path.cwd())
    sweep = read_sweep_file(path)
    seen: dict[Any, Any] = {}
    runs: list[PlannedRun] = []
    origins: dict[str, str] = {}
    for entry in sweep.entries:
        checked = check_run(entry.origin, entry.settings, base, seen)
        name = run_name(checked.settings, checked.identity)
        if name in origins:
            raise SweepError(f"{entry.origin}: the same run as {origins[name]} (every setting equal); remove one")
        origins[name] = entry.origin
        spans = shard_spans(checked.settings.n, checked.settings.shards, checked.settings.eval_batch)
        runs.append(PlannedRun(name, entry.origin, checked.settings, checked.identity, spans))
    search = _check_search(f"{sweep.path}: search", sweep.search, base, seen) if sweep.search else None
    return Plan(sweep, tuple(runs), search)
