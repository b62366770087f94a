#!/usr/bin/env bash
# Issue 15: KN's write coefficient λ2 and FT+EWC's λ for SmolLM2-135M, chosen on TRAINING records only
# (CounterFact train split and ZsRE derived-10k, never the KnowEdit ZsRE test set nor the CounterFact
# edit split): N single edits per setting. Every run resumes (rerun the script after an interruption).
# Run it under the shared CPU lock:  flock /tmp/kedit-cpu.lock bench/issue15_tune.sh
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-train.json
ZS=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
N=${N:-20}
OUT=${OUT:-runs/issue15/tune}
K=".venv/bin/kedit bench --n $N --mode single --resume --no-progress"
for data in cf zs; do
  if [ $data = cf ]; then D=$CF; else D=$ZS; fi
  # Adam's first update is ~lr per weight whatever the gradient's size, and at lr 1e-2 (GRACE) an edit
  # is learned in 2-3 updates, before the penalty can act; 1e-3 gives it more steps to act in.
  for lr in ${EWC_LRS:-1e-2 1e-3}; do
    for lam in ${EWC_LAMBDAS:-0 1e4 1e6 1e8}; do
      $K --method ft-ewc --data $D --set lr=$lr --set ewc_lambda=$lam --out "$OUT/$data-ft-ewc-lr$lr-l$lam"
    done
  done
  for write in ${KN_WRITES:-8 16 32}; do
    $K --method kn --data $D --set write_coef=$write --out "$OUT/$data-kn-w$write"
  done
  # every layer attributed (the paper) often selects a layer-0 neuron with a huge activation at every
  # position, whose rewritten value slot breaks the model; the top half of the layers, where the
  # paper finds its knowledge neurons, as the alternative
  for write in ${KN_TOP_WRITES:-8 32}; do
    $K --method kn --data $D --set write_coef=$write --set "layers=[15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]" \
      --out "$OUT/$data-kn-top-w$write"
  done
done
