#!/usr/bin/env bash
# MEND on SmolLM2-135M: choose the editor learning rate on the VALIDATION split (the last 200 records of
# CounterFact train, held out by `kedit train`), 300 steps of 10 edits each per setting. Resumable: rerun
# the script and every run continues from its checkpoint. Results: runs/mend-sweep/lr-*/train-log.jsonl;
# summary: .venv/bin/python bench/mend_curve.py runs/mend-sweep/lr-*
set -euo pipefail
DATA=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
for lr in 1e-6 1e-5 1e-4; do
  .venv/bin/kedit train mend --data "$DATA" --out "runs/mend-sweep/lr-$lr" --steps "${STEPS:-300}" \
    --val-every 50 --set lr="$lr" --set val_cases=100 --no-progress
done
