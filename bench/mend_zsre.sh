#!/usr/bin/env bash
# MEND on ZsRE, SmolLM2 (the SSS paper's Table 1, ZsRE row): trained on the derived-10k ZsRE training set
# with the paper's objective (L_e on the rephrase), without and with SSS (C = 0.9), STEPS each under the
# CounterFact editor's settings (lr 1e-5, chosen on CounterFact validation), then measured on the
# KnowEdit ZsRE test cases neither editor saw. Rerunning resumes.
set -euo pipefail
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
TEST=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
STEPS=${STEPS:-600}
for sss in 0 0.9; do
  .venv/bin/kedit train mend --data "$TRAIN" --out runs/mend-zsre-sss$sss --steps "$STEPS" --val-every 50 \
    --set lr=1e-5 --set val_cases=100 --set sss_coef=$sss --no-progress
  .venv/bin/kedit bench --method mend --set artifact=runs/mend-zsre-sss$sss --data "$TEST" --n 200 \
    --drop-training-overlap --out "runs/zsre-mend-sss$sss-s$STEPS" --resume --no-progress
done
