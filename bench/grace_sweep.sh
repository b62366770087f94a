#!/usr/bin/env bash
# GRACE's layer and deferral radius for SmolLM2-135M, chosen on ZsRE training records (derived-10k,
# never the KnowEdit test set): N sequential edits (one codebook), measured once at the end, for every
# LAYERS x EPS pair; then the chosen pair with the reference's 100 steps against EasyEdit's 50.
# Every run resumes (rerun the script after an interruption). Run under the shared CPU lock.
set -euo pipefail
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
N=${N:-50}; ITERS=${ITERS:-50}
LAYERS=${LAYERS:-"18 24"}; EPS=${EPS:-"2 5 8"}
OUT=${OUT:-runs/issue15/sweep-grace}
K=".venv/bin/kedit bench --method grace --data $TRAIN --n $N --mode sequential:$N --resume --no-progress"
for layer in $LAYERS; do
  for eps in $EPS; do
    $K --set layer=$layer --set eps_init=$eps --set n_iter=$ITERS --out "$OUT/L$layer-e$eps-i$ITERS"
  done
done
