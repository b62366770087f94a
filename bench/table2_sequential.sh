#!/usr/bin/env bash
# The SSS paper's Table 2 on SmolLM2: sequential editing on CounterFact, every edit kept, checkpoints
# after 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 edited records (each checkpoint re-scores every record
# edited so far). MEND +- SSS (the paper-objective editors, 900 steps) and SERAC +- SSS (trained on
# CounterFact train by bench/serac_counterfact.sh) to N_TRAINED edits (1000); ROME, MEMIT and FT-L to
# N_DIRECT (100: at ~5-10 s per edit on this CPU, 1,000 edits each is hours). All on the records the MEND
# editor never saw. Every run resumes from its stored edits.
set -euo pipefail
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
N_TRAINED=${N_TRAINED:-1000}; N_DIRECT=${N_DIRECT:-100}
MEND=runs/mend-sweep/lr-1e-5
PART=${PART:-all}  # trained (MEND, SERAC), direct (ROME, MEMIT, FT-L) or all
K=".venv/bin/kedit bench --mode sequential:log --data $CF --resume --no-progress"
if [ "$PART" != direct ]; then
$K --method mend --set artifact=$MEND --n $N_TRAINED --drop-training-overlap --out runs/seq/mend
$K --method mend --set artifact=runs/mend-sss --n $N_TRAINED --drop-training-overlap --out runs/seq/mend-sss
for sss in 0 0.9; do
  if [ -d runs/serac-cf-sss$sss/artifact ]; then
    $K --method serac --set artifact=runs/serac-cf-sss$sss --n $N_TRAINED --drop-seen-by $MEND \
      --drop-training-overlap --out runs/seq/serac-sss$sss
  fi
done
fi
if [ "$PART" = trained ]; then exit 0; fi
for m in rome memit ft-l; do
  $K --method $m --n $N_DIRECT --drop-seen-by $MEND --out runs/seq/$m
done
$K --method ft-l --set sss_coef=0.9 --n $N_DIRECT --drop-seen-by $MEND --out runs/seq/ft-l-sss
