#!/usr/bin/env bash
# Copy the record files of finished run directories (run.json, results.jsonl, summary.json, curve.jsonl)
# into docs/results/<topic>/<run name>/ and scrub machine paths: bench/collect_runs.sh TOPIC RUN_DIR...
set -euo pipefail
TOPIC=$1; shift
for run in "$@"; do
  [ -f "$run/summary.json" ] || { echo "skip $run (not finished: no summary.json)"; continue; }
  dest="docs/results/$TOPIC/$(basename "$run")"
  mkdir -p "$dest"
  for f in run.json results.jsonl summary.json curve.jsonl; do [ -f "$run/$f" ] && cp "$run/$f" "$dest/"; done
  echo "$run -> $dest"
done
.venv/bin/python bench/scrub_paths.py "$(pwd)/docs/results/$TOPIC"
