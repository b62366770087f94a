#!/usr/bin/env bash
# SERAC with subject negatives, continued: a copy of bench/serac_zsre_warm.sh's NAME=subjneg editor
# (step 800) trained on to STEPS (1200) under the same settings, measured on the same 200 cases.
set -euo pipefail
STEPS=${STEPS:-1200}
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
TEST=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
OUT=runs/serac-zsre-subjneg-more
[ -d "$OUT" ] || cp -r runs/serac-zsre-subjneg "$OUT"
.venv/bin/kedit train serac --data "$TRAIN" --out "$OUT" --steps "$STEPS" --val-every 50 \
  --set "cntr_layers=[28,29]" --set accumulate_steps=1 --set val_cases=100 --set subject_neg_prob=0.5 --no-progress
.venv/bin/kedit bench --method serac --set "artifact=$OUT" --data "$TEST" --n 200 \
  --drop-training-overlap --out "runs/zsre-serac-subjneg-s$STEPS" --resume --no-progress
