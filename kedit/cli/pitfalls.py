"""``kedit pitfalls conflict | round``: the Pitfalls suite (knowledge conflict and knowledge distortion).

Each command edits a model record by record (every case starts and ends on the original weights)
and writes to ``--out`` (names, writing and resume from :mod:`kedit.runs`):

* ``run.json`` — what is being run (kind, model and fingerprint, method, hyperparameters, data and
  prompt files with their sha256, versions, command), written first; ``kedit report`` reads it;
* ``cases.jsonl`` — one JSON line per case, appended and fsynced as each case finishes. With
  ``--resume`` the cases already written are skipped (an unfinished last line from an interrupted
  run is dropped and its case run again); the run must be the same (model, method, hparams, data);
* ``summary.json`` — the mean of each metric per data set, the method, hyperparameters, model
  fingerprint, data sha256, kedit version, command and timings.

Exit status: 0 on success, 2 for bad input, 130 when interrupted (rerun with ``--resume``).
Registered on the ``kedit`` app by :mod:`kedit.cli`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from tqdm.auto import tqdm

from kedit.cli import common
from kedit.errors import DataError
from kedit.models.loading import DEFAULT_MODEL
from kedit.runs import (
    CASES_FILE,
    PITFALLS_CONFLICT,
    PITFALLS_ROUND,
    SUMMARY_FILE,
    append_lines,
    command_line,
    model_info,
    portable_path,
    provenance,
    read_lines,
    start_run,
    write_json_atomic,
)

pitfalls_app = typer.Typer(
    name="pitfalls",
    help="The Pitfalls suite: knowledge conflict (ConflictEdit) and knowledge distortion (RoundEdit).",
    no_args_is_help=True,
)

DataOption = Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The benchmark file (JSON list).")]
PromptsOption = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Relation paraphrase prompts (default: the prompt file beside --data).")]
LimitOption = Annotated[int | None, typer.Option(min=0, help="Use only the first N records of the file.")]
OutOption = Annotated[Path, typer.Option(file_okay=False, help="Folder for run.json, cases.jsonl and summary.json.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out, skipping finished cases.")]
StrictOption = Annotated[bool, typer.Option("--strict", help="Stop at the first malformed record instead of skipping it.")]


# --------------------------------------------------------------------------------------- run folder


@dataclass(frozen=True)
class Suite:
    """One kind of Pitfalls run: how a record becomes a case record, and how records are summarised."""

    kind: str
    run_case: Callable[[Any], dict[str, Any]]  # record -> case record (JSON-ready)
    summarize: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]


def run_suite(suite: Suite, records: Sequence[Any], run_info: dict[str, Any], out: Path, *,
              resume: bool, command: str) -> dict[str, Any]:
    """Run every record not yet in ``out/cases.jsonl``, then write and return the summary."""
    run_info = start_run(out, run_info, resume=resume)
    cases_file = out / CASES_FILE
    # an unfinished last line is cut off, so the case it belonged to runs again after whole lines
    finished = {record.get("case_id") for record in read_lines(cases_file, repair=True)}
    todo = [record for record in records if record.case_id not in finished]
    started = time.perf_counter()
    with tqdm(total=len(records), initial=len(records) - len(todo), unit="case", desc=suite.kind, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for record in todo:
            bar.set_postfix_str(record.case_id)
            append_lines(cases_file, [suite.run_case(record)])
            bar.update(1)
    wanted = {record.case_id for record in records}
    cases = sorted((c for c in read_lines(cases_file) if c.get("case_id") in wanted), key=lambda c: c["index"])
    summary = {
        **run_info,
        **provenance(command),  # this session's, while run_info's are those of the session that created the run
        "cases": len(cases),
        "metrics": suite.summarize(cases),
        "seconds": {
            "run": time.perf_counter() - started,
            "edits": sum(v for c in cases for k, v in c["seconds"].items() if k.startswith("edit_")),
            "scoring": sum(v for c in cases for k, v in c["seconds"].items() if k.startswith("score_")),
        },
        "warnings": sum(len(c.get("warnings", ())) for c in cases),
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


# ---------------------------------------------------------------------------------------- commands


def _prompts_path(data: Path, prompts: Path | None, default_name: str) -> Path:
    if prompts is not None:
        return prompts
    beside = data.parent / default_name
    if not beside.is_file():
        raise DataError(f"no {default_name} beside {data}; pass the paraphrase prompt file with --prompts")
    return beside


def _check_relations(relation_ids: Sequence[str], prompts: Mapping[str, Sequence[str]], path: Path) -> None:
    from kedit.data.pitfalls import missing_relations

    missing = missing_relations(relation_ids, prompts)
    if missing:
        raise DataError(f"{path} has no paraphrases for relation(s) {', '.join(missing)} used by the data")


def _read_records(load: Callable[..., Any], data: Path, limit: int | None, strict: bool) -> Any:
    """``load`` (a :mod:`kedit.data.pitfalls` loader) of ``data``; a file without one usable record is bad input."""
    loaded = load(data, limit=limit, strict=strict)
    if not loaded.records:
        raise DataError(f"{data}: no usable records (read {loaded.records_read}, skipped {len(loaded.problems)})")
    return loaded


def _data_info(data: Path, prompts_path: Path, loaded: Any, limit: int | None) -> dict[str, Any]:
    from kedit.paths import sha256_file

    # paths by the path rule (kedit.runs.portable): the digests identify the files on any machine
    return {"path": portable_path(data), "name": data.name, "sha256": sha256_file(data),
            "prompts_path": portable_path(prompts_path), "prompts_sha256": sha256_file(prompts_path),
            "limit": limit, "records": len(loaded.records),
            "skipped": [str(problem) for problem in loaded.problems]}


def _hparams(method: str, lm: Any, hparams: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    from kedit.methods import get_method
    from kedit.methods.base import hparams_dict

    return hparams_dict(get_method(method).default_hparams(lm, hparams, dict(overrides)))


def _start(method: str, hparams: Path | None, set_: list[str] | None, extra_methods: Sequence[str] = ()) -> dict[str, Any]:
    """Parse overrides and reject an unknown method or hyperparameter before the model is loaded."""
    overrides = common.parse_overrides(set_)
    for name in (method, *extra_methods):
        common.check_method(name, hparams, overrides)
    return overrides


def _finish(summary: Mapping[str, Any], out: Path) -> None:
    console = common.stdout_console()
    for subset, block in summary["metrics"].items():
        shown = ", ".join(f"{name} {value:.3f}" for name, value in block.items() if name != "cases")
        console.print(f"[bold]{escape(subset)}[/] ({block['cases']} cases): {escape(shown)}", soft_wrap=True)
    console.print(f"summary: {escape(str(out / SUMMARY_FILE))}")


def _run_interruptible(run: Callable[[], dict[str, Any]], out: Path) -> dict[str, Any]:
    try:
        return run()
    except KeyboardInterrupt:
        cases = out / CASES_FILE
        common.stderr_console().print(f"[yellow]interrupted:[/] {escape(str(cases))} holds {len(read_lines(cases))} "
                                      "finished case(s); rerun with --resume to continue")
        raise typer.Exit(common.INTERRUPTED) from None


@pitfalls_app.command()
@common.reports_errors
def conflict(
    data: DataOption,
    out: OutOption,
    method: common.MethodOption = "rome",
    model: common.ModelOption = DEFAULT_MODEL,
    limit: LimitOption = None,
    prompts: PromptsOption = None,
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    resume: ResumeOption = False,
    strict: StrictOption = False,
) -> None:
    """Knowledge conflict: two edits in sequence (coverage, reverse or composite file); CS, CM, TFD, Succ."""
    from kedit.data.pitfalls import load_conflict_edit, load_relation_prompts
    from kedit.pitfalls.conflict import MethodEditor, run_conflict_case, summarize_conflict

    command = command_line()
    overrides = _start(method, hparams, set_)
    loaded = _read_records(load_conflict_edit, data, limit, strict)
    prompts_path = _prompts_path(data, prompts, "conflict_prompts.json")
    paraphrases = load_relation_prompts(prompts_path)
    relations = [f.relation_id for r in loaded.records for f in (r.first, r.second)]
    relations += [r.tied_fact.relation_id for r in loaded.records if r.tied_fact is not None]
    _check_relations(relations, paraphrases, prompts_path)

    lm, _ = common.load_lm(model, device, common.stderr_console(), start_token)
    editor = MethodEditor(method, hparams, overrides)
    run_info = {
        "kind": PITFALLS_CONFLICT, "method": method, "mle": False, "model": model_info(lm, model),
        "hparams": _hparams(method, lm, hparams, overrides), "return_hparams": None,
        "overrides": overrides, "data": _data_info(data, prompts_path, loaded, limit),
        # provenance in run.json too: the session that created the run stays on record when a resume adds its own
        "subsets": sorted({r.kind for r in loaded.records}), **provenance(command),
    }
    suite = Suite(PITFALLS_CONFLICT, lambda record: run_conflict_case(lm, record, paraphrases, editor).to_dict(),
                  summarize_conflict)
    summary = _run_interruptible(
        lambda: run_suite(suite, loaded.records, run_info, out, resume=resume, command=command), out)
    _finish(summary, out)


@pitfalls_app.command(name="round")
@common.reports_errors
def round_(
    data: DataOption,
    out: OutOption,
    method: common.MethodOption = "rome",
    mle: Annotated[bool, typer.Option("--mle", help="Multi-Label Edit: the return edit writes every true object at once (method 'mle'); --method makes the first edit (the paper uses memit).")] = False,
    model: common.ModelOption = DEFAULT_MODEL,
    limit: LimitOption = None,
    prompts: PromptsOption = None,
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    resume: ResumeOption = False,
    strict: StrictOption = False,
) -> None:
    """Knowledge distortion: a round trip o -> o* -> o (easy or hard file); Succ, D, IR, FR."""
    from kedit.data.pitfalls import load_relation_prompts, load_round_edit
    from kedit.pitfalls.conflict import MethodEditor
    from kedit.pitfalls.distortion import MLE_METHOD, mle_editor, run_round_case, summarize_round

    command = command_line()
    overrides = _start(method, hparams, set_, (MLE_METHOD,) if mle else ())
    loaded = _read_records(load_round_edit, data, limit, strict)
    prompts_path = _prompts_path(data, prompts, "round_prompts.json")
    paraphrases = load_relation_prompts(prompts_path)
    _check_relations([r.relation_id for r in loaded.records], paraphrases, prompts_path)

    lm, _ = common.load_lm(model, device, common.stderr_console(), start_token)
    editor = MethodEditor(method, hparams, overrides)
    split = data.stem
    run_info = {
        "kind": PITFALLS_ROUND, "method": f"{method}+{MLE_METHOD}" if mle else method, "mle": mle,
        "first_edit_method": method, "return_edit_method": MLE_METHOD if mle else method,
        "model": model_info(lm, model), "hparams": _hparams(method, lm, hparams, overrides),
        "return_hparams": _hparams(MLE_METHOD, lm, hparams, overrides) if mle else None,
        "overrides": overrides, "data": _data_info(data, prompts_path, loaded, limit), "split": split,
        **provenance(command),
    }
    return_editor = mle_editor(editor) if mle else editor
    suite = Suite(PITFALLS_ROUND,
                  lambda record: run_round_case(lm, record, paraphrases, editor, mle=mle,
                                                return_editor=return_editor).to_dict(),
                  lambda cases: summarize_round(cases, split))
    summary = _run_interruptible(
        lambda: run_suite(suite, loaded.records, run_info, out, resume=resume, command=command), out)
    _finish(summary, out)
