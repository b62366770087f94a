"""The demo job: edit each built-in demo fact on its own, measure it, revert it, and write a report.

One edit per fact (never a batch): each record then says what *that* edit did, and the model is
back to its original weights before the next fact, so the facts cannot interfere.

Files written to ``out_dir``:

* ``results.jsonl`` — one record per fact, appended and fsynced as each fact finishes
  (:func:`kedit.runs.append_lines`), so an interrupted run leaves the records finished so far;
* ``summary.json`` — metric means of both protocols, model fingerprint, command, timings;
* ``report.md`` and PNG plots — built from those two files alone (see :mod:`kedit.reports`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kedit.api import edit as compute_edit
from kedit.data.demo import demo_cases
from kedit.errors import KeditError, KeditWarning
from kedit.evaluate.evaluation import evaluate, summarize
from kedit.methods import Edit, get_method
from kedit.models.loading import DEFAULT_MODEL, LoadedModel, load_model
from kedit.models.scoring import top_next_tokens
from kedit.paths import atomic_path
from kedit.reports import demo_report, write_plots
from kedit.requests import Case
from kedit.runs import (
    DEMO,
    RESULTS_FILE,
    SUMMARY_FILE,
    append_lines,
    model_info,
    portable_argument,
    portable_path,
    provenance,
    write_json_atomic,
    write_lines_atomic,
)

REPORT_FILE = "report.md"
TOP_K = 5


class DemoListener(Protocol):
    """Told when each fact starts and finishes (the CLI draws its progress bar with this)."""

    def case_started(self, index: int, total: int, case: Case) -> None: ...

    def case_finished(self, index: int, total: int, record: dict[str, Any]) -> None: ...


class SilentListener:
    """The default listener: reports nothing."""

    def case_started(self, index: int, total: int, case: Case) -> None:
        return None

    def case_finished(self, index: int, total: int, record: dict[str, Any]) -> None:
        return None


def _top_tokens(lm: LoadedModel, prompt: str) -> list[list[Any]]:
    return [[token, probability] for token, probability in top_next_tokens(lm, [prompt], k=TOP_K)[0]]


def _top_tokens_with(lm: LoadedModel, edit: Edit, prompt: str) -> list[list[Any]]:
    """Top next tokens with ``edit`` applied; the model is reverted even if scoring fails."""
    edit.apply(lm)
    try:
        return _top_tokens(lm, prompt)
    finally:
        edit.revert(lm)


def edit_and_measure(
    lm: LoadedModel,
    case: Case,
    method: str,
    overrides: Mapping[str, Any],
    hparams_file: str | Path | None = None,
) -> tuple[dict[str, Any], Edit]:
    """Compute one edit for ``case``, evaluate it (with fluency) and return its record, model unedited.

    Warnings raised meanwhile (e.g. "the model already answers the new target") are kept in the
    record instead of being printed over the progress display.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KeditWarning)
        started = time.perf_counter()
        edit = compute_edit(lm, method, case, hparams_file=hparams_file, apply=False, **overrides)
        edit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        record = evaluate(lm, [case], edit, fluency=True)[0]
        record["top_tokens"] = {
            "prompt": case.request.text,
            "pre": _top_tokens(lm, case.request.text),
            "post": _top_tokens_with(lm, edit, case.request.text),
        }
        evaluate_seconds = time.perf_counter() - started
    record["edit"] = {"method": edit.method, **{k: v for k, v in edit.info.items() if k != "seconds"}}
    record["seconds"] = {"edit": edit_seconds, "evaluate": evaluate_seconds}
    record["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    return record, edit


def build_summary(
    records: Sequence[dict[str, Any]],
    lm: LoadedModel,
    model_name: str,
    method: str,
    hparams: Mapping[str, Any] | None,
    seconds: Mapping[str, float],
    command: str,
) -> dict[str, Any]:
    """Everything ``summary.json`` holds: metric means per protocol plus what is needed to reproduce."""
    layers = {record["edit"].get("layer") for record in records} - {None}
    summary: dict[str, Any] = {
        "kind": DEMO,
        "model": model_info(lm, model_name),
        "method": method,
        "hparams": dict(hparams or {}),
        "cases": len(records),
        "case_ids": [record.get("case_id") for record in records],
        "metrics": summarize(records),
        "seconds": dict(seconds),
        **provenance(command),
    }
    if len(layers) == 1:
        summary["layer"] = layers.pop()
    return summary


def write_report(records: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> Path:
    """Plots, ``summary.json`` and ``report.md`` (each written atomically); returns the report path."""
    plots = write_plots(records, summary, out_dir)
    summary["files"] = {
        RESULTS_FILE: "one JSON record per fact (both protocols, fluency, top tokens, timings)",
        SUMMARY_FILE: "metric means, model fingerprint, command, timings",
        REPORT_FILE: "this page",
        **{plot.name: "plot" for plot in plots},
    }
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    report = out_dir / REPORT_FILE
    with atomic_path(report) as tmp:
        tmp.write_text(demo_report(records, summary, [plot.name for plot in plots]), encoding="utf-8")
    return report


def _check_inputs(n: int, method: str, hparams_file: str | Path | None, overrides: Mapping[str, Any]) -> None:
    """Fail on a bad count, method or hyperparameter before the model is loaded."""
    if n < 1:
        raise KeditError(f"the number of demo facts must be at least 1, got {n}")
    get_method(method).default_hparams(None, hparams_file, overrides)


def run_demo(
    model: str | LoadedModel = DEFAULT_MODEL,
    n: int = 10,
    out_dir: str | Path = "demo-report",
    method: str = "rome",
    *,
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    hparams_file: str | Path | None = None,
    command: str | None = None,
    listener: DemoListener | None = None,
) -> dict[str, Any]:
    """Edit the first ``n`` demo facts one at a time with ``method`` and write the report; return the summary.

    ``model`` is a name or path for :func:`kedit.load_model`, or an already loaded model (which is
    left with its original weights). ``command`` is recorded in the report (default: this call).
    """
    overrides = dict(overrides or {})
    _check_inputs(n, method, hparams_file, overrides)
    listener = listener or SilentListener()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown_model = model if isinstance(model, LoadedModel) else portable_argument(str(model))
    command = command or f"run_demo(model={shown_model!r}, n={n}, out_dir={portable_path(out_dir)!r}, method={method!r})"
    cases = demo_cases(n)

    started = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    model_name = lm.source if isinstance(model, LoadedModel) else model
    load_seconds = time.perf_counter() - started

    records: list[dict[str, Any]] = []
    hparams: Mapping[str, Any] | None = None
    results = out_dir / RESULTS_FILE
    write_lines_atomic(results, [])  # the records of an earlier demo in this folder go
    for index, case in enumerate(cases):
        listener.case_started(index, len(cases), case)
        record, edit = edit_and_measure(lm, case, method, overrides, hparams_file)
        hparams = hparams or edit.hparams
        append_lines(results, [record])
        records.append(record)
        listener.case_finished(index, len(cases), record)

    seconds = {
        "load_model": load_seconds,
        "edits": sum(r["seconds"]["edit"] for r in records),
        "evaluation": sum(r["seconds"]["evaluate"] for r in records),
        "total": time.perf_counter() - started,
    }
    summary = build_summary(records, lm, str(model_name), method, hparams, seconds, command)
    write_report(records, summary, out_dir)
    return summary
