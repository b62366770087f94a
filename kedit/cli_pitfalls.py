"""``kedit pitfalls conflict | round``: the Pitfalls suite (knowledge conflict and knowledge distortion).

Each command edits a model record by record (every case starts and ends on the original weights)
and writes to ``--out``:

* ``run.json`` — what is being run (kind, model and fingerprint, method, hyperparameters, data and
  prompt files with their sha256), written first; ``kedit report`` reads it;
* ``cases.jsonl`` — one JSON line per case, appended and flushed as each case finishes. With
  ``--resume`` the cases already written are skipped (an unfinished last line from an interrupted
  run is dropped and its case run again); the run must be the same (model, method, hparams, data);
* ``summary.json`` — the mean of each metric per data set, the method, hyperparameters, model
  fingerprint, data sha256, kedit version, command and timings.

Exit status: 0 on success, 2 for bad input, 130 when interrupted (rerun with ``--resume``).
"""

from __future__ import annotations

import datetime
import functools
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from tqdm.auto import tqdm

from kedit.errors import DataError, KeditError
from kedit.models.loading import DEFAULT_MODEL

F = TypeVar("F", bound=Callable[..., Any])
RUN_FILE = "run.json"
CASES_FILE = "cases.jsonl"
SUMMARY_FILE = "summary.json"
CONFLICT_KIND = "pitfalls-conflict"  # the kinds kedit.reports.runs knows
ROUND_KIND = "pitfalls-round"
INTERRUPTED = 130
# What must be equal for --resume to continue a run (everything that changes a case's numbers).
IDENTITY_KEYS = ("kind", "method", "mle", "hparams", "return_hparams")

pitfalls_app = typer.Typer(
    name="pitfalls",
    help="The Pitfalls suite: knowledge conflict (ConflictEdit) and knowledge distortion (RoundEdit).",
    no_args_is_help=True,
)

DataOption = Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The benchmark file (JSON list).")]
PromptsOption = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Relation paraphrase prompts (default: the prompt file beside --data).")]
MethodOption = Annotated[str, typer.Option(help="Editing method (see `kedit methods`).")]
ModelOption = Annotated[str, typer.Option(help="Bundled name, HF folder, .gguf file or hub id.")]
LimitOption = Annotated[int | None, typer.Option(min=0, help="Use only the first N records of the file.")]
OutOption = Annotated[Path, typer.Option(file_okay=False, help="Folder for run.json, cases.jsonl and summary.json.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Hyperparameter override key=value. Repeatable.")]
HparamsOption = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="YAML file of hyperparameters.")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out, skipping finished cases.")]
StrictOption = Annotated[bool, typer.Option("--strict", help="Stop at the first malformed record instead of skipping it.")]


def _reports_errors(command: F) -> F:
    """kedit.cli's error handling, imported when the command runs because kedit.cli imports this module."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kedit.cli import _reports_errors as handled

        return handled(command)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- run folder


@dataclass(frozen=True)
class Suite:
    """One kind of Pitfalls run: how a record becomes a case record, and how records are summarised."""

    kind: str
    run_case: Callable[[Any], dict[str, Any]]  # record -> case record (JSON-ready)
    summarize: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from kedit import __version__

    return {"kedit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    from kedit.paths import write_json_atomic

    write_json_atomic(path, payload)


def finished_cases(cases_file: Path) -> list[dict[str, Any]]:
    """The complete records of ``cases_file``; an unfinished last line is cut off the file."""
    from kedit.paths import atomic_path
    from kedit.reports.records import read_records

    if not cases_file.is_file():
        return []
    text = cases_file.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        # An interrupted write: drop the partial line so new lines are appended after whole ones.
        with atomic_path(cases_file) as tmp:
            tmp.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return read_records(cases_file)


def _check_same_run(previous: Mapping[str, Any], current: Mapping[str, Any], out: Path) -> None:
    differences = [key for key in IDENTITY_KEYS if previous.get(key) != current.get(key)]
    for section, keys in (("model", ("fingerprint",)), ("data", ("sha256", "prompts_sha256"))):
        differences += [f"{section}.{key}" for key in keys
                        if (previous.get(section) or {}).get(key) != (current.get(section) or {}).get(key)]
    if differences:
        raise KeditError(f"{out} holds a different run ({', '.join(differences)} differ); "
                         "use another --out or delete the folder to start over")


def run_suite(suite: Suite, records: Sequence[Any], run_info: dict[str, Any], out: Path, *,
              resume: bool, command: str) -> dict[str, Any]:
    """Run every record not yet in ``out/cases.jsonl``, then write and return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    run_info = json.loads(json.dumps(run_info, default=str))  # as it reads back (tuples become lists)
    cases_file = out / CASES_FILE
    done = finished_cases(cases_file) if resume else []
    if not resume and cases_file.is_file() and cases_file.stat().st_size > 0:
        raise KeditError(f"{cases_file} already holds cases; pass --resume to continue that run or choose another --out")
    if done and (out / RUN_FILE).is_file():
        from kedit.evaluate.run_files import with_session

        previous = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        _check_same_run(previous, run_info, out)
        run_info = with_session(previous, run_info | {"command": command, "versions": _versions()})
    _write_json(out / RUN_FILE, run_info)
    finished = {record.get("case_id") for record in done}
    todo = [record for record in records if record.case_id not in finished]
    started = time.perf_counter()
    with open(cases_file, "a" if done else "w", encoding="utf-8") as handle, tqdm(
        total=len(records), initial=len(records) - len(todo), unit="case", desc=suite.kind, file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        for record in todo:
            bar.set_postfix_str(record.case_id)
            case = suite.run_case(record)
            handle.write(json.dumps(case, default=str) + "\n")
            handle.flush()
            bar.update(1)
    wanted = {record.case_id for record in records}
    cases = sorted((c for c in finished_cases(cases_file) if c.get("case_id") in wanted), key=lambda c: c["index"])
    summary = {
        **run_info,
        "command": command,
        "cases": len(cases),
        "metrics": suite.summarize(cases),
        "seconds": {
            "run": time.perf_counter() - started,
            "edits": sum(v for c in cases for k, v in c["seconds"].items() if k.startswith("edit_")),
            "scoring": sum(v for c in cases for k, v in c["seconds"].items() if k.startswith("score_")),
        },
        "warnings": sum(len(c.get("warnings", ())) for c in cases),
        "versions": _versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    _write_json(out / SUMMARY_FILE, summary)
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
    from kedit.pitfalls.data import missing_relations

    missing = missing_relations(relation_ids, prompts)
    if missing:
        raise DataError(f"{path} has no paraphrases for relation(s) {', '.join(missing)} used by the data")


def _data_info(data: Path, prompts_path: Path, loaded: Any, limit: int | None) -> dict[str, Any]:
    from kedit.paths import sha256_file

    return {"path": str(data.resolve()), "name": data.name, "sha256": sha256_file(data),
            "prompts_path": str(prompts_path.resolve()), "prompts_sha256": sha256_file(prompts_path),
            "limit": limit, "records": len(loaded.records),
            "skipped": [str(problem) for problem in loaded.problems]}


def _hparams(method: str, lm: Any, hparams: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    from kedit.methods import get_method
    from kedit.methods.base import hparams_dict

    return hparams_dict(get_method(method).default_hparams(lm, hparams, dict(overrides)))


def _start(method: str, hparams: Path | None, set_: list[str] | None, extra_methods: Sequence[str] = ()) -> dict[str, Any]:
    """Parse overrides and reject an unknown method or hyperparameter before the model is loaded."""
    from kedit.cli import _check_method, _parse_overrides

    overrides = _parse_overrides(set_)
    for name in (method, *extra_methods):
        _check_method(name, hparams, overrides)
    return overrides


def _model_info(model: str, lm: Any) -> dict[str, Any]:
    return {"name": model, "fingerprint": lm.fingerprint, "device": str(lm.device),
            "dtype": str(lm.dtype).removeprefix("torch."), "start_token": lm.start_token}


def _finish(summary: Mapping[str, Any], out: Path) -> None:
    console = Console()
    for subset, block in summary["metrics"].items():
        shown = ", ".join(f"{name} {value:.3f}" for name, value in block.items() if name != "cases")
        console.print(f"[bold]{escape(subset)}[/] ({block['cases']} cases): {escape(shown)}", soft_wrap=True)
    console.print(f"summary: {escape(str(out / SUMMARY_FILE))}")


def _run_interruptible(run: Callable[[], dict[str, Any]], out: Path) -> dict[str, Any]:
    try:
        return run()
    except KeyboardInterrupt:
        from kedit.reports.records import read_records

        cases = out / CASES_FILE
        count = len(read_records(cases)) if cases.is_file() else 0
        Console(stderr=True).print(f"[yellow]interrupted:[/] {escape(str(cases))} holds {count} finished case(s); "
                                   "rerun with --resume to continue")
        raise typer.Exit(INTERRUPTED) from None


@pitfalls_app.command()
@_reports_errors
def conflict(
    data: DataOption,
    out: OutOption,
    method: MethodOption = "rome",
    model: ModelOption = DEFAULT_MODEL,
    limit: LimitOption = None,
    prompts: PromptsOption = None,
    set_: SetOption = None,
    hparams: HparamsOption = None,
    device: DeviceOption = "cpu",
    resume: ResumeOption = False,
    strict: StrictOption = False,
) -> None:
    """Knowledge conflict: two edits in sequence (coverage, reverse or composite file); CS, CM, TFD, Succ."""
    from kedit.cli import _load
    from kedit.pitfalls.conflict import MethodEditor, run_conflict_case, summarize_conflict
    from kedit.pitfalls.data import load_conflict_edit, load_relation_prompts

    command = shlex.join(["kedit", *sys.argv[1:]])
    overrides = _start(method, hparams, set_)
    loaded = load_conflict_edit(data, limit=limit, strict=strict)
    if not loaded.records:
        raise DataError(f"{data}: no usable records (read {loaded.total}, skipped {len(loaded.problems)})")
    prompts_path = _prompts_path(data, prompts, "conflict_prompts.json")
    paraphrases = load_relation_prompts(prompts_path)
    relations = [f.relation_id for r in loaded.records for f in (r.first, r.second)]
    relations += [r.tied_fact.relation_id for r in loaded.records if r.tied_fact is not None]
    _check_relations(relations, paraphrases, prompts_path)

    lm, _ = _load(model, device, Console(stderr=True))
    editor = MethodEditor(method, hparams, overrides)
    run_info = {
        "kind": CONFLICT_KIND, "method": method, "mle": False, "model": _model_info(model, lm),
        "hparams": _hparams(method, lm, hparams, overrides), "return_hparams": None,
        "overrides": overrides, "data": _data_info(data, prompts_path, loaded, limit),
        "subsets": sorted({r.kind for r in loaded.records}),
    }
    suite = Suite(CONFLICT_KIND, lambda record: run_conflict_case(lm, record, paraphrases, editor).to_dict(),
                  summarize_conflict)
    summary = _run_interruptible(
        lambda: run_suite(suite, loaded.records, run_info, out, resume=resume, command=command), out)
    _finish(summary, out)


@pitfalls_app.command(name="round")
@_reports_errors
def round_(
    data: DataOption,
    out: OutOption,
    method: MethodOption = "rome",
    mle: Annotated[bool, typer.Option("--mle", help="Multi-Label Edit: the return edit writes every true object at once (method 'mle'); --method makes the first edit (the paper uses memit).")] = False,
    model: ModelOption = DEFAULT_MODEL,
    limit: LimitOption = None,
    prompts: PromptsOption = None,
    set_: SetOption = None,
    hparams: HparamsOption = None,
    device: DeviceOption = "cpu",
    resume: ResumeOption = False,
    strict: StrictOption = False,
) -> None:
    """Knowledge distortion: a round trip o -> o* -> o (easy or hard file); Succ, D, IR, FR."""
    from kedit.cli import _load
    from kedit.pitfalls.conflict import MethodEditor
    from kedit.pitfalls.data import load_relation_prompts, load_round_edit
    from kedit.pitfalls.distortion import MLE_METHOD, mle_editor, run_round_case, summarize_round

    command = shlex.join(["kedit", *sys.argv[1:]])
    overrides = _start(method, hparams, set_, (MLE_METHOD,) if mle else ())
    loaded = load_round_edit(data, limit=limit, strict=strict)
    if not loaded.records:
        raise DataError(f"{data}: no usable records (read {loaded.total}, skipped {len(loaded.problems)})")
    prompts_path = _prompts_path(data, prompts, "round_prompts.json")
    paraphrases = load_relation_prompts(prompts_path)
    _check_relations([r.relation_id for r in loaded.records], paraphrases, prompts_path)

    lm, _ = _load(model, device, Console(stderr=True))
    editor = MethodEditor(method, hparams, overrides)
    split = data.stem
    run_info = {
        "kind": ROUND_KIND, "method": f"{method}+{MLE_METHOD}" if mle else method, "mle": mle,
        "first_edit_method": method, "return_edit_method": MLE_METHOD if mle else method,
        "model": _model_info(model, lm), "hparams": _hparams(method, lm, hparams, overrides),
        "return_hparams": _hparams(MLE_METHOD, lm, hparams, overrides) if mle else None,
        "overrides": overrides, "data": _data_info(data, prompts_path, loaded, limit), "split": split,
    }
    return_editor = mle_editor(editor) if mle else editor
    suite = Suite(ROUND_KIND,
                  lambda record: run_round_case(lm, record, paraphrases, editor, mle=mle,
                                                return_editor=return_editor).to_dict(),
                  lambda cases: summarize_round(cases, split))
    summary = _run_interruptible(
        lambda: run_suite(suite, loaded.records, run_info, out, resume=resume, command=command), out)
    _finish(summary, out)
