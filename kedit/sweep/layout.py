"""The sweep directory: one folder holding the sweep file, its plan, every run and their status.

```
DIR/sweep.yaml            the sweep file as it was given (the report shows it)
DIR/plan.json             kind "kedit-sweep": the runs with their names, settings and shards; sessions
DIR/runs/NAME/            each run's usual run directory (kedit.runs): run.json, results.jsonl, summary.json
DIR/shards/NAME/K/        a sharded run's parts, each a run directory of its own, merged into runs/NAME
DIR/status/TASK.json      where each task ran and how it ended (running, done, failed), for `kedit sweep status`
DIR/search.json           a search's trials (settings, cases measured, metric) and the best one
DIR/best.yaml             the best configuration of a search, a hyperparameter file for --hparams
DIR/tune/                 Ray Tune's own records of a search
```

Names only; no torch, no Ray (``kedit report`` reads sweep folders with these names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWEEP_KIND = "kedit-sweep"
PLAN_FILE = "plan.json"
SWEEP_FILE = "sweep.yaml"
RUNS_DIR = "runs"
SHARDS_DIR = "shards"
STATUS_DIR = "status"
SEARCH_FILE = "search.json"
BEST_FILE = "best.yaml"
TUNE_DIR = "tune"

RUNNING, DONE, FAILED = "running", "done", "failed"


def task_id(name: str, shard: int | None) -> str:
    """A task's name: its run's, with ``.shardK`` for a part of a sharded run."""
    return name if shard is None else f"{name}.shard{shard}"


@dataclass(frozen=True)
class SweepLayout:
    root: Path

    @property
    def plan(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def sweep_file(self) -> Path:
        return self.root / SWEEP_FILE

    @property
    def search(self) -> Path:
        return self.root / SEARCH_FILE

    @property
    def best(self) -> Path:
        return self.root / BEST_FILE

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

    def run_dir(self, name: str) -> Path:
        return self.root / RUNS_DIR / name

    def shard_dir(self, name: str, shard: int) -> Path:
        return self.root / SHARDS_DIR / name / str(shard)

    def task_dir(self, name: str, shard: int | None) -> Path:
        return self.run_dir(name) if shard is None else self.shard_dir(name, shard)

    def status_file(self, name: str, shard: int | None) -> Path:
        return self.root / STATUS_DIR / f"{task_id(name, shard)}.json"


def read_plan(root: Path) -> dict[str, Any] | None:
    """``root``'s plan.json when ``root`` is a sweep directory, else None."""
    path = Path(root) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return plan if isinstance(plan, dict) and plan.get("kind") == SWEEP_KIND else None
