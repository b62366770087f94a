"""Merging the shards of a single-mode run into one run directory, in case order, each case once.

A shard is an ordinary bench run directory over a consecutive span of the run's cases. Its records
are keyed by their position within the shard (:func:`kedit.runs.case_key`); merging re-keys each
one by its position in the whole run after checking that the digest part of the key is that of the
case at that position (a shard that measured other cases is refused), and refuses a case measured
twice or not at all. The merged folder is what an unsharded run would have written —
``results.jsonl`` in case order, ``run.json`` (the shards' common settings, the whole run's case
digest, each shard's span and sessions) and ``summary.json`` last (so a folder with a summary is a
finished merge) — and ``kedit report`` reads it like any other run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.requests import Case
from kedit.runs import (
    BENCH,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    canonical,
    case_key,
    cases_digest,
    read_lines,
    write_json_atomic,
    write_lines_atomic,
)
from kedit.runs.resume import IDENTITY, session_entry
from kedit.sweep.settings import SweepError
from kedit.sweep.worker import SHARD_KEY

PHASES = ("pre_evaluation", "edits", "evaluation", "replay", "total")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SweepError(f"{path} is missing: the shard has not finished; resume the sweep")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_same_run(infos: Sequence[Mapping[str, Any]], folders: Sequence[Path]) -> None:
    """Every shard was run with the same model, method, hyperparameters, mode and held-out set."""
    for label, get in IDENTITY[BENCH]:
        if label == "data digest":  # each shard holds other cases
            continue
        first = canonical(get(infos[0]))
        for info, folder in zip(infos[1:], folders[1:], strict=True):
            if canonical(get(info)) != first:
                raise SweepError(f"{folder} was run with another {label} than {folders[0]}; its shards cannot be merged")


def merged_records(folders: Sequence[Path], spans: Sequence[tuple[int, int]], cases: Sequence[Case]) -> list[dict[str, Any]]:
    """The shards' records re-keyed by their position in the whole run, in case order."""
    merged: dict[int, dict[str, Any]] = {}
    for folder, (start, stop) in zip(folders, spans, strict=True):
        for number, record in enumerate(read_lines(folder / RESULTS_FILE), start=1):
            local = record.get("index")
            if not isinstance(local, int) or not 0 <= local < stop - start:
                raise SweepError(f"{folder / RESULTS_FILE} line {number}: index {local!r} is outside its shard "
                                 f"(cases {start}-{stop - 1})")
            index = start + local
            if record.get("key") != case_key(local, cases[index]):
                raise SweepError(f"{folder / RESULTS_FILE} line {number} measured another case than case {index} "
                                 "of this run; the data changed since the shard ran")
            if index in merged:
                raise SweepError(f"case {index} is measured twice ({folder / RESULTS_FILE} line {number})")
            edit = dict(record.get("edit") or {})
            if "unit" in edit:
                edit["unit"] = index  # single mode: one case per edit
            merged[index] = {**record, "index": index, "key": case_key(index, cases[index]),
                             **({"edit": edit} if edit else {})}
    missing = sorted(set(range(len(cases))) - set(merged))
    if missing:
        raise SweepError(f"cases {missing[:5]}{' …' if len(missing) > 5 else ''} of {len(cases)} have no record in "
                         "the shards; resume the sweep")
    return [merged[index] for index in range(len(cases))]


def _run_info(target: Path, infos: Sequence[Mapping[str, Any]], folders: Sequence[Path],
              spans: Sequence[tuple[int, int]], cases: Sequence[Case], command: str | None) -> dict[str, Any]:
    """The merged run.json; each shard's folder is named relative to the sweep directory."""
    data = {key: value for key, value in (infos[0].get("data") or {}).items() if key != SHARD_KEY}
    data |= {"cases_sha256": cases_digest(cases), "n": len(cases)}
    sweep_root = target.parent.parent  # runs/NAME → the sweep directory
    shards = [{"cases": list(span), "folder": Path(os.path.relpath(folder, sweep_root)).as_posix(),
               "cases_sha256": (info.get("data") or {}).get("cases_sha256"),
               "sessions": list(info.get("sessions") or [session_entry(info)])}
              for info, folder, span in zip(infos, folders, spans, strict=True)]
    return {**infos[0], "data": data, "n": len(cases), "command": command, "shards": shards}


def _summary(info: Mapping[str, Any], shard_summaries: Sequence[Mapping[str, Any]],
             records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from kedit.evaluate.evaluation import summarize
    from kedit.evaluate.survey import survey_summary

    seconds = {phase: sum(float((s.get("seconds") or {}).get(phase, 0.0)) for s in shard_summaries) for phase in PHASES}
    recorded = {phase: sum((r.get("seconds") or {}).get(phase, 0.0) for r in records) for phase in ("edit", "evaluate")}
    return {**summarize(records), **survey_summary(records), "kind": BENCH, "model": info.get("model"),
            "method": info.get("method"), "mode": info.get("mode_spec"),
            "seconds": seconds,  # summed over the shards, which may have run side by side
            "seconds_recorded": recorded, "shards": len(shard_summaries)}


def merge_shards(target: Path, folders: Sequence[Path], spans: Sequence[tuple[int, int]], cases: Sequence[Case],
                 command: str | None) -> dict[str, Any]:
    """Write the run directory ``target`` from its finished shards; return its summary."""
    infos = [_read_json(folder / RUN_FILE) for folder in folders]
    summaries = [_read_json(folder / SUMMARY_FILE) for folder in folders]
    _check_same_run(infos, folders)
    records = merged_records(folders, spans, cases)
    info = _run_info(target, infos, folders, spans, cases, command)
    target.mkdir(parents=True, exist_ok=True)
    (target / SUMMARY_FILE).unlink(missing_ok=True)  # written last: its presence means the merge finished
    write_lines_atomic(target / RESULTS_FILE, records)
    write_json_atomic(target / RUN_FILE, canonical(info))
    summary = _summary(info, summaries, records)
    write_json_atomic(target / SUMMARY_FILE, summary)
    return summary
