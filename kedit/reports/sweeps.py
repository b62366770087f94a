"""Sweep directories on a report: their runs are compared like any others, plus a section per sweep.

``kedit report DIR`` with DIR a sweep directory (kedit sweep run --out) reports every planned run
(``runs/NAME``, in plan order) and every finished trial of a search; an unfinished run is listed
with the folders that could not be read. After the page's provenance, :func:`add_sweep_sections`
appends what each sweep was: its name and file (sha256), the runs with their settings, a search's
trials and best configuration, the sessions' commands and the sweep file itself. Files only, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.reports.formatting import MISSING
from kedit.reports.markdown import markdown_table
from kedit.runs import SUMMARY_FILE
from kedit.runs.portable import portable_command_text, portable_path
from kedit.sweep.layout import SweepLayout, read_plan


@dataclass(frozen=True)
class SweepPage:
    path: Path
    plan: Mapping[str, Any]
    sweep_text: str | None
    search: Mapping[str, Any] | None


def _read_search(layout: SweepLayout) -> Mapping[str, Any] | None:
    try:
        payload = json.loads(layout.search.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def expand_sweeps(paths: Iterable[str | Path]) -> tuple[list[Path], list[SweepPage]]:
    """The run directories to read (a sweep directory stands for its runs) and the sweeps found."""
    folders: list[Path] = []
    sweeps: list[SweepPage] = []
    for path in map(Path, paths):
        plan = read_plan(path)
        if plan is None:
            folders.append(path)
            continue
        layout = SweepLayout(path)
        search = _read_search(layout)
        folders += [layout.run_dir(run["name"]) for run in plan.get("runs") or []]
        folders += [layout.run_dir(trial["run"]) for trial in (search or {}).get("trials") or [] if trial.get("finished")]
        text = layout.sweep_file.read_text(encoding="utf-8") if layout.sweep_file.is_file() else None
        sweeps.append(SweepPage(path, plan, text, search))
    return folders, sweeps


def _settings(settings: Mapping[str, Any]) -> str:
    overrides = settings.get("set") or {}
    return ", ".join(f"{key}={value}" for key, value in overrides.items()) or MISSING


def _runs_table(sweep: SweepPage) -> str:
    rows = []
    layout = SweepLayout(sweep.path)
    for run in sweep.plan.get("runs") or []:
        settings = run["settings"]
        finished = (layout.run_dir(run["name"]) / SUMMARY_FILE).is_file()
        data = str(settings.get("data", "")).partition(":")[0]
        rows.append((f"`{run['name']}`", "finished" if finished else "not finished", settings["method"],
                     portable_path(str(settings.get("model"))) if settings.get("model") else MISSING, data,
                     settings["mode"], settings["n"], settings.get("seed") if settings.get("seed") is not None else MISSING,
                     _settings(settings), len(run.get("shards") or []) or 1))
    return markdown_table(("run (runs/…)", "state", "method", "model", "data", "mode", "n", "seed", "set", "shards"),
                          rows, text_columns=10)


def _search_part(search: Mapping[str, Any]) -> list[str]:
    metric = str(search.get("metric"))
    rows = []
    for trial in sorted(search.get("trials") or [], key=lambda t: (not t.get("finished"), -(t.get(metric) or 0.0))):
        value = trial.get(metric)
        rows.append((f"`{trial['run']}`", ", ".join(f"{k}={v}" for k, v in (trial.get("values") or {}).items()),
                     trial.get("cases"), "yes" if trial.get("finished") else "stopped early",
                     f"{value:.4f}" if isinstance(value, int | float) else MISSING))
    best = search.get("best") or {}
    parts = [f"### Search: {search.get('goal')}imise {metric}",
             markdown_table(("trial (runs/…)", "values", "cases", "all cases", metric), rows, text_columns=4)]
    if best:
        values = ", ".join(f"{k}={v}" for k, v in (best.get("values") or {}).items())
        parts.append(f"Best (among trials that measured all their cases): **{values}**, {metric} = "
                     f"{best.get(metric):.4f} on {best.get('cases')} cases (`{best.get('run')}`); "
                     "its hyperparameters are in `best.yaml` beside plan.json (`--hparams best.yaml`).")
    return parts


def sweep_sections(sweeps: Sequence[SweepPage]) -> list[str]:
    """The markdown parts describing each sweep."""
    parts: list[str] = []
    for sweep in sweeps:
        plan = sweep.plan
        sessions = plan.get("sessions") or []
        parts += [f"## Sweep: {plan.get('name')}",
                  (f"{plan.get('description')}\n\n" if plan.get("description") else "")
                  + f"Folder `{portable_path(sweep.path)}`; sweep file `{plan.get('sweep_file')}` (sha256 "
                  f"`{str(plan.get('sweep_sha256'))[:12]}`); {len(plan.get('runs') or [])} planned run(s); "
                  f"{len(sessions)} session(s)."]
        if plan.get("runs"):
            parts.append(_runs_table(sweep))
        if sweep.search:
            parts += _search_part(sweep.search)
        commands = [f"- `{portable_command_text(str(s['command']))}`" for s in sessions if s.get("command")]
        if commands:
            parts += ["Sessions (from the repository root):", "\n".join(commands)]
        if sweep.sweep_text is not None:
            parts += ["### Sweep file", f"```yaml\n{sweep.sweep_text.rstrip()}\n```"]
    return parts


def add_sweep_sections(markdown_path: Path, html_path: Path, sweeps: Sequence[SweepPage]) -> None:
    """Append the sweeps' sections to a written report (``report.md`` and its ``report.html``)."""
    from kedit.paths import atomic_path
    from kedit.reports.html import markdown_to_html

    if not sweeps:
        return
    markdown = markdown_path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + "\n\n".join(sweep_sections(sweeps)) + "\n"
    title = markdown.splitlines()[0].removeprefix("# ")
    for path, text in ((markdown_path, markdown), (html_path, markdown_to_html(markdown, markdown_path.parent, title))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
