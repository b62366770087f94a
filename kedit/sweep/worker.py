"""What a worker process does with a :class:`~kedit.sweep.tasks.Task`: load, run, record.

The same function runs in the local pool's processes and as a Ray task. The run is
:func:`kedit.evaluate.runner.run_bench` on the task's cases with ``resume=True``: a task started
again after a crash (a killed worker, a resumed sweep) continues its run directory at its last
case and never measures a case twice. The task's status file says where it runs (host, pid) while
it does, and how it ended.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.paths import write_json_atomic
from kedit.runs import RESULTS_FILE, timestamp
from kedit.sweep.layout import DONE, FAILED, RUNNING
from kedit.sweep.tasks import Task, TaskResult

SHARD_KEY = "shard"  # in a shard's run.json data block: [start, stop) of the run's cases it holds


def write_status(task: Task, state: str, **fields: Any) -> None:
    payload = {"task": task.id, "run": task.run, "shard": task.shard, "cases": list(task.span), "state": state,
               "host": socket.gethostname(), "pid": os.getpid(), "at": timestamp(), **fields}
    write_json_atomic(Path(task.status_file), payload)


def _measured(task: Task) -> int:
    path = Path(task.out_dir) / RESULTS_FILE
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _run(task: Task) -> None:
    from transformers.utils import logging as transformers_logging

    from kedit.evaluate.runner import run_bench
    from kedit.models.loading import load_model
    from kedit.sweep.cases import run_cases

    transformers_logging.disable_progress_bar()  # a worker's bars would interleave with the sweep's
    settings = task.settings
    data = run_cases(settings)
    start, stop = task.span
    spec = dict(data.spec) | ({SHARD_KEY: [start, stop]} if task.shard is not None else {})
    lm = load_model(settings.model, device=settings.device, start_token=settings.start_token)
    run_bench(lm, settings.method, data.cases[start:stop], mode=settings.mode, out_dir=task.out_dir,
              overrides=settings.overrides_dict(), resume=True, progress=False, eval_batch=settings.eval_batch,
              held_out=data.held_out, hparams_file=settings.hparams, model_name=settings.model, data=spec,
              command=task.command)


def execute_task(task: Task) -> TaskResult:
    """Run ``task`` to the end; a failure becomes the result's ``error`` (and the status file's)."""
    import torch

    torch.set_num_threads(task.threads)
    started = time.perf_counter()
    write_status(task, RUNNING)
    try:
        _run(task)
    except KeditError as error:
        write_status(task, FAILED, error=str(error))
        return TaskResult(task.id, _measured(task), time.perf_counter() - started, str(error))
    except Exception as error:  # noqa: BLE001 - a bug inside one run must not stop the sweep's others
        write_status(task, FAILED, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        return TaskResult(task.id, _measured(task), time.perf_counter() - started, f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - started
    write_status(task, DONE, seconds=seconds)
    return TaskResult(task.id, task.cases, seconds)
