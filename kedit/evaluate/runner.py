"""``run_bench``: run cases through an editing method in single, batch or sequential mode, resumably.

Modes (``mode`` strings as the CLI takes them):

* ``single`` — each case is edited alone (``kedit.edit``, applied), measured, and reverted bit for bit.
* ``batch:N`` — cases are cut into fixed chunks of N by position; each chunk is edited together (a
  ``batch_capable`` method solves it jointly, the others loop inside ``compute``), all its cases are
  measured on that one edited state, then the edit is reverted.
* ``sequential[:E[:B]]`` — every case is edited on top of the earlier ones (one :class:`EditSession`,
  so statistics are computed once); every E edited cases and at the end all cases edited so far are
  measured on the current state and one summary line goes to ``curve.jsonl``. The final state's
  records go to ``results.jsonl``. ``B`` (default 1) cases go into each edit, as in the AlphaEdit
  paper's sequential batches of 100: a checkpoint then falls after the first edit that reaches it.

Scoring follows :func:`kedit.evaluate`: probes go through :func:`score` in batches. The unedited
state is scored once, up front, in fixed chunks of ``eval_batch`` cases; each edited state is
scored once for all cases of its unit (plus the held-out cases). Chunks are fixed by case position,
so a resumed run scores exactly the same batches as an uninterrupted one and its numbers are
identical bit for bit.

Crash safety: see :mod:`kedit.runs` (the run directory's files, how they are written, resume).
``kill -9`` at any moment loses at most the unit in flight; ``resume=True`` continues, never
duplicating a record.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from kedit.edits import Edit, EditStack
from kedit.errors import KeditError, KeditWarning
from kedit.evaluate.evaluation import ProbeLayout, layout_probes, summarize
from kedit.evaluate.evaluation import case_record as evaluation_case_record
from kedit.evaluate.lifelong import lifelong_summary
from kedit.evaluate.survey import HELD_OUT, held_out_block, held_out_probe_case, survey_summary
from kedit.methods import load_edit, method_for
from kedit.methods.base import hparams_dict, is_trained, open_session
from kedit.methods.outcome import TARGETS_REACHED, record_outcome, warn_known_targets
from kedit.models.loading import LoadedModel
from kedit.models.scoring import TargetScore, score
from kedit.requests import Case
from kedit.runs import (
    BENCH,
    CURVE_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    ResumeError,
    append_lines,
    case_key,
    cases_digest,
    edit_dir,
    model_info,
    provenance,
    read_lines,
    start_run,
    stored_edit_dirs,
    write_json_atomic,
    write_lines_atomic,
)

SINGLE, BATCH, SEQUENTIAL = "single", "batch", "sequential"
DEFAULT_EVAL_EVERY = 10
LOG_CHECKPOINTS = "log"  # sequential:log checkpoints after 1, 2, 5, 10, 20, 50, 100, ... edits
DEFAULT_EVAL_BATCH = 64
EDIT_WARNINGS = "warnings"  # key of a stored sequential edit's info: the warnings its computation raised


@dataclass(frozen=True)
class Mode:
    """How cases are edited: ``kind`` with ``unit`` requests per edit and (sequential) a checkpoint interval."""

    kind: str
    unit: int = 1  # requests per edit: N for batch, B for sequential, 1 for single
    eval_every: int = 0  # sequential only: edited cases between checkpoints; 0 = the 1-2-5 series ("log")

    @property
    def spec(self) -> str:
        if self.kind == BATCH:
            return f"{BATCH}:{self.unit}"
        if self.kind == SEQUENTIAL:
            per_edit = f":{self.unit}" if self.unit > 1 else ""
            return f"{SEQUENTIAL}:{self.eval_every or LOG_CHECKPOINTS}{per_edit}"
        return SINGLE

    def checkpoints(self, n: int) -> set[int]:
        """Numbers of edits after which a sequential run re-evaluates every edited case (always n)."""
        if self.eval_every:
            return set(range(self.eval_every, n + 1, self.eval_every)) | {n}
        series = {step * 10**power for power in range(len(str(n))) for step in (1, 2, 5)}
        return {count for count in series if count <= n} | {n}


def _positive(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) >= 1 else None


def parse_mode(text: str) -> Mode:
    """``single``, ``batch:N`` or ``sequential[:E[:B]]`` (E defaults to 10; ``sequential:log`` checkpoints
    after 1, 2, 5, 10, 20, 50, ... edited cases; B cases per edit, default 1)."""
    kind, _, rest = str(text).strip().partition(":")
    hint = ("use single, batch:N (e.g. batch:100) or sequential[:E[:B]] (e.g. sequential:10, sequential:log "
            "or sequential:log:100 for 100 cases per edit)")
    if kind == SINGLE and not rest:
        return Mode(SINGLE)
    if kind == BATCH:
        if (size := _positive(rest)) is not None:
            return Mode(BATCH, size)
        raise KeditError(f"mode {text!r}: batch needs a positive whole number after ':'; {hint}")
    if kind == SEQUENTIAL:
        every, _, per_edit = rest.partition(":")
        unit = _positive(per_edit) if per_edit else 1
        if unit is None:
            raise KeditError(f"mode {text!r}: the cases per edit (after the second ':') must be a positive "
                             f"whole number; {hint}")
        if not every:
            return Mode(SEQUENTIAL, unit, DEFAULT_EVAL_EVERY)
        if every == LOG_CHECKPOINTS:
            return Mode(SEQUENTIAL, unit, 0)
        if (interval := _positive(every)) is not None:
            return Mode(SEQUENTIAL, unit, interval)
        raise KeditError(f"mode {text!r}: sequential needs a positive whole number or 'log' after ':'; {hint}")
    raise KeditError(f"unknown mode {text!r}; {hint}")


# ------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class CaseProbes:
    """One case's (prompt, target) pairs and where each probe sits among them."""

    case: Case
    pairs: tuple[tuple[str, str], ...]
    layout: ProbeLayout


def case_probes(case: Case) -> CaseProbes:
    pairs, (layout,) = layout_probes([case])
    return CaseProbes(case, tuple(pairs), layout)


def score_groups(lm: LoadedModel, groups: Sequence[CaseProbes], eval_batch: int) -> list[list[TargetScore]]:
    """Scores of each case's pairs; every ``eval_batch`` consecutive cases share one :func:`score` call."""
    results: list[list[TargetScore]] = []
    for start in range(0, len(groups), eval_batch):
        chunk = groups[start : start + eval_batch]
        flat = score(lm, [pair for group in chunk for pair in group.pairs])
        offset = 0
        for group in chunk:
            results.append(flat[offset : offset + len(group.pairs)])
            offset += len(group.pairs)
    return results


def case_record(probes: CaseProbes, before: list[TargetScore], after: list[TargetScore] | None) -> dict[str, Any]:
    """The :func:`kedit.evaluate` record of one case from its own scores (see evaluation.case_record)."""
    return evaluation_case_record(probes.case, probes.layout, before, after)


# --------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Plan:
    """Everything fixed for the whole run."""

    lm: LoadedModel
    method: str
    mode: Mode
    out_dir: Path
    hparams: Any  # the method's resolved hyperparameters (defaults, file, overrides)
    probes: tuple[CaseProbes, ...]
    keys: tuple[str, ...]
    held_out: tuple[CaseProbes, ...]
    eval_batch: int
    progress: bool


@dataclass
class _Clock:
    """Seconds spent in this session, by phase."""

    started: float
    pre_evaluation: float = 0.0
    edits: float = 0.0
    evaluation: float = 0.0
    replay: float = 0.0
    cases: int = 0  # cases finished in this session

    def as_dict(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        return {"pre_evaluation": self.pre_evaluation, "edits": self.edits, "evaluation": self.evaluation,
                "replay": self.replay, "total": total}


def _timed(clock: _Clock, phase: str, function: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return function()
    finally:
        setattr(clock, phase, getattr(clock, phase) + time.perf_counter() - started)


def _edit_info(edit: Edit) -> dict[str, Any]:
    # Timings vary run to run; the record keeps them under "seconds", not in the edit's info.
    return {key: value for key, value in edit.info.items() if key not in ("seconds", "bench_case_key")}


def _unit_records(plan: _Plan, indices: Sequence[int], before: Mapping[int, list[TargetScore]],
                  after: Sequence[list[TargetScore]], held_before: Sequence[list[TargetScore]]) -> list[dict[str, Any]]:
    """Records of ``indices`` (scored together on one edited state) with the held-out block of that state.

    Cases without unedited-state scores in ``before`` (recorded before a resume) get no record.
    """
    held_block = None
    if plan.held_out:
        held_after = after[len(indices):]
        held_records = [case_record(p, b, a) for p, b, a in zip(plan.held_out, held_before, held_after, strict=True)]
        held_block = held_out_block(held_records)
    records = []
    for index, scores in zip(indices, after, strict=False):
        if index not in before:
            continue
        record = {"index": index, "key": plan.keys[index], **case_record(plan.probes[index], before[index], scores)}
        if held_block is not None:
            record[HELD_OUT] = held_block
        records.append(record)
    return records


def _done_keys(plan: _Plan, path: Path) -> set[str]:
    """Keys of the records already in ``results.jsonl`` (its partial last line is cut off first)."""
    done: set[str] = set()
    for number, record in enumerate(read_lines(path, repair=True), start=1):
        key = record.get("key")
        if key not in plan.keys:
            raise ResumeError(f"{path} line {number} is for case {key!r}, which is not in this run's data")
        if key in done:
            raise ResumeError(f"{path} holds case {key!r} twice; the file was edited by hand")
        done.add(key)
    return done


def _pre_scores(plan: _Plan, wanted: set[int], clock: _Clock) -> dict[int, list[TargetScore]]:
    """Unedited-state scores of the fixed ``eval_batch`` chunks that contain a wanted case."""
    scores: dict[int, list[TargetScore]] = {}
    size = plan.eval_batch
    chunks = sorted({index // size for index in wanted})
    shown = plan.progress and len(chunks) > 1
    for chunk in tqdm(chunks, desc="scoring the unedited model", unit="chunk", disable=not shown, file=sys.stderr,
                      leave=False):
        indices = range(chunk * size, min((chunk + 1) * size, len(plan.probes)))
        groups = [plan.probes[index] for index in indices]
        found = _timed(clock, "pre_evaluation", lambda g=groups: score_groups(plan.lm, g, size))
        scores.update(zip(indices, found, strict=True))
    return scores


def _caught(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def _bar(plan: _Plan, initial: int) -> tqdm:
    """Progress over cases; ``initial`` (finished before a resume) does not count towards the rate or ETA."""
    return tqdm(total=len(plan.probes), initial=initial, unit="case", desc=f"{plan.method} {plan.mode.spec}",
                disable=not plan.progress, file=sys.stderr, dynamic_ncols=True)


def _run_units(plan: _Plan, clock: _Clock) -> None:
    """Single and batch modes: edit each unit, score it with the held-out cases, revert, append its lines."""
    done = _done_keys(plan, plan.out_dir / RESULTS_FILE)
    n = len(plan.probes)
    units = [list(range(start, min(start + plan.mode.unit, n))) for start in range(0, n, plan.mode.unit)]
    missing = {index for index in range(n) if plan.keys[index] not in done}
    if not missing:
        return
    before = _pre_scores(plan, missing, clock)
    held_before = _timed(clock, "pre_evaluation", lambda: score_groups(plan.lm, plan.held_out, plan.eval_batch))
    # One session for the run: what a method computes once (AlphaEdit's projectors) is reused by every
    # unit. ``applied`` is never called, since each unit's edit is reverted before the next.
    session = open_session(method_for(plan.lm, plan.method), plan.lm, plan.hparams)
    with _bar(plan, n - len(missing)) as bar:
        _edit_units(plan, session, clock, bar, units, missing, before, held_before)


def _edit_units(plan: _Plan, session: Any, clock: _Clock, bar: tqdm, units: Sequence[list[int]], missing: set[int],
                before: Mapping[int, list[TargetScore]], held_before: Sequence[list[TargetScore]]) -> None:
    results = plan.out_dir / RESULTS_FILE
    for number, unit in enumerate(units):
        todo = [index for index in unit if index in missing]
        if not todo:
            continue
        requests = [plan.probes[index].case.request for index in unit]
        bar.set_postfix_str(plan.probes[unit[0]].case.request.subject[:30])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KeditWarning)
            warn_known_targets(plan.lm, requests)
            started = time.perf_counter()
            edit = session.compute(requests)
            edit_seconds = time.perf_counter() - started
            edit.apply(plan.lm)
        clock.edits += edit_seconds
        try:
            started = time.perf_counter()
            # the whole unit is scored (also its cases recorded before a crash) so batches match an uninterrupted run
            after = score_groups(plan.lm, [plan.probes[i] for i in unit] + list(plan.held_out), plan.eval_batch)
            eval_seconds = time.perf_counter() - started
            clock.evaluation += eval_seconds
        finally:
            edit.revert(plan.lm)
        with warnings.catch_warnings(record=True) as outcome_warnings:
            warnings.simplefilter("always", KeditWarning)
            # the outcome check reads the evaluation's own scores of each request's prompt
            reached = record_outcome(plan.lm, edit, [after[position][plan.probes[index].layout.rewrite_new]
                                                     for position, index in enumerate(unit)])
        records = _unit_records(plan, unit, before, after, held_before)
        info, notes = _edit_info(edit), _caught([*caught, *outcome_warnings])
        written = []
        for record in records:
            if record["index"] not in missing:
                continue
            # the edit's details once per unit, on its first case
            record["edit"] = {"method": edit.method, "unit": number, "unit_size": len(unit),
                              "target_reached": reached[unit.index(record["index"])],
                              **({"info": info} if record["index"] == unit[0] else {})}
            record["seconds"] = {"edit": edit_seconds / len(unit), "evaluate": eval_seconds / len(unit)}
            record["warnings"] = notes
            written.append(record)
        append_lines(results, written)
        clock.cases += len(written)
        bar.update(len(written))


def _keep(edit: Edit, session: Any, stack: EditStack) -> None:
    stack.push(edit)
    session.applied(edit)


def _steps(plan: _Plan) -> list[list[int]]:
    """Case indices of each sequential edit: consecutive groups of ``mode.unit`` cases."""
    n, unit = len(plan.probes), plan.mode.unit
    return [list(range(start, min(start + unit, n))) for start in range(0, n, unit)]


def _replay(plan: _Plan, session: Any, stack: EditStack, clock: _Clock,
            reached_at_edit: dict[int, bool], notes: dict[int, list[str]]) -> list[float]:
    """Re-apply the stored edits in order (sha256-checked by ``load_edit``); return their edit seconds
    and put what each edit's target check found and the warnings it raised (both stored in its
    info) in ``reached_at_edit`` and ``notes``."""
    stored = stored_edit_dirs(plan.out_dir)
    steps = _steps(plan)
    if len(stored) > len(steps):
        raise ResumeError(f"{plan.out_dir} holds {len(stored)} saved edits for {len(steps)} edits of this run")
    seconds = []
    for number, folder in enumerate(tqdm(stored, desc="replaying stored edits", unit="edit", leave=False,
                                         disable=not plan.progress or not stored, file=sys.stderr)):
        edit = load_edit(folder)
        info = edit.info
        expected = plan.keys[steps[number][0]]
        if info.get("bench_case_key") != expected:
            raise ResumeError(f"{folder} is the edit of case {info.get('bench_case_key')!r}, "
                              f"but edit {number} of this run starts with case {expected!r}")
        _timed(clock, "replay", lambda e=edit: _keep(e, session, stack))
        seconds.append(float(info.get("seconds", 0.0)))
        for index, ok in zip(steps[number], info.get(TARGETS_REACHED) or [], strict=False):
            reached_at_edit[index] = bool(ok)
        for index in steps[number]:
            notes[index] = list(info.get(EDIT_WARNINGS) or [])
    return seconds


def _state_records(plan: _Plan, count: int, before: Mapping[int, list[TargetScore]],
                   held_before: Sequence[list[TargetScore]], clock: _Clock) -> list[dict[str, Any]]:
    """Records of the first ``count`` cases measured on the current (sequentially edited) state."""
    indices = list(range(count))
    after = _timed(clock, "evaluation", lambda: score_groups(
        plan.lm, [plan.probes[i] for i in indices] + list(plan.held_out), plan.eval_batch))
    return _unit_records(plan, indices, before, after, held_before)


def _checkpoint(plan: _Plan, records: Sequence[dict[str, Any]], count: int) -> None:
    summary = summarize(records) | survey_summary(records) | lifelong_summary(records)
    append_lines(plan.out_dir / CURVE_FILE, [{"n_edits": count, "summary": summary}])


def _run_sequential(plan: _Plan, clock: _Clock, restore: bool) -> None:
    """Sequential mode: replay stored edits, keep editing, checkpoint every E cases, write final records."""
    session = open_session(method_for(plan.lm, plan.method), plan.lm, plan.hparams)
    stack = EditStack(plan.lm)
    n = len(plan.probes)
    steps = _steps(plan)
    curve_done = {line.get("n_edits") for line in read_lines(plan.out_dir / CURVE_FILE, repair=True)}
    due = sorted(plan.mode.checkpoints(n))

    def reaches_checkpoint(previous: int, count: int) -> bool:
        # with B cases per edit a checkpoint that falls inside an edit is taken right after it
        return any(previous < point <= count for point in due)

    try:
        # the unedited state first: replaying the stored edits changes the model
        before = _pre_scores(plan, set(range(n)), clock)
        held_before = _timed(clock, "pre_evaluation", lambda: score_groups(plan.lm, plan.held_out, plan.eval_batch))
        reached_at_edit: dict[int, bool] = {}
        notes: dict[int, list[str]] = {}
        step_seconds = _replay(plan, session, stack, clock, reached_at_edit, notes)
        done_steps = len(step_seconds)
        done = sum(len(step) for step in steps[:done_steps])
        records: list[dict[str, Any]] | None = None
        previous = done - len(steps[done_steps - 1]) if done_steps else 0
        if done and reaches_checkpoint(previous, done) and done not in curve_done:
            # killed between saving the edit that reached a checkpoint and writing that checkpoint
            records = _state_records(plan, done, before, held_before, clock)
            _checkpoint(plan, records, done)
        with _bar(plan, done) as bar:
            for number in range(done_steps, len(steps)):
                step = steps[number]
                requests = [plan.probes[index].case.request for index in step]
                bar.set_postfix_str(requests[0].subject[:30])
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", KeditWarning)
                    started = time.perf_counter()
                    edit = session.compute(requests)
                    seconds = time.perf_counter() - started
                    _keep(edit, session, stack)
                    # checked on the state that is kept: the model carrying every earlier edit and this one
                    reached = record_outcome(plan.lm, edit, score(plan.lm, [(r.text, r.target_new) for r in requests]))
                clock.edits += seconds
                for index, ok in zip(step, reached, strict=True):
                    reached_at_edit[index] = ok
                for index in step:
                    notes[index] = _caught(caught)
                edit.info["seconds"] = seconds
                edit.info[EDIT_WARNINGS] = _caught(caught)  # read back when the edit is replayed
                edit.info["bench_case_key"] = plan.keys[step[0]]  # checked when the edit is replayed
                edit.save(edit_dir(plan.out_dir, number))
                step_seconds.append(seconds)
                previous, done = done, done + len(step)
                records = None
                if reaches_checkpoint(previous, done):
                    records = _state_records(plan, done, before, held_before, clock)
                    _checkpoint(plan, records, done)
                clock.cases += len(step)
                bar.update(len(step))
        if records is None or len(records) != n:
            records = _state_records(plan, n, before, held_before, clock)
        step_of = {index: number for number, step in enumerate(steps) for index in step}
        for record in records:
            index = record["index"]
            number = step_of[index]
            record["edit"] = {"method": plan.method, "unit": number, "unit_size": len(steps[number]),
                              "n_edits_at_evaluation": n,
                              # checked when the edit was made, on the model carrying the earlier ones
                              "target_reached": reached_at_edit.get(index)}
            record["seconds"] = {"edit": step_seconds[number] / len(steps[number])}
            record["warnings"] = notes.get(index, [])
        write_lines_atomic(plan.out_dir / RESULTS_FILE, records)
    finally:
        if restore:
            stack.unwind()


def run_info(lm: LoadedModel, method: str, mode: Mode, cases: Sequence[Case], held_out: Sequence[Case],
             hparams: Mapping[str, Any], *, model_name: str | None, data: Mapping[str, Any] | None,
             command: str | None, batch_capable: bool, held_out_data: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
    """The run.json of a bench run (what kedit.reports.runs reads)."""
    return {
        "kind": BENCH,
        "model": model_info(lm, model_name or lm.source),
        "method": method,
        "batch_capable": batch_capable,
        "hparams": dict(hparams),
        "data": {**dict(data or {}), "cases_sha256": cases_digest(cases), "n": len(cases)},
        "held_out": {"n": len(held_out), "cases_sha256": cases_digest(held_out) if held_out else None,
                     **({"data": dict(held_out_data)} if held_out_data else {})},
        "mode": mode.kind,
        "mode_spec": mode.spec,
        "batch_size": mode.unit,
        "eval_every": mode.eval_every or None,
        "protocol": "token and probability (reported separately)",
        "n": len(cases),
        **provenance(command),
    }


def _summary(out_dir: Path, info: Mapping[str, Any], clock: _Clock, n: int) -> dict[str, Any]:
    records = sorted(read_lines(out_dir / RESULTS_FILE), key=lambda record: record["index"])
    if len(records) != n:
        raise KeditError(f"{out_dir / RESULTS_FILE} holds {len(records)} records, expected {n}")
    seconds = clock.as_dict()
    recorded = {phase: sum((r.get("seconds") or {}).get(phase, 0.0) for r in records) for phase in ("edit", "evaluate")}
    return {
        **summarize(records),
        **survey_summary(records),
        **(lifelong_summary(records) if info.get("mode") == SEQUENTIAL else {}),
        "kind": BENCH,
        "model": info.get("model"),
        "method": info.get("method"),
        "mode": info.get("mode_spec"),
        "seconds": seconds,
        "seconds_recorded": recorded,  # over every session of the run, from the records
        "cases_this_session": clock.cases,
        "cases_per_second": clock.cases / seconds["total"] if seconds["total"] > 0 else None,
    }


def _checked_trained_editor(lm: LoadedModel, method: Any, hparams: Any, cases: Sequence[Case],
                            data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The artifact a trained method will edit with, after refusing evaluation cases it was trained on
    (``allow_training_overlap`` turns the refusal into a loud warning); what run.json records of it."""
    from kedit.training import check_no_overlap

    artifact = method.trained_artifact(lm, hparams)
    check_no_overlap(artifact, cases, str((data or {}).get("name", "cases")),
                     allow=bool(getattr(hparams, "allow_training_overlap", False)))
    manifest = artifact.manifest
    # no folder path: run records are committed, and the editor's sha256 identifies it anywhere
    return {"editor_sha256": manifest.files.get("editor.safetensors"),
            "trained_on": {key: manifest.data.get(key) for key in ("name", "sha256", "cases", "keys_digest")},
            "steps": manifest.training.get("steps"), "best_step": manifest.training.get("best_step")}


def run_bench(
    lm: LoadedModel,
    method: str,
    cases: Sequence[Case],
    *,
    mode: str | Mode = SINGLE,
    out_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    eval_batch: int = DEFAULT_EVAL_BATCH,
    held_out: Sequence[Case] = (),
    hparams_file: str | Path | None = None,
    model_name: str | None = None,
    data: Mapping[str, Any] | None = None,
    command: str | None = None,
    restore: bool = True,
    held_out_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``cases`` through ``method`` in ``mode``, writing the run directory ``out_dir``; return the summary.

    ``held_out`` cases are never edited; their probes (see :func:`held_out_probe_case`) measure
    drawdown and, in sequential runs, upstream accuracy (:mod:`kedit.evaluate.lifelong`, in every
    curve line and the summary); ``held_out_data`` (the file they came from, when not ``data``'s)
    is recorded in run.json. ``data`` (name, path, sha256 of the file) is recorded in run.json. The model is left
    with its original weights unless ``restore=False`` in sequential mode (then the edits stay).
    """
    cases = list(cases)
    if not cases:
        raise KeditError("no cases to run")
    if eval_batch < 1:
        raise KeditError(f"eval_batch must be at least 1, got {eval_batch}")
    mode = mode if isinstance(mode, Mode) else parse_mode(mode)
    overrides = dict(overrides or {})
    chosen = method_for(lm, method)
    resolved = chosen.default_hparams(lm, hparams_file, overrides)
    hparams = hparams_dict(resolved)
    held_cases = [held_out_probe_case(case) for case in held_out]
    info = run_info(lm, method, mode, cases, list(held_out), hparams, model_name=model_name, data=data,
                    command=command, batch_capable=chosen.batch_capable, held_out_data=held_out_data)
    if is_trained(chosen):
        info["trained_editor"] = _checked_trained_editor(lm, chosen, resolved, [*cases, *held_out], data)
    out_dir = Path(out_dir)
    info = start_run(out_dir, info, resume=resume)
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)  # a resumed run is not finished until it says so
    plan = _Plan(lm, method, mode, out_dir, resolved,
                 probes=tuple(case_probes(case) for case in cases),
                 keys=tuple(case_key(index, case) for index, case in enumerate(cases)),
                 held_out=tuple(case_probes(case) for case in held_cases), eval_batch=eval_batch, progress=progress)
    clock = _Clock(time.perf_counter())
    if mode.kind == SEQUENTIAL:
        _run_sequential(plan, clock, restore)
    else:
        _run_units(plan, clock)
    summary = _summary(out_dir, info, clock, len(cases))
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
