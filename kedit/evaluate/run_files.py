"""The files of a ``kedit bench`` run directory, written so that a killed run loses at most one unit.

Layout (read back by :mod:`kedit.reports.runs`):

* ``run.json`` — what is being run (kind ``bench``, model name and fingerprint, method, resolved
  hyperparameters, data spec and digest, mode), written atomically before any work starts;
* ``results.jsonl`` — one :func:`kedit.evaluate`-style record per case. Single and batch runs append
  each unit's lines and ``fsync`` them before the next unit starts, so after ``kill -9`` the file
  holds whole records plus at most one partial last line, which :func:`recover_lines` cuts off.
  Sequential runs write it once, atomically, from the final model state;
* ``curve.jsonl`` — sequential runs: one ``{"n_edits": k, "summary": {...}}`` line per checkpoint;
* ``edits/NNNNN/`` — sequential runs: each kept edit as saved by ``Edit.save`` (deltas + sha256),
  replayed on resume instead of being recomputed;
* ``summary.json`` — means, survey metrics and timings, written atomically at the end.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.paths import atomic_path, sha256_text, write_json_atomic
from kedit.requests import Case

# The same names kedit.reports.runs reads (evaluate/ may not import reports/, so they are spelled here).
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
CURVE_FILE = "curve.jsonl"
EDITS_DIR = "edits"
KIND = "bench"
DIGEST_CHARS = 16  # enough to tell cases apart; the full data digest lives in run.json


class ResumeError(KeditError):
    """A run directory cannot be resumed with these settings (the message names what differs)."""


def case_digest(case: Case) -> str:
    """sha256 of the case's canonical JSON (request and every probe)."""
    return sha256_text(json.dumps(case.to_dict(), sort_keys=True, ensure_ascii=False))


def case_key(index: int, case: Case) -> str:
    """The resume key of a case: its position in the run and a digest of its content."""
    return f"{index}:{case_digest(case)[:DIGEST_CHARS]}"


def cases_digest(cases: Sequence[Case]) -> str:
    """sha256 over the ordered case digests: changes when any case, the order or the count changes."""
    return sha256_text("\n".join(case_digest(case) for case in cases))


def canonical(payload: Any) -> Any:
    """``payload`` as it reads back from JSON (tuples become lists), so stored and fresh values compare equal."""
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


def recover_lines(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a partial last line (a write cut short) is truncated away.

    A line that ends with its newline but is not valid JSON is corruption, not an interruption:
    it raises naming the file and line rather than being dropped.
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    if complete < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for number, line in enumerate(data[:complete].decode("utf-8").split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise KeditError(f"{path} line {number} is not valid JSON ({error.msg}); the file is corrupted") from None
        if not isinstance(record, dict):
            raise KeditError(f"{path} line {number} holds a JSON {type(record).__name__}, expected an object")
        records.append(record)
    return records


def append_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records as JSON lines in one write, then flush and fsync before returning."""
    text = "".join(json.dumps(record, default=str) + "\n" for record in records)
    if not text:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_lines_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` with these JSON lines all at once (a reader sees the old file or the new one)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, default=str) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


# Fields of run.json that must match for a run to be resumed; each is (label, getter).
IDENTITY_FIELDS = (
    ("model fingerprint", lambda info: (info.get("model") or {}).get("fingerprint")),
    # the token put before every text (kedit.models.start_token); runs before it was added have none
    ("start token", lambda info: (info.get("model") or {}).get("start_token")),
    ("method", lambda info: info.get("method")),
    ("hyperparameters", lambda info: info.get("hparams")),
    ("data digest", lambda info: (info.get("data") or {}).get("cases_sha256")),
    ("mode", lambda info: info.get("mode_spec")),
    ("held-out set", lambda info: (info.get("held_out") or {}).get("cases_sha256")),
)


def _hparam_differences(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> str:
    keys = sorted(set(stored) | set(fresh))
    return ", ".join(f"{key}: {stored.get(key)!r} -> {fresh.get(key)!r}" for key in keys if stored.get(key) != fresh.get(key))


def check_resumable(stored: Mapping[str, Any], fresh: Mapping[str, Any], directory: Path) -> None:
    """Refuse to resume when anything that decides the numbers differs from the stored run."""
    differences = []
    for label, get in IDENTITY_FIELDS:
        old, new = canonical(get(stored)), canonical(get(fresh))
        if old == new:
            continue
        if label == "hyperparameters" and isinstance(old, dict) and isinstance(new, dict):
            differences.append(f"hyperparameters ({_hparam_differences(old, new)})")
        else:
            differences.append(f"{label} ({old!r} stored, {new!r} now)")
    if differences:
        raise ResumeError(
            f"cannot resume {directory}: it was run with a different " + "; ".join(differences)
            + ". Use the same settings, or a new --out folder."
        )


def session_entry(info: Mapping[str, Any]) -> dict[str, Any]:
    """Where one session of a run ran: device, versions, command and start time (from its run info)."""
    return {"device": (info.get("model") or {}).get("device"), "versions": info.get("versions"),
            "command": info.get("command"),
            "started": info.get("created") or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def with_session(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` run info with the resuming session appended to its ``sessions`` (the first entry is
    the session that created the run), so a run continued on another device or version says so."""
    sessions = list(stored.get("sessions") or [session_entry(stored)])
    return {**stored, "sessions": [*sessions, session_entry(fresh)]}


def start_run_dir(directory: Path, info: Mapping[str, Any], *, resume: bool) -> dict[str, Any]:
    """Create or reopen the run directory; return the run.json now in force.

    A fresh run refuses a folder that already holds a run (so results are never mixed); a resume
    checks the stored run.json against ``info`` and keeps the stored one (plus a resume count).
    """
    directory.mkdir(parents=True, exist_ok=True)
    run_file = directory / RUN_FILE
    if run_file.is_file():
        if not resume:
            raise ResumeError(f"{directory} already holds a run ({RUN_FILE}); pass --resume to continue it, "
                              "or choose another --out folder")
        try:
            stored = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ResumeError(f"{run_file} is not valid JSON ({error.msg})") from None
        check_resumable(stored, info, directory)
        stored = with_session(stored, info)
        stored["resumed"] = int(stored.get("resumed", 0)) + 1
        write_json_atomic(run_file, stored)
        return stored
    leftovers = [name for name in (RESULTS_FILE, CURVE_FILE, EDITS_DIR) if (directory / name).exists()]
    if leftovers:
        raise ResumeError(f"{directory} holds {', '.join(leftovers)} but no {RUN_FILE}: "
                          "it is not a run this version can resume; choose another --out folder")
    fresh = canonical(dict(info))
    write_json_atomic(run_file, fresh)
    return fresh


def edit_dir(directory: Path, number: int) -> Path:
    return directory / EDITS_DIR / f"{number:05d}"


def stored_edit_dirs(directory: Path) -> list[Path]:
    """Saved edits in order 0, 1, 2, ...; leftovers of an interrupted save (hidden temporaries) are removed.

    A gap in the numbering means files were deleted by hand: resuming would replay the wrong
    model state, so it is refused.
    """
    root = directory / EDITS_DIR
    if not root.is_dir():
        return []
    found = {}
    for entry in root.iterdir():
        if entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)  # a save cut short by the kill: atomic_path's temporary
            continue
        if not entry.name.isdigit():
            raise ResumeError(f"{root} holds {entry.name!r}, which is not a saved edit; remove it")
        found[int(entry.name)] = entry
    expected = list(range(len(found)))
    if sorted(found) != expected:
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ResumeError(f"{root}: saved edits {missing[:5]} are missing; the sequence cannot be replayed")
    return [found[number] for number in expected]
