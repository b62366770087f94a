#!/usr/bin/env bash
# MEND with kedit's edit_loss_on: mixed, warm-started from the paper-objective editor of
# bench/mend_counterfact.sh at step 900 (its checkpoint copied in: the loop continues from step 900),
# trained 300 more steps with L_e read on the rephrase or on the edit prompt (1/2 each), then measured on
# the same 200 unseen CounterFact evaluation records.
set -euo pipefail
TRAIN=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
if [ ! -f runs/mend-mixed/checkpoint.pt ]; then
  mkdir -p runs/mend-mixed && cp runs/mend-sweep/lr-1e-5/checkpoint.pt runs/mend-mixed/
fi
.venv/bin/kedit train mend --data "$TRAIN" --out runs/mend-mixed --steps 1200 --val-every 50 \
  --set lr=1e-5 --set val_cases=100 --set edit_loss_on=mixed --no-progress
.venv/bin/kedit bench --method mend --set artifact=runs/mend-mixed --data "$CF" --n 200 \
  --drop-training-overlap --out runs/cf-mend-mixed --resume --no-progress
