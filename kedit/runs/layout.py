"""The names inside a run directory, spelled once for every writer and reader.

* ``run.json`` — what is being run (``kind``, model and fingerprint, method, hyperparameters, data
  and its digest, mode, provenance), written before any work starts; resumed runs add a session;
* ``results.jsonl`` — one record per case (``kedit bench``, ``kedit demo``);
* ``cases.jsonl`` — one record per case of a ``kedit pitfalls`` run;
* ``curve.jsonl`` — sequential bench runs: one ``{"n_edits": k, "summary": {...}}`` line per checkpoint;
* ``edits/NNNNN/`` — sequential bench runs: each kept edit as saved by ``Edit.save``;
* ``summary.json`` — means and timings, written atomically at the end (a demo folder has no
  ``run.json``; its ``summary.json`` carries ``kind: kedit-demo`` instead).
"""

from __future__ import annotations

from pathlib import Path

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
CASES_FILE = "cases.jsonl"
SUMMARY_FILE = "summary.json"
CURVE_FILE = "curve.jsonl"
EDITS_DIR = "edits"

# The ``kind`` each producer writes into run.json (a demo into summary.json); kedit.reports reads them.
BENCH = "bench"
PITFALLS_CONFLICT = "pitfalls-conflict"
PITFALLS_ROUND = "pitfalls-round"
DEMO = "kedit-demo"
LONGTAIL_PROBE = "longtail-probe"  # kedit longtail probe (kedit.longtail.probe)


def edit_dir(directory: Path, number: int) -> Path:
    """Where the ``number``-th kept edit of a sequential run is saved (zero-padded so names sort in order)."""
    return directory / EDITS_DIR / f"{number:05d}"
