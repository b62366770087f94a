"""The Ray executor: each task a Ray task with declared resources, on a local instance or a cluster.

``--ray auto`` connects to the Ray instance this machine knows (``ray start`` or ``RAY_ADDRESS``)
or starts one here; ``--ray ADDRESS`` connects to that cluster (``ray://host:10001`` or
``host:6379``). Each task asks for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs; a fraction
(0.25) lets Ray place several small-model runs on one GPU, each seeing it as ``cuda``. A task whose
worker dies (``kill -9``, a lost node) is started again up to ``--retries`` times — the run resumes
at its last case — and reported as crashed after that; failures inside a run (bad input, a bug)
are results, never retried. Ray is imported only here, when a sweep runs on it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from kedit.sweep.settings import SweepError
from kedit.sweep.tasks import Task, TaskResult
from kedit.sweep.worker import execute_task

INSTALL_HINT = "Ray is not installed: pip install 'kedit[ray]' (or pip install 'ray[tune]>=2.9')"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(INSTALL_HINT) from None
    return ray


def connect(address: str) -> bool:
    """Connect to (or start) Ray unless this process already has; True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    # The workers of an instance started here read the same caches as this process.
    env = {key: os.environ[key] for key in ("KEDIT_HOME",) if key in os.environ}
    ray.init(address=None if address == "auto" else address, log_to_driver=False,
             runtime_env={"env_vars": env} if env and address == "auto" else None)
    return True


class RayPool:
    description: str

    def __init__(self, address: str, cpus: float, gpus: float, retries: int) -> None:
        self._ray = import_ray()
        self._started = connect(address)
        resources = self._ray.cluster_resources()
        self.description = (f"Ray ({resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU; "
                            f"{cpus:g} CPU and {gpus:g} GPU per run)")
        if gpus > resources.get("GPU", 0) or cpus > resources.get("CPU", 0):
            self.close()
            raise SweepError(f"each run asks for {cpus:g} CPU and {gpus:g} GPU, but the Ray cluster has "
                             f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU: no run could start")
        self._remote = self._ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                        retry_exceptions=False)(execute_task)

    def submit(self, task: Task) -> Any:
        return self._remote.remote(task)

    def wait(self, handles: Collection[Any], timeout: float) -> set[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=len(handles), timeout=timeout)
        return set(ready)

    def result(self, handle: Any, task: Task) -> TaskResult:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return TaskResult(task.id, error=f"the Ray worker was lost ({type(error).__name__}: {reason[:200]}); "
                                             "resume the sweep with --resume", crashed=True)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
