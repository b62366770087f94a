#!/usr/bin/env bash
# MEND with the SSS regulariser (C = 0.9, the paper's value) on CounterFact: the same data, lr (1e-5) and
# steps (900) as the paper-objective editor of bench/mend_counterfact.sh, then the same 200 unseen
# evaluation records. Rerunning resumes both.
set -euo pipefail
TRAIN=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
STEPS=${STEPS:-900}
.venv/bin/kedit train mend --data "$TRAIN" --out runs/mend-sss --steps "$STEPS" --val-every 50 \
  --set lr=1e-5 --set val_cases=100 --set sss_coef=0.9 --no-progress
.venv/bin/kedit bench --method mend --set artifact=runs/mend-sss --data "$CF" --n 200 \
  --drop-training-overlap --out "runs/cf-mend-sss-s$STEPS" --resume --no-progress
