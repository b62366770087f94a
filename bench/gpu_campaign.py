"""Every benchmark of docs/BENCHMARKS.md that needs a GPU's hours, run side by side on one GPU.

A GPU session here is short (minutes), so this script does in one go what the CPU cannot:

1. setup (serial): convert the bundled model, collect the key statistics of layers 4-8 once, so
   the parallel jobs find them cached and never compute them concurrently;
2. solo timings (serial, nothing else on the GPU): MEMIT with 1, 10 and 100 edits in one batch,
   ten ROME edits, and the runner's evaluation throughput against a per-prompt loop;
3. the runs (in parallel, one process each, all on the one GPU): ROME / FT-L / MEMIT on 200
   CounterFact and 200 ZsRE cases; ConflictEdit (coverage, reverse, composite) and RoundEdit
   (easy, hard) on 200 records each; sequential curves to 1,000 edits; MEMIT with 1,000 edits in
   one batch with its reference z settings.

Every run directory is written as it goes (kedit's runner and pitfalls suite are resumable), and
the results (without the stored edit deltas, which are gigabytes) are packed into
``OUT/results.tar.gz`` every minute and at the end, so a session cut short still returns what
finished. Jobs still running at the deadline are stopped; their records so far are kept.

    python bench/gpu_campaign.py --data ../shared/data --out /tmp/gpu --seconds 540

Timings in phase 3 are taken with ~25 processes sharing the GPU and 16 CPU cores: they are
upper bounds, not the cost of one run alone (phase 2 gives those).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
STATS_LAYERS = (4, 5, 6, 7, 8)  # ROME and FT-L: layer 4; MEMIT and AlphaEdit: 4-8


@dataclass(frozen=True)
class Job:
    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Sizes:
    """How much each job does (the issue's sizes by default; small ones for a smoke run)."""

    cases: int = 200  # bench cases per dataset
    records: int = 200  # pitfalls records per file
    sequential: int = 1000  # edits of each sequential curve
    batch: int = 1000  # edits in the one MEMIT batch
    device: str = "cuda"


def kedit_command(*args: str) -> tuple[str, ...]:
    # --resume: running the campaign again (a later GPU session on the same machine) continues every run
    return (sys.executable, "-m", "kedit", *args, "--resume")


def bench_jobs(data: Path, runs: Path, sizes: Sizes) -> list[Job]:
    cf = f"counterfact-easyedit:{data / 'counterfact/easyedit_counterfact-edit.json'}"
    zsre = f"zsre:{data / 'zsre/zsre_mend_train-1k.json'}"
    pitfalls = data / "pitfalls/GPT2-XL"
    jobs = []
    # issue 4: 200 cases per dataset, each case edited alone and reverted
    for label, spec in (("cf", cf), ("zsre", zsre)):
        for method in ("rome", "ft-l", "memit"):
            jobs.append(Job(f"{label}-{method}", kedit_command(
                "bench", "--method", method, "--mode", "single", "--n", str(sizes.cases), "--data", spec,
                "--device", sizes.device, "--no-progress", "--out", str(runs / f"{label}-{method}"))))
        jobs.append(Job(f"{label}-memit-batch100", kedit_command(
            "bench", "--method", "memit", "--mode", "batch:100", "--n", str(sizes.cases), "--data", spec,
            "--device", sizes.device, "--no-progress", "--out", str(runs / f"{label}-memit-batch100"))))
    # issue 4: the pitfalls suite, 200 records per file
    for subset in ("coverage", "reverse", "composite"):
        for method in ("rome", "memit"):
            jobs.append(Job(f"conflict-{subset}-{method}", kedit_command(
                "pitfalls", "conflict", "--data", str(pitfalls / f"{subset}_edit.json"), "--method", method,
                "--limit", str(sizes.records), "--device", sizes.device, "--out", str(runs / f"conflict-{subset}-{method}"))))
    for split in ("easy", "hard"):
        for label, extra in (("memit", ()), ("memit-mle", ("--mle",))):
            jobs.append(Job(f"round-{split}-{label}", kedit_command(
                "pitfalls", "round", "--data", str(pitfalls / f"{split}.json"), "--method", "memit", *extra,
                "--limit", str(sizes.records), "--device", sizes.device, "--out", str(runs / f"round-{split}-{label}"))))
    # issue 3: sequential curves to 1,000 edits (one record per edit; MEMIT and AlphaEdit also 100 per edit)
    sequential = [("rome", (), "sequential:log"), ("memit", (), "sequential:log"),
                  ("alphaedit", (), "sequential:log"), ("ft-l", (), "sequential:log"),
                  ("ft-l-sss", ("--set", "sss_coef=0.9"), "sequential:log"),
                  ("memit", (), "sequential:log:100"), ("alphaedit", (), "sequential:log:100")]
    for label, extra, mode in sequential:
        method = "ft-l" if label.startswith("ft-l") else label
        suffix = "-per100" if mode.endswith(":100") else ""
        jobs.append(Job(f"seq-{label}{suffix}", kedit_command(
            "bench", "--method", method, *extra, "--mode", mode, "--n", str(sizes.sequential), "--data", cf, "--device", sizes.device,
            "--no-progress", "--out", str(runs / f"seq-{label}{suffix}"))))
    # issue 3: 1,000 edits in one MEMIT batch with the reference z settings
    jobs.append(Job("memit-scale-1000", (
        sys.executable, str(REPO / "bench/memit_scale.py"), "--ns", str(sizes.batch), "--device", sizes.device, "--threads", "1",
        "--data", str(data / "counterfact/easyedit_counterfact-edit.json"),
        "--out", str(runs / "memit-scale-1000.json"))))
    return jobs


def solo_jobs(data: Path, runs: Path, sizes: Sizes) -> list[Job]:
    """Most important first: the runner-throughput comparison (issue 4's targets), then edit timings."""
    cf_file = data / "counterfact/easyedit_counterfact-edit.json"
    return [
        Job("solo-throughput", (sys.executable, str(REPO / "bench/runner_throughput.py"), "--n", "50",
                                "--method", "memit", "--device", sizes.device, "--data", f"counterfact-easyedit:{cf_file}")),
        Job("solo-memit-scale", (sys.executable, str(REPO / "bench/memit_scale.py"), "--ns", "1", "10", "100",
                                 "--device", sizes.device, "--data", str(cf_file), "--out", str(runs / "memit-scale-solo.json"))),
        Job("solo-rome-10", (sys.executable, str(REPO / "bench/memit_scale.py"), "--ns", "10", "--method", "rome",
                             "--device", sizes.device, "--data", str(cf_file), "--out", str(runs / "rome-10-solo.json"))),
    ]


def setup(log: Path, device: str) -> None:
    """Convert the model and cache the statistics the jobs share (never computed by two at once)."""
    code = (
        "import kedit, torch, json\n"
        "from kedit.stats import second_moments\n"
        f"lm = kedit.load_model({MODEL!r}, device={device!r})\n"
        f"second_moments(lm, {list(STATS_LAYERS)!r}, None, n_tokens=100000)\n"
        "print(json.dumps({'device': str(lm.device), 'fingerprint': lm.fingerprint, 'torch': torch.__version__}))\n"
    )
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-c", code], check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)


def _skip_bulky(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # stored edit deltas (3.5-17 MB per edit) stay on the GPU machine
    return None if "/edits/" in f"/{info.name}/" or info.name.endswith("/edits") else info


def pack(runs: Path, logs: Path, out: Path, status: dict) -> None:
    (logs / "status.json").write_text(json.dumps(status, indent=1))
    partial = out / "results.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as archive:
        archive.add(runs, arcname="runs", filter=_skip_bulky)
        for log in sorted(logs.iterdir()):
            text = log.read_bytes()[-200_000:]  # progress output can be long; the end says how it went
            info = tarfile.TarInfo(f"logs/{log.name}")
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    partial.replace(out / "results.tar.gz")


def start(job: Job, logs: Path, threads: int) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(logs / f"{job.name}.log", "w") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(job.argv, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder laid out as ../shared/data")
    parser.add_argument("--out", type=Path, required=True, help="results.tar.gz goes here")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kedit-gpu"), help="run folders and logs")
    parser.add_argument("--seconds", type=float, default=540, help="wall-clock budget of the whole script")
    parser.add_argument("--solo-seconds", type=float, default=240,
                        help="budget of phase 2 (on an H200: throughput ~150 s, MEMIT 1/10/100 ~70 s, ROME x10 ~40 s)")
    parser.add_argument("--only", nargs="*", help="run only the jobs of these names (phase 3)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="200,200,1000,1000",
                        help="bench cases, pitfalls records, sequential edits, MEMIT batch (smoke run: 2,1,3,2)")
    args = parser.parse_args()
    cases, records, sequential, batch = (int(part) for part in args.sizes.split(","))
    sizes = Sizes(cases, records, sequential, batch, args.device)
    began = time.monotonic()
    deadline = began + args.seconds - 30  # leave time to stop the jobs and pack
    runs, logs = args.work / "runs", args.work / "logs"
    runs.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    status: dict = {"phases": {}, "jobs": {}}

    def mark(phase: str) -> None:
        status["phases"][phase] = round(time.monotonic() - began, 1)
        print(f"[{status['phases'][phase]:7.1f} s] {phase}", flush=True)

    setup(logs / "setup.log", args.device)
    mark("setup done")

    solo_deadline = min(time.monotonic() + args.solo_seconds, deadline)
    for job in solo_jobs(args.data, runs, sizes) if args.solo_seconds > 0 else []:
        process = start(job, logs, threads=8)
        try:
            process.wait(max(1.0, solo_deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(process)
        status["jobs"][job.name] = process.returncode
        mark(f"{job.name} rc={process.returncode}")
    pack(runs, logs, args.out, status)

    jobs = [job for job in bench_jobs(args.data, runs, sizes) if not args.only or job.name in args.only]
    running = {job.name: start(job, logs, threads=1) for job in jobs}
    mark(f"started {len(running)} jobs")
    stop_packing = threading.Event()

    def pack_every_minute() -> None:
        while not stop_packing.wait(60):
            status["jobs"] = {name: process.poll() for name, process in running.items()}
            status["elapsed"] = round(time.monotonic() - began, 1)
            pack(runs, logs, args.out, status)

    packer = threading.Thread(target=pack_every_minute, daemon=True)
    packer.start()
    while time.monotonic() < deadline and any(p.poll() is None for p in running.values()):
        time.sleep(2)
    stop_packing.set()
    packer.join()
    for name, process in running.items():
        if process.poll() is None:
            stop(process)
            status["jobs"][name] = "stopped at the deadline"
        else:
            status["jobs"][name] = process.returncode
    mark("jobs ended")
    pack(runs, logs, args.out, status)
    mark("packed")


if __name__ == "__main__":
    main()
