#!/usr/bin/env bash
# SERAC on ZsRE, continued from bench/serac_zsre.sh's editor at step 400 (its checkpoint and hard-negative
# table copied in: the loop resumes at step 400) to STEPS (800) under the same settings plus EXTRA_SETS,
# then measured on the same 200 KnowEdit ZsRE test cases. Used for three arms that share the first 400
# steps: plain (EXTRA_SETS empty), subject negatives (subject_neg_prob=0.5), and those plus SSS (C = 0.9).
# NAME names the arm's folders. Rerunning resumes both the training and the bench run.
set -euo pipefail
NAME=${NAME:?set NAME, e.g. NAME=subjneg}
STEPS=${STEPS:-800}
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
TEST=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
OUT=runs/serac-zsre-$NAME
if [ ! -f "$OUT/checkpoint.pt" ]; then
  mkdir -p "$OUT" && cp runs/serac-zsre/checkpoint.pt runs/serac-zsre/serac-hard-negatives-*.safetensors "$OUT"/
  # the arm chooses its best state among its own validations (steps 450 ... STEPS), not the shared part's
  .venv/bin/python - "$OUT/checkpoint.pt" <<'PY'
import math, sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
state["loop"]["best_val"], state["loop"]["best_step"] = math.inf, state["loop"]["step"]
torch.save(state, sys.argv[1])
PY
fi
SETS=(--set "cntr_layers=[28,29]" --set accumulate_steps=1 --set val_cases=100 ${EXTRA_SETS:-})
.venv/bin/kedit train serac --data "$TRAIN" --out "$OUT" --steps "$STEPS" --val-every 50 "${SETS[@]}" --no-progress
.venv/bin/kedit bench --method serac --set "artifact=$OUT" --data "$TEST" --n 200 \
  --drop-training-overlap --out "runs/zsre-serac-$NAME-s$STEPS" --resume --no-progress
