"""The cases a run edits: read as ``kedit bench --data`` reads them, optionally a seeded sample.

Without a seed a run takes the first ``n`` cases (and the next ``held_out``), exactly as
``kedit bench``. With ``seed: K`` it draws ``n + held_out`` cases from the whole file with
``random.Random(K)``, keeps them in file order, edits the first ``n`` and holds out the rest; the
data block of run.json records the seed and how many cases it drew from.
"""

from __future__ import annotations

import random
from pathlib import Path

from kedit.sweep.settings import RunSettings, SweepError

SAMPLE_SEED, SAMPLED_FROM = "sample_seed", "sampled_from"


def resolved_data(data: str, base: Path) -> str:
    """``NAME:PATH`` with a relative PATH made absolute against ``base`` (workers read it from anywhere)."""
    name, sep, path = data.partition(":")
    if not sep or not path:
        return data
    file = Path(path).expanduser()
    return f"{name}:{file if file.is_absolute() else (base / file).resolve()}"


def run_cases(settings: RunSettings):
    """The run's :class:`kedit.cli.bench.BenchData` (cases, held-out cases, the data block of run.json)."""
    # kedit bench's reader: one definition of what --data NAME:PATH means, for the CLI, bench/ and sweeps
    from kedit.data.bench_data import BenchData, load_bench_data

    if settings.seed is None:
        return load_bench_data(settings.data, settings.n, settings.held_out)
    loaded = load_bench_data(settings.data, 10**12, 0)
    every = loaded.cases
    wanted = settings.n + settings.held_out
    if wanted > len(every):
        raise SweepError(f"--data {settings.data} gives {len(every)} cases; a seeded sample of n {settings.n} plus "
                         f"held_out {settings.held_out} needs {wanted}")
    picked = sorted(random.Random(settings.seed).sample(range(len(every)), wanted))
    chosen = [every[index] for index in picked]
    spec = dict(loaded.spec) | {SAMPLE_SEED: settings.seed, SAMPLED_FROM: len(every)}
    return BenchData(tuple(chosen[: settings.n]), tuple(chosen[settings.n:]), spec)
