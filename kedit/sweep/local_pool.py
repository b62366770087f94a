"""The local executor: a pool of worker processes on this machine running the sweep's tasks.

Processes are started with ``spawn`` (a fresh interpreter each: no torch state or threads inherited
from the driver) and each runs one task at a time through :func:`kedit.sweep.worker.execute_task`,
the function Ray runs. A worker that dies (``kill -9``, out of memory) breaks the pool: its task
and every task still waiting are reported as crashed, and ``--resume`` continues them.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Collection
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from kedit.sweep.tasks import Task, TaskResult
from kedit.sweep.worker import execute_task


class LocalPool:
    """``workers`` processes, each running one task at a time."""

    description: str

    def __init__(self, workers: int) -> None:
        self.description = f"a local pool of {workers} process(es)"
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, task: Task) -> Future:
        return self._pool.submit(execute_task, task)

    def wait(self, handles: Collection[Future], timeout: float) -> set[Future]:
        done, _ = concurrent.futures.wait(handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done)

    def result(self, handle: Future, task: Task) -> TaskResult:
        try:
            return handle.result()
        except BrokenProcessPool:
            return TaskResult(task.id, error="a worker process of the local pool died (killed, or out of memory); "
                                             "resume the sweep with --resume", crashed=True)
        except concurrent.futures.CancelledError:
            return TaskResult(task.id, error="cancelled", crashed=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
