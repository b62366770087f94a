#!/usr/bin/env bash
# SERAC on SmolLM2-135M, ZsRE: trained on the derived-10k ZsRE training set (validation: its last 200
# records that share no prompt with training), evaluated on the first 200 KnowEdit ZsRE test cases.
# CPU budget settings (not tuned on the test set): the counterfactual copy trains its last two blocks
# (cntr_layers), one update per 10 edits (accumulate_steps 1 instead of the paper's 10), the paper's
# lr 1e-5 and hard negatives. Rerunning resumes both.
set -euo pipefail
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
TEST=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
STEPS=${STEPS:-1000}
SETS=(--set "cntr_layers=[28,29]" --set accumulate_steps=1 --set val_cases=100 ${EXTRA_SETS:-})
.venv/bin/kedit train serac --data "$TRAIN" --out "runs/serac-zsre${SUFFIX:-}" --steps "$STEPS" --val-every 50 \
  "${SETS[@]}" --no-progress
.venv/bin/kedit bench --method serac --set "artifact=runs/serac-zsre${SUFFIX:-}" --data "$TEST" --n 200 \
  --drop-training-overlap --out "runs/zsre-serac${SUFFIX:-}-s$STEPS" --resume --no-progress
