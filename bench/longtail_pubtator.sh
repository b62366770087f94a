#!/usr/bin/env bash
# The long-tail suite on the PubTator benchmark (BC5CDR + NCBI Disease + BioRED abstracts, HPO triples,
# co-occurrence counted at the document and the sentence level: bench/longtail_build.sh, helper C's build),
# probed on SmolLM2 and Gemma-3 and edited on SmolLM2 with IKE, FT-L, ROME, MEMIT and MLE (one-to-many).
# Only the two lowest bins fill on ~2,700 abstracts; the report says so for the others. The benchmark is
# copied first (runs/longtail/pubtator-hpo-bench), so a rebuild of the source folder cannot change a run
# half way. Every step resumes and takes the shared CPU lock on its own:
#   nohup bench/longtail_pubtator.sh > runs/longtail/pubtator.log 2>&1 &
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LOCK=${LOCK-flock /tmp/kedit-cpu.lock}  # LOCK= (empty) when the caller holds the lock for the whole script
KL=(.venv/bin/kedit longtail)
SOURCE=${SOURCE:-runs/longtail/hpo-cells50}
BENCH=runs/longtail/pubtator-hpo-bench
OUT=runs/longtail/pubtator
PER_CELL=${PER_CELL:-20}
LABELS=3
STEPS=${STEPS:-probe fast slow}  # which groups of steps to run (probe; fast: IKE FT-L ROME; slow: MEMIT MLE)
if [ ! -f "$BENCH/manifest.json" ]; then
  [ -f "$SOURCE/manifest.json" ] || { echo "no $SOURCE: build it first (sh bench/longtail_build.sh)"; exit 1; }
  mkdir -p "$BENCH" && cp "$SOURCE"/cases.jsonl "$SOURCE"/demonstrations.jsonl "$SOURCE"/manifest.json "$BENCH"/
fi
mkdir -p "$OUT"
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
true  # the last step may be skipped by STEPS
