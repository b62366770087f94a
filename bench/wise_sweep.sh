#!/usr/bin/env bash
# WISE's step size, margins and number of context templates for SmolLM2-135M, chosen on ZsRE training
# records (derived-10k, never the KnowEdit test set): N sequential edits in one side memory (one shard),
# measured once at the end. The unrelated texts are the same training set's NQ questions (loc_pool), as
# the reference draws them. Layer 26 = the default 85 % of depth (the reference's Llama-2-7B layer 27/32).
# Every run resumes (rerun the script after an interruption). Run under the shared CPU lock.
set -euo pipefail
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
N=${N:-30}
OUT=${OUT:-runs/issue15/sweep-wise}
K=".venv/bin/kedit bench --method wise --data $TRAIN --n $N --mode sequential:$N --resume --no-progress
   --set loc_pool=$TRAIN --set layer=26"
FIVE='context_template_length_params=[[5,2],[10,2]]'
$K --set edit_lr=0.1 --set n_iter=40 --set "$FIVE" --out "$OUT/lr0.1-i40-t5"
$K --set edit_lr=0.05 --set n_iter=40 --set "$FIVE" --out "$OUT/lr0.05-i40-t5"
$K --set edit_lr=0.1 --set n_iter=40 --set "$FIVE" --set "act_margin=[5,15,10]" --out "$OUT/lr0.1-i40-t5-b15"
$K --set edit_lr=0.1 --set n_iter=70 --set "$FIVE" --out "$OUT/lr0.1-i70-t5"
$K --set edit_lr=0.1 --set n_iter=40 --out "$OUT/lr0.1-i40-t11"
