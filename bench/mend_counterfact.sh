#!/usr/bin/env bash
# MEND on SmolLM2-135M, CounterFact: the editor chosen by bench/mend_lr_sweep.sh (lr 1e-5, the best
# validation loss of the three) trained on to STEPS steps, then evaluated on the first 200 CounterFact
# evaluation records it never saw (--drop-training-overlap). Rerunning resumes both.
set -euo pipefail
TRAIN=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
STEPS=${STEPS:-1200}
.venv/bin/kedit train mend --data "$TRAIN" --out runs/mend-sweep/lr-1e-5 --steps "$STEPS" --val-every 50 \
  --set lr=1e-5 --set val_cases=100 --no-progress
.venv/bin/kedit bench --method mend --set artifact=runs/mend-sweep/lr-1e-5 --data "$CF" --n 200 \
  --drop-training-overlap --out "runs/cf-mend-s$STEPS" --resume --no-progress
