#!/usr/bin/env bash
# The long-tail suite on the gene benchmark (subject popularity over MEDLINE, org.Hs.eg.db): build the
# benchmark, probe SmolLM2 and Gemma-3 (without/with 5 demonstrations), then edit each fact alone on
# SmolLM2 with IKE, FT-L, ROME, MEMIT, MLE (one-to-many facts only) and MEND (the trained editor of
# bench/mend_mixed.sh, when runs/mend-mixed holds it). Every step resumes (--resume) and takes the
# shared CPU lock on its own, so other heavy jobs can run between steps (or hold it once for all steps:
# LOCK= flock /tmp/kedit-cpu.lock bench/longtail_genes.sh). Run from the repository root:
#   nohup bench/longtail_genes.sh > runs/longtail/genes.log 2>&1 &
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LOCK=${LOCK-flock /tmp/kedit-cpu.lock}  # LOCK= (empty) when the caller holds the lock for the whole script
if .venv/bin/kedit longtail --help >/dev/null 2>&1; then KL=(.venv/bin/kedit longtail); else KL=(.venv/bin/python bench/longtail_cli.py); fi
BENCH=runs/longtail/genes-bench
OUT=runs/longtail/genes
PER_CELL=${PER_CELL:-20}   # facts per bin x cardinality that are edited (the probe takes all 25)
STEPS=${STEPS:-probe fast slow mend}  # which groups of steps to run (probe; fast: IKE FT-L ROME; slow: MEMIT MLE; mend)
LABELS=3                   # a one-to-many fact's own object + 2 others: MLE's labels and the other-object probes
mkdir -p "$OUT"
[ -f "$BENCH/manifest.json" ] || "${KL[@]}" genes --out "$BENCH" --n 25 --k 5
has() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
has probe && for model in smollm2-135m gemma3-270m; do
  $LOCK "${KL[@]}" probe "$BENCH" --model "$model" --out "$OUT/probe-$model" --resume --no-progress
done
methods=""
has fast && methods="ike ft-l rome"
has slow && methods="$methods memit"
for method in $methods; do
  $LOCK "${KL[@]}" edit "$BENCH" --method "$method" --per-cell "$PER_CELL" --max-labels "$LABELS" \
    --out "$OUT/edit-smollm2-$method" --resume --no-progress
done
has slow && $LOCK "${KL[@]}" edit "$BENCH" --method mle --cardinality one-to-many --per-cell "$PER_CELL" --max-labels "$LABELS" \
  --out "$OUT/edit-smollm2-mle" --resume --no-progress
if ! has mend; then
  :
elif [ -f runs/mend-mixed/artifact/artifact.json ]; then
  $LOCK "${KL[@]}" edit "$BENCH" --method mend --set artifact=runs/mend-mixed --per-cell "$PER_CELL" \
    --max-labels "$LABELS" --out "$OUT/edit-smollm2-mend" --resume --no-progress
else
  echo "no MEND artifact in runs/mend-mixed (bench/mend_mixed.sh trains it): MEND skipped"
fi
