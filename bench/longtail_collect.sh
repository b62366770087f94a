#!/usr/bin/env bash
# Commit-ready copies of the long-tail runs and their report: every finished run folder under
# runs/longtail/{genes,pubtator}/ goes to docs/results/longtail/{genes,pubtator}/<run>/ (run.json, results.jsonl,
# summary.json, longtail_facts.jsonl, longtail_summary.json, ike_pool.jsonl), machine paths scrubbed; the gene
# benchmark itself (built from Debian's org.Hs.eg.db, small) to docs/results/longtail/genes/benchmark/ (the
# PubTator one stays in runs/: its cases quote the corpora); then `kedit report` over every committed run (these copies and earlier ones) into
# docs/results/longtail/report/.   bench/longtail_collect.sh
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DEST=docs/results/longtail
for topic in genes pubtator; do
  for run in runs/longtail/$topic/*/; do
    run=${run%/}
    [ -f "$run/summary.json" ] || { echo "skip $run (not finished)"; continue; }
    out="$DEST/$topic/$(basename "$run")"
    mkdir -p "$out"
    for f in run.json results.jsonl summary.json longtail_facts.jsonl longtail_summary.json ike_pool.jsonl; do
      [ -f "$run/$f" ] && cp "$run/$f" "$out/"
    done
  done
done
mkdir -p "$DEST/genes/benchmark"
cp runs/longtail/genes-bench/{cases.jsonl,demonstrations.jsonl,manifest.json} "$DEST/genes/benchmark/"
.venv/bin/python bench/scrub_paths.py "$(pwd)/$DEST/genes" "$(pwd)/$DEST/pubtator"
# the report covers every committed run, also those an earlier checkout collected (runs/ is not kept)
committed=()
for run in "$DEST"/genes/*/ "$DEST"/pubtator/*/; do
  run=${run%/}
  [ -f "$run/summary.json" ] && committed+=("$run")
done
.venv/bin/kedit report "${committed[@]}" --out "$DEST/report"
