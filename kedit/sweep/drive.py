"""Running a plan: prepare the sweep directory, hand the unfinished tasks to an executor, merge shards.

The driver never edits anything itself: it writes plan.json and the sweep file, works out which
tasks are left (a run with a summary.json is finished and skipped; a shard likewise; a run or
shard that stopped part way is handed out again and resumes at its last case inside the worker),
submits them all to the executor (the local pool or Ray: the same :class:`~kedit.sweep.tasks.Task`
objects), and while they run shows one progress bar over the sweep's cases (read from the run
directories once a second). When the last shard of a run finishes, the driver merges the run's
shards (:mod:`kedit.sweep.merge`). A failed task does not stop the others; the outcome lists it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kedit.paths import atomic_path, write_json_atomic
from kedit.runs import SUMMARY_FILE, timestamp
from kedit.sweep.layout import FAILED, SweepLayout, read_plan
from kedit.sweep.merge import merge_shards
from kedit.sweep.plan import Plan, PlannedRun
from kedit.sweep.settings import SweepError
from kedit.sweep.status import run_cases_done
from kedit.sweep.tasks import Task, TaskResult
from kedit.sweep.worker import write_status

POLL_SECONDS = 1.0


class Executor(Protocol):
    description: str

    def submit(self, task: Task) -> Any: ...
    def wait(self, handles: Collection[Any], timeout: float) -> set[Any]: ...
    def result(self, handle: Any, task: Task) -> TaskResult: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SweepOutcome:
    finished: tuple[str, ...]  # runs finished (now or before)
    failures: tuple[TaskResult, ...]
    skipped: int  # runs already finished before this session


def prepare_directory(layout: SweepLayout, plan: Plan, resume: bool, command: str | None) -> None:
    """Create the sweep directory, or reopen it with ``resume``; write the sweep file and plan.json."""
    root = layout.root
    stored = read_plan(root)
    if stored is not None and not resume:
        raise SweepError(f"{root} holds a sweep already; pass --resume to continue it, or choose another --out")
    if stored is None and root.is_dir() and any(root.iterdir()):
        raise SweepError(f"{root} is not empty and holds no sweep (no plan.json); choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    from kedit.runs import versions

    session = {"command": command, "started": timestamp(), "sweep_sha256": plan.sweep.sha256, "versions": versions()}
    sessions = list((stored or {}).get("sessions") or []) + [session]
    with atomic_path(layout.sweep_file) as tmp:
        tmp.write_text(plan.sweep.text, encoding="utf-8")
    write_json_atomic(layout.plan, {**plan.to_json(), "created": (stored or {}).get("created") or session["started"],
                                    "sessions": sessions})


def task_command(command: str | None, run: str) -> str | None:
    """The sweep command that runs one run alone (recorded in its run.json)."""
    return f"{command} --only {run}" if command and " --only " not in f" {command} " else command


def pending_tasks(layout: SweepLayout, runs: Sequence[PlannedRun], command: str | None, threads: int) -> list[Task]:
    """The tasks of the runs not yet finished; a finished shard of a sharded run is not handed out again."""
    tasks = []
    for run in runs:
        if (layout.run_dir(run.name) / SUMMARY_FILE).is_file():
            continue
        for number, span in enumerate(run.spans):
            shard = number if run.sharded else None
            folder = layout.task_dir(run.name, shard)
            if shard is not None and (folder / SUMMARY_FILE).is_file():
                continue
            tasks.append(Task(run.name, shard, span, run.settings, str(folder.resolve()),
                              str(layout.status_file(run.name, shard).resolve()),
                              task_command(command, run.name) or "", threads))
    return tasks


def merge_run(layout: SweepLayout, run: PlannedRun, command: str | None) -> None:
    from kedit.sweep.cases import run_cases

    cases = run_cases(run.settings).cases
    folders = [layout.shard_dir(run.name, number) for number in range(len(run.spans))]
    merge_shards(layout.run_dir(run.name), folders, run.spans, cases, task_command(command, run.name))


def _shards_done(layout: SweepLayout, run: PlannedRun) -> bool:
    return all((layout.shard_dir(run.name, number) / SUMMARY_FILE).is_file() for number in range(len(run.spans)))


class _Progress:
    """One bar for the sweep: cases measured over all runs, runs finished, time left."""

    def __init__(self, layout: SweepLayout, plan_json: dict[str, Any], runs: Sequence[PlannedRun], shown: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.layout = layout
        self.planned = [entry for entry in plan_json["runs"] if entry["name"] in {run.name for run in runs}]
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
                            TimeRemainingColumn(), disable=not shown, transient=False)
        total = sum(int(entry["settings"]["n"]) for entry in self.planned)
        self.task = self.bar.add_task("sweep", total=total)
        self.update()

    def update(self) -> None:
        done = sum(run_cases_done(self.layout, entry) for entry in self.planned)
        finished = sum((self.layout.run_dir(entry["name"]) / SUMMARY_FILE).is_file() for entry in self.planned)
        self.bar.update(self.task, completed=done, description=f"sweep: {finished}/{len(self.planned)} runs")

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.update()
        self.bar.stop()


def run_plan(plan: Plan, out: Path, make_executor: Callable[[], Executor], *, resume: bool = False,
             only: Sequence[str] = (), progress: bool = True, command: str | None = None, threads: int = 1,
             log: Callable[[str], None] = print) -> SweepOutcome:
    """Run the plan's runs (those named in ``only``, when given) into the sweep directory ``out``."""
    layout = SweepLayout(Path(out))
    runs = [plan.run(name) for name in only] if only else list(plan.runs)
    prepare_directory(layout, plan, resume, command)
    finished_before = [run.name for run in runs if (layout.run_dir(run.name) / SUMMARY_FILE).is_file()]
    for run in runs:  # every shard finished in an earlier session, the merge not
        if run.sharded and run.name not in finished_before and _shards_done(layout, run):
            merge_run(layout, run, command)
    tasks = pending_tasks(layout, runs, command, threads)
    failures: list[TaskResult] = []
    if tasks:
        executor = make_executor()
        log(f"{len(tasks)} task(s) of {len(runs) - len(finished_before)} unfinished run(s) on {executor.description}"
            + (f"; {len(finished_before)} run(s) already finished" if finished_before else ""))
        try:
            handles = {executor.submit(task): task for task in tasks}
            with _Progress(layout, json.loads(layout.plan.read_text()), runs, progress) as bar:
                while handles:
                    for handle in executor.wait(handles.keys(), POLL_SECONDS):
                        task = handles.pop(handle)
                        result = executor.result(handle, task)
                        if result.crashed:  # the worker could not say so itself
                            write_status(task, FAILED, error=result.error)
                        if not result.ok:
                            failures.append(result)
                            log(f"failed: {task.id}: {result.error}")
                            continue
                        run = plan.run(task.run)
                        if run.sharded and _shards_done(layout, run):
                            merge_run(layout, run, command)
                    bar.update()
        finally:
            executor.close()
    finished = tuple(run.name for run in runs if (layout.run_dir(run.name) / SUMMARY_FILE).is_file())
    return SweepOutcome(finished, tuple(failures), len(finished_before))

