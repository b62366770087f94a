#!/usr/bin/env bash
# SERAC on CounterFact, SmolLM2 (the SSS paper's Table 1, CounterFact row): trained on CounterFact train
# under the ZsRE editor's CPU settings (blocks 28-29 trained, one update per 10 edits, lr 1e-5, hard and
# subject negatives), without and with SSS (C = 0.9), STEPS each, then measured on the CounterFact
# evaluation records neither editor saw. Rerunning resumes.
set -euo pipefail
TRAIN=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
STEPS=${STEPS:-400}
for sss in 0 0.9; do
  .venv/bin/kedit train serac --data "$TRAIN" --out runs/serac-cf-sss$sss --steps "$STEPS" --val-every 50 \
    --set "cntr_layers=[28,29]" --set accumulate_steps=1 --set val_cases=100 --set subject_neg_prob=0.5 \
    --set sss_coef=$sss --no-progress
  .venv/bin/kedit bench --method serac --set artifact=runs/serac-cf-sss$sss --data "$CF" --n 200 \
    --drop-training-overlap --out "runs/cf-serac-sss$sss-s$STEPS" --resume --no-progress
done
