"""Where a sweep stands, from its files alone: the rows of ``kedit sweep status`` and the progress bar.

Reads plan.json, the status files the workers write and the run directories (records so far,
summary.json); imports neither torch nor Ray, so it runs anywhere the sweep folder is visible, also
while the sweep is running. A task whose status says ``running`` on this host but whose process is
gone is shown as ``stopped`` (killed: resume the sweep).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.runs import EDITS_DIR, RESULTS_FILE, SUMMARY_FILE
from kedit.sweep.layout import DONE, FAILED, RUNNING, SHARDS_DIR, STATUS_DIR, SweepLayout, read_plan
from kedit.sweep.objective import metric_value
from kedit.sweep.settings import SweepError

STOPPED, PARTIAL, PLANNED = "stopped", "partial", "planned"


@dataclass(frozen=True)
class RunStatus:
    name: str
    method: str
    mode: str
    n: int
    done: int  # cases measured so far
    state: str  # done, running, failed, stopped, partial or planned
    detail: str  # where it runs, or why it failed
    score_s: float | None  # S of a finished run (probability protocol), when it has one


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _cases_per_edit(mode: str) -> int:
    parts = mode.split(":")
    return int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1


def task_cases_done(folder: Path, mode: str, cases: int) -> int:
    """Cases measured in one task's run directory (a sequential run: cases edited so far)."""
    if (folder / SUMMARY_FILE).is_file():
        return cases
    if mode.startswith("sequential"):
        edits = folder / EDITS_DIR
        count = sum(1 for entry in edits.iterdir() if entry.name.isdigit()) if edits.is_dir() else 0
        return min(cases, count * _cases_per_edit(mode))
    return min(cases, _lines(folder / RESULTS_FILE))


def _spans(run: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(shard or None, cases) of each of a planned run's tasks."""
    shards = run.get("shards")
    if shards:
        return [(number, stop - start) for number, (start, stop) in enumerate(shards)]
    return [(None, int(run["settings"]["n"]))]


def run_cases_done(layout: SweepLayout, run: Mapping[str, Any]) -> int:
    settings = run["settings"]
    if (layout.run_dir(run["name"]) / SUMMARY_FILE).is_file():
        return int(settings["n"])
    return sum(task_cases_done(layout.task_dir(run["name"], shard), settings["mode"], cases)
               for shard, cases in _spans(run))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _state(statuses: Iterable[Mapping[str, Any]], done: int) -> tuple[str, str]:
    here = socket.gethostname()
    statuses = list(statuses)
    for status in statuses:
        if status.get("state") == FAILED:
            return FAILED, str(status.get("error") or "")
    running = [s for s in statuses if s.get("state") == RUNNING]
    for status in running:
        if status.get("host") != here or _alive(int(status.get("pid") or 0)):
            return RUNNING, f"{status.get('host')}:{status.get('pid')}"
    if running:
        return STOPPED, "its worker is gone (killed or lost); resume the sweep"
    return (PARTIAL, "") if done else (PLANNED, "")


def _trials(layout: SweepLayout, search: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A search's trials as planned runs: one per trial folder under shards/ (chunks of report_every)."""
    base = search["base"]["settings"]
    n, every = int(base["n"]), int(search["report_every"])
    spans = [[start, min(start + every, n)] for start in range(0, n, every)]
    folder = layout.root / SHARDS_DIR
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []
    return [{"name": name, "settings": base, "shards": spans} for name in names]


def sweep_status(root: Path) -> list[RunStatus]:
    """One row per planned run, in plan order (a search: one per trial started so far)."""
    layout = SweepLayout(Path(root))
    plan = read_plan(layout.root)
    if plan is None:
        raise SweepError(f"{root} is not a sweep directory (no plan.json of kind kedit-sweep)")
    runs = list(plan.get("runs") or []) + (_trials(layout, plan["search"]) if plan.get("search") else [])
    rows = []
    for run in runs:
        settings, name = run["settings"], run["name"]
        done = run_cases_done(layout, run)
        summary_file = layout.run_dir(name) / SUMMARY_FILE
        if summary_file.is_file():
            state, detail = DONE, ""
            summary = _read(summary_file) or {}
        else:
            statuses = [_read(layout.status_file(name, shard)) for shard, _ in _spans(run)]
            state, detail = _state((s for s in statuses if s), done)
            summary = {}
        rows.append(RunStatus(name, settings["method"], settings["mode"], int(settings["n"]), done, state, detail,
                              metric_value(summary, "S")))
    return rows


def status_files(root: Path) -> list[dict[str, Any]]:
    """Every task status in the sweep folder (also a search's trials, which plan.json does not list)."""
    folder = Path(root) / STATUS_DIR
    found = (_read(path) for path in sorted(folder.glob("*.json"))) if folder.is_dir() else ()
    return [status for status in found if status]
