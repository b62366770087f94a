"""Reading run directories (``kedit bench``, ``kedit pitfalls``, ``kedit demo``) for a report.

A run directory holds ``run.json`` (what was run: model, method, data, mode, ``kind``),
``results.jsonl`` (one record per case), ``summary.json`` (means) and, for sequential runs,
``curve.jsonl`` (one summary per checkpoint); :mod:`kedit.runs` writes them and names them. A demo
folder has no ``run.json``; its ``summary.json`` carries ``kind: kedit-demo`` and the same facts.

Reading is tolerant: a folder that cannot be used becomes a :class:`RunFailure` that says why,
and the report lists it instead of stopping. A run without ``kind`` whose records are
:func:`kedit.evaluate` records is a bench run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.runs import (
    BENCH,
    CURVE_FILE,
    DEMO,
    PITFALLS_CONFLICT,
    PITFALLS_ROUND,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    BadLine,
    read_lines,
)

KINDS = (BENCH, PITFALLS_CONFLICT, PITFALLS_ROUND)
# Other spellings of a kind found in files; a demo is a bench run of single edits.
KIND_ALIASES = {"kedit-bench": BENCH, DEMO: BENCH, "demo": BENCH}
EVALUATION_PROTOCOLS = ("token", "probability")


@dataclass(frozen=True)
class CurvePoint:
    """One checkpoint of a sequential run: the summary after ``n_edits`` edits."""

    n_edits: int
    summary: Mapping[str, Any]
    # the cases measured at this checkpoint, when the curve line carries them ("records"): for intervals
    records: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Run:
    """A readable run directory."""

    path: Path
    kind: str  # one of KINDS
    info: Mapping[str, Any]  # run.json (a demo's summary.json)
    summary: Mapping[str, Any]  # summary.json
    records: tuple[Mapping[str, Any], ...]
    curve: tuple[CurvePoint, ...]  # sorted by n_edits; empty unless sequential
    notes: tuple[str, ...]  # what is odd but not fatal (e.g. a sequential run without curve.jsonl)

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The :func:`kedit.summarize`-shaped part of the summary (a demo nests it under ``metrics``)."""
        return summary_metrics(self.summary)

    @property
    def method(self) -> str:
        return str(self.info.get("method") or self.summary.get("method") or "?")

    @property
    def model_name(self) -> str:
        model = self.info.get("model") or self.summary.get("model")
        name = model.get("name") if isinstance(model, Mapping) else model
        return str(name or "?")

    @property
    def fingerprint(self) -> str | None:
        model = self.info.get("model") or self.summary.get("model")
        nested = model.get("fingerprint") if isinstance(model, Mapping) else None
        value = self.info.get("fingerprint") or nested
        return str(value) if value else None

    @property
    def mode(self) -> str | None:
        value = self.info.get("mode")
        return str(value) if value else None

    @property
    def n(self) -> int | None:
        value = self.info.get("n", self.summary.get("cases"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def data(self) -> Mapping[str, Any]:
        """The data spec (name/path/split and sha256) as recorded; a bare string becomes ``{"name": ...}``."""
        data = self.info.get("data")
        if isinstance(data, Mapping):
            return data
        return {"name": str(data)} if data else {}


@dataclass(frozen=True)
class RunFailure:
    """A directory that could not be read as a run, and why."""

    path: Path
    reason: str


def summary_metrics(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    nested = summary.get("metrics")
    if isinstance(nested, Mapping) and any(p in nested for p in EVALUATION_PROTOCOLS):
        return nested
    return summary


class _Unreadable(KeditError):
    """Raised inside this module only; becomes a RunFailure."""


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise _Unreadable(f"{path.name} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise _Unreadable(f"{path.name} is not valid JSON ({error}); the run may still be writing it") from None
    if not isinstance(payload, dict):
        raise _Unreadable(f"{path.name} holds a JSON {type(payload).__name__}, expected an object")
    return payload


def _read_lines(path: Path) -> list[dict[str, Any]]:
    # Never repair: the run may still be writing its last line, which is simply not a record yet.
    try:
        return read_lines(path)
    except BadLine as error:  # named within the run directory, like every other reason here
        raise _Unreadable(f"{error.path.name} line {error.number} {error.problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _Unreadable(str(error)) from None


def is_evaluation_record(record: Mapping[str, Any]) -> bool:
    """A record written by :func:`kedit.evaluate`: a ``pre`` state under the token or probability protocol."""
    return any(isinstance(record.get(p), Mapping) and "pre" in record[p] for p in EVALUATION_PROTOCOLS)


def _kind(info: Mapping[str, Any], records: Sequence[Mapping[str, Any]], source: str) -> str:
    raw = info.get("kind")
    if raw is None:
        if records and is_evaluation_record(records[0]):
            return BENCH
        keys = ", ".join(sorted(records[0])) if records else "none: results.jsonl is empty or missing"
        raise _Unreadable(
            f"{source} has no 'kind' and the records are not kedit.evaluate() records (their keys: {keys}); "
            f"add \"kind\": one of {', '.join(KINDS)}"
        )
    kind = KIND_ALIASES.get(str(raw), str(raw))
    if kind not in KINDS:
        raise _Unreadable(f"{source} has kind {raw!r}, which a report cannot show (known: {', '.join(KINDS)})")
    return kind


def _curve(path: Path) -> tuple[CurvePoint, ...]:
    points = []
    for number, line in enumerate(_read_lines(path), start=1):
        n_edits = line.get("n_edits")
        if not isinstance(n_edits, int) or isinstance(n_edits, bool):
            raise _Unreadable(f"{CURVE_FILE} line {number} has no integer 'n_edits' (got {n_edits!r})")
        # The checkpoint's summary is nested under "summary" (or "metrics"), or is the line itself.
        summary = line.get("summary", line.get("metrics", line))
        if not isinstance(summary, Mapping):
            raise _Unreadable(f"{CURVE_FILE} line {number}: 'summary' is not an object")
        cases = line.get("records")
        records = tuple(c for c in cases if isinstance(c, Mapping)) if isinstance(cases, list) else ()
        points.append(CurvePoint(n_edits, summary_metrics(summary), records))
    return tuple(sorted(points, key=lambda point: point.n_edits))


def read_run(directory: str | Path) -> Run:
    """Read one run directory; raises :class:`KeditError` saying what is missing or broken."""
    try:
        return _read_run(Path(directory))
    except _Unreadable as error:
        raise KeditError(f"{directory}: {error}") from None


def _read_run(path: Path) -> Run:
    if not path.is_dir():
        raise _Unreadable("not a directory" if path.exists() else "does not exist")
    run_file, results_file, summary_file = path / RUN_FILE, path / RESULTS_FILE, path / SUMMARY_FILE
    records = _read_lines(results_file) if results_file.is_file() else []
    if run_file.is_file():
        info, source = _read_json_object(run_file), RUN_FILE
    elif summary_file.is_file() and _read_json_object(summary_file).get("kind") == DEMO:
        info, source = _read_json_object(summary_file), SUMMARY_FILE
    else:
        present = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise _Unreadable(f"no {RUN_FILE} (the folder holds: {present}); is this a kedit run directory?")
    kind = _kind(info, records, source)
    curve: tuple[CurvePoint, ...] = _curve(path / CURVE_FILE) if (path / CURVE_FILE).is_file() else ()
    notes = []
    if summary_file.is_file():
        summary = _read_json_object(summary_file)
    elif info.get("mode") == "sequential" and curve:
        # A sequential run stopped part way still has a curve: shown up to its last checkpoint, and
        # said so, with the run's size as the number of edits that checkpoint measured.
        last = curve[-1]
        summary = {**last.summary, "cases": last.n_edits}
        info = {**info, "n": last.n_edits, "planned_n": info.get("n")}
        notes.append(f"unfinished: stopped after {last.n_edits} of {info['planned_n']} edits (no {SUMMARY_FILE}); "
                     f"its metrics are those of the checkpoint at {last.n_edits} edits")
    else:
        raise _Unreadable(
            f"no {SUMMARY_FILE}: the run has not finished or was interrupted "
            f"({RESULTS_FILE} holds {len(records)} complete record(s)); resume it, then report"
        )
    if not curve and info.get("mode") == "sequential":
        notes.append(f"sequential run without {CURVE_FILE}: no curve to draw")
    expected = summary.get("cases")
    if kind == BENCH and isinstance(expected, int) and records and expected != len(records):
        notes.append(f"{SUMMARY_FILE} counts {expected} cases but {RESULTS_FILE} holds {len(records)} records")
    return Run(path, kind, info, summary, tuple(records), curve, tuple(notes))


def read_runs(directories: Iterable[str | Path]) -> tuple[list[Run], list[RunFailure]]:
    """Every readable run, in the order given, and a failure (with its reason) for each other folder."""
    runs: list[Run] = []
    failures: list[RunFailure] = []
    for directory in directories:
        path = Path(directory)
        try:
            runs.append(_read_run(path))
        except _Unreadable as error:
            failures.append(RunFailure(path, str(error)))
    return runs, failures
