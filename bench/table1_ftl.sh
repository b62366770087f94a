#!/usr/bin/env bash
# The SSS paper's Table 1, FT-L cells, on SmolLM2: FT-L without and with SSS (C = 0.9) on the same 200
# CounterFact evaluation records as MEND (those the MEND editor never saw) and on the same 200 KnowEdit
# ZsRE test cases as SERAC (those the SERAC editor's training data does not share). Defaults otherwise
# (FT-L layer 4, eps 1e-2). Every run resumes; run under the shared CPU lock when others use the machine.
set -euo pipefail
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
ZS=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
K=.venv/bin/kedit
$K bench --method ft-l --set sss_coef=0.9 --data "$CF" --n 200 --drop-seen-by runs/mend-sweep/lr-1e-5 \
  --out runs/cf-ft-l-sss --resume --no-progress
for sss in 0 0.9; do
  $K bench --method ft-l --set sss_coef=$sss --data "$ZS" --n 200 --drop-seen-by runs/serac-zsre \
    --out runs/zsre-ft-l-sss$sss --resume --no-progress
done
