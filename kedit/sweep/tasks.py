"""A task: one run, or one shard of a run, as an executor (local pool or Ray) hands it to a worker.

Plain frozen dataclasses that pickle, so the local pool and Ray carry the same objects; the
worker (:mod:`kedit.sweep.worker`) returns a :class:`TaskResult` and never raises for bad input
or a bug inside a run (those are the run's failure, recorded in its status file); an executor
reports a worker that died as a result with ``crashed`` set.
"""

from __future__ import annotations

from dataclasses import dataclass

from kedit.sweep.layout import task_id
from kedit.sweep.settings import RunSettings


@dataclass(frozen=True)
class Task:
    run: str  # the run's name
    shard: int | None  # None: the whole run
    span: tuple[int, int]  # [start, stop) of the run's cases that this task edits
    settings: RunSettings
    out_dir: str  # the task's run directory (absolute)
    status_file: str  # where the worker records where it runs and how it ended (absolute)
    command: str  # recorded in run.json: the sweep command that runs this task
    threads: int = 1  # torch's intra-op threads in the worker (--cpus-per-run)

    @property
    def id(self) -> str:
        return task_id(self.run, self.shard)

    @property
    def cases(self) -> int:
        return self.span[1] - self.span[0]


@dataclass(frozen=True)
class TaskResult:
    task: str  # Task.id
    cases: int = 0  # cases in the run directory when the task ended
    seconds: float = 0.0
    error: str | None = None  # one line: a KeditError's message, or the exception of a bug
    crashed: bool = False  # the worker process died (kill -9, out of memory, a lost node)

    @property
    def ok(self) -> bool:
        return self.error is None
