"""Caches shared by a sweep's workers: two processes racing to fill the same statistics entry leave
one valid entry, computed once, which both of them use."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kedit.paths import exclusive_lock

REPO = Path(__file__).resolve().parents[1]
# Each process builds the same tiny model, waits for the start signal, then asks for the statistics of
# layer 1; computing them is slowed by a second so that the two really overlap.
RACER = """
import os, sys, time
from pathlib import Path
import torch
import kedit.stats.second_moment as statistics
from kedit.models import prepare_model
from tests.tiny_models import build_model, train_tokenizer

corpus, calls, go, out = sys.argv[1:5]
tokenizer = train_tokenizer()
lm = prepare_model(build_model("llama", len(tokenizer)), tokenizer, source="tiny")
real = statistics.collect_second_moments

def slow(*args, **kwargs):
    with open(calls, "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    return real(*args, **kwargs)

statistics.collect_second_moments = slow
Path(out + ".ready").touch()
while not Path(go).exists():
    time.sleep(0.01)
torch.save(statistics.second_moments(lm, [1], corpus, n_tokens=400, progress=False)[1], out)
"""


@pytest.mark.slow
def test_two_processes_filling_the_same_statistics_entry_leave_one_valid_entry(corpus_file, tmp_path):
    home, calls, go = tmp_path / "home", tmp_path / "calls.txt", tmp_path / "go"
    env = {**os.environ, "KEDIT_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    outs = [tmp_path / f"c{number}.pt" for number in range(2)]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(corpus_file), str(calls), str(go), str(out)],
                               env=env, cwd=REPO, stderr=subprocess.PIPE) for out in outs]
    deadline = time.monotonic() + 300
    while not all(Path(f"{out}.ready").exists() for out in outs):
        assert all(racer.poll() is None for racer in racers), racers[0].stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    go.touch()
    for racer in racers:
        assert racer.wait(300) == 0, racer.stderr.read().decode()[-2000:]

    assert len(calls.read_text().split()) == 1  # computed once; the other process waited and read it
    entries = sorted(path for path in home.rglob("*") if path.is_file() and ".locks" not in path.parts)
    assert [path.suffix for path in entries] == [".safetensors"]  # one entry, no temporaries left
    with safe_open(str(entries[0]), framework="pt") as handle:
        assert handle.metadata()["layer"] == "1"
    stored = load_file(str(entries[0]))["second_moment"]
    first, second = (torch.load(out) for out in outs)
    assert torch.equal(first, stored) and torch.equal(second, stored)
    assert stored.shape == (128, 128) and torch.allclose(stored, stored.T) and torch.all(torch.diagonal(stored) > 0)


def test_exclusive_lock_makes_a_second_process_wait(tmp_path):
    lock = tmp_path / ".locks" / "entry.lock"
    code = ("import sys, time; from kedit.paths import exclusive_lock; started = time.monotonic()\n"
            "with exclusive_lock(sys.argv[1]): print(time.monotonic() - started)")
    with exclusive_lock(lock):
        waiter = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting for the lock held here
    waited = float(waiter.communicate(timeout=60)[0])
    assert waited >= 1.0
