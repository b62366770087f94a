"""Wall time of one sweep run three ways: one run after another, a local pool of 2, Ray with 2 CPUs.

The sweep is bench/sweeps/cpu_three_methods.yaml (ROME, MEMIT and FT-L on the first 50 CounterFact
cases each, single mode, SmolLM2, one torch thread per run). Each configuration runs into a fresh
sweep directory; the script refuses one that exists (a resumed run's wall time would mean
nothing). Writes OUT/wall_time.json: per configuration the wall seconds of the whole
`kedit sweep run` command and, per run, the seconds its summary.json records. Run it alone on the
machine (under the shared CPU lock):

    flock /tmp/kedit-cpu.lock .venv/bin/python bench/sweep_wall_time.py --out runs/sweep-wall
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = "bench/sweeps/cpu_three_methods.yaml"
CONFIGURATIONS = {
    "one after another (--workers 1)": ["--workers", "1"],
    "local pool (--workers 2)": ["--workers", "2"],
    "Ray (--ray auto, 2 CPUs, --cpus-per-run 1)": ["--ray", "auto", "--cpus-per-run", "1"],
}


def _records(run: Path) -> list[dict]:
    """A run's records without their timings (and the edit info, which holds per-request seconds)."""
    lines = (run / "results.jsonl").read_text().splitlines() if (run / "results.jsonl").is_file() else []
    records = [json.loads(line) for line in lines]
    return [{k: v for k, v in record.items() if k not in ("seconds", "edit")} for record in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweep", default=SWEEP)
    parser.add_argument("--only", nargs="*", choices=list(CONFIGURATIONS), help="run only these configurations")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kedit = str(Path(sys.executable).parent / "kedit")
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    record_file = args.out / "wall_time.json"
    results = json.loads(record_file.read_text()) if record_file.is_file() else {}
    for number, (label, options) in enumerate(CONFIGURATIONS.items()):
        if args.only and label not in args.only:
            continue
        folder = args.out / f"config{number}"
        if folder.exists():
            sys.exit(f"{folder} exists: remove it to measure this configuration again")
        command = [kedit, "sweep", "run", args.sweep, "--out", str(folder), "--no-progress", *options]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, env=env)
        wall = time.perf_counter() - started
        runs = {}
        first = args.out / "config0" / "runs"
        for run in sorted((folder / "runs").iterdir()):
            summary = json.loads((run / "summary.json").read_text())
            runs[run.name] = {"cases": summary["cases"], "seconds": summary["seconds"]["total"],
                              "S": summary["probability"]["post"]["score_s"],
                              # the same numbers however the runs were placed (timings aside)?
                              "records_equal_to_config0": _records(run) == _records(first / run.name)}
        results[label] = {"wall_seconds": wall, "folder": folder.name, "runs": runs,
                          "command": " ".join(["kedit", *command[1:]])}
        record_file.write_text(json.dumps(results, indent=2))
        print(f"{label}: {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
