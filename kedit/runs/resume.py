"""Starting and resuming a run directory: one implementation for ``kedit bench`` and ``kedit pitfalls``.

:func:`start_run` writes ``run.json`` for a new run, and refuses a folder that already holds a run
(so results of two runs are never mixed) unless the caller resumes it. A resume compares the stored
``run.json`` with the fresh one on the fields of :data:`IDENTITY` for the run's ``kind`` (everything
that changes the numbers) and refuses naming what differs; otherwise the stored one stays in force
and the resuming session is appended to its ``sessions``, so a run finished on another device or
version says so.

Bench runs also key each record by :func:`case_key` (position plus a digest of the case), so a
resumed run skips exactly the cases already on disk, and replay the edits saved under ``edits/``
(:func:`stored_edit_dirs`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.paths import sha256_text, write_json_atomic
from kedit.requests import Case
from kedit.runs.layout import (
    BENCH,
    CASES_FILE,
    CURVE_FILE,
    EDITS_DIR,
    LONGTAIL_PROBE,
    PITFALLS_CONFLICT,
    PITFALLS_ROUND,
    RESULTS_FILE,
    RUN_FILE,
)
from kedit.runs.provenance import timestamp

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


Getter = Callable[[Mapping[str, Any]], Any]


def _in(section: str, key: str) -> Getter:
    return lambda info: (info.get(section) or {}).get(key)


def _top(key: str) -> Getter:
    return lambda info: info.get(key)


# Per kind, the run.json fields that must match for a run to be resumed: (label, getter). The kind
# itself is compared first, so a folder of another kind of run is refused as such.
_PITFALLS_IDENTITY: tuple[tuple[str, Getter], ...] = (
    ("method", _top("method")),
    ("mle", _top("mle")),
    ("hparams", _top("hparams")),
    ("return_hparams", _top("return_hparams")),
    ("model.fingerprint", _in("model", "fingerprint")),
    ("data.sha256", _in("data", "sha256")),
    ("data.prompts_sha256", _in("data", "prompts_sha256")),
)
IDENTITY: Mapping[str, tuple[tuple[str, Getter], ...]] = {
    BENCH: (
        ("model fingerprint", _in("model", "fingerprint")),
        # the token put before every text (kedit.models.start_token); runs before it was added have none
        ("start token", _in("model", "start_token")),
        ("method", _top("method")),
        ("hyperparameters", _top("hparams")),
        ("data digest", _in("data", "cases_sha256")),
        ("mode", _top("mode_spec")),
        ("held-out set", _in("held_out", "cases_sha256")),
    ),
    PITFALLS_CONFLICT: _PITFALLS_IDENTITY,
    PITFALLS_ROUND: _PITFALLS_IDENTITY,
    LONGTAIL_PROBE: (("model fingerprint", _in("model", "fingerprint")), ("start token", _in("model", "start_token")),
                     ("data digest", _in("data", "cases_sha256")), ("probe settings", _top("probe"))),
}
# What a run of each kind writes besides run.json: found without a run.json, they belong to no run we can resume.
_RUN_OUTPUTS = {BENCH: (RESULTS_FILE, CURVE_FILE, EDITS_DIR), PITFALLS_CONFLICT: (CASES_FILE,),
                PITFALLS_ROUND: (CASES_FILE,), LONGTAIL_PROBE: (RESULTS_FILE,)}


def _key_differences(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> str:
    keys = sorted(set(stored) | set(fresh))
    return ", ".join(f"{key}: {stored.get(key)!r} -> {fresh.get(key)!r}" for key in keys if stored.get(key) != fresh.get(key))


def check_resumable(stored: Mapping[str, Any], fresh: Mapping[str, Any], directory: Path) -> None:
    """Refuse to resume when anything that decides the numbers differs from the stored run."""
    kind = fresh.get("kind")
    if kind not in IDENTITY:
        raise KeditError(f"runs of kind {kind!r} cannot be resumed (known: {', '.join(IDENTITY)})")
    differences = []
    for label, get in (("kind", _top("kind")), *IDENTITY[kind]):
        old, new = canonical(get(stored)), canonical(get(fresh))
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):  # hyperparameters: name the keys that differ
            differences.append(f"{label} ({_key_differences(old, new)})")
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
            "command": info.get("command"), "started": info.get("created") or timestamp()}


def with_session(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` run info with the resuming session appended to its ``sessions`` (the first entry is
    the session that created the run), so a run continued on another device or version says so."""
    sessions = list(stored.get("sessions") or [session_entry(stored)])
    return {**stored, "sessions": [*sessions, session_entry(fresh)]}


def start_run(directory: Path, info: Mapping[str, Any], *, resume: bool) -> dict[str, Any]:
    """Create or reopen the run directory for ``info`` (a run.json with a ``kind`` of :data:`IDENTITY`);
    return the run.json now in force.

    A fresh run refuses a folder that already holds a run, or the outputs of one without its
    run.json; a resume checks the stored run.json against ``info`` and keeps the stored one (plus
    this session and a resume count). Resuming a folder without run.json starts the run afresh.
    """
    directory = Path(directory)
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
    outputs = _RUN_OUTPUTS.get(str(info.get("kind")), ())
    leftovers = [name for name in outputs if (directory / name).exists()]
    if leftovers:
        raise ResumeError(f"{directory} holds {', '.join(leftovers)} but no {RUN_FILE}: "
                          "it is not a run this version can resume; choose another --out folder")
    fresh = canonical(dict(info))
    write_json_atomic(run_file, fresh)
    return fresh


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
