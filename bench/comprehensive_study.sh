#!/usr/bin/env bash
# The SSS paper's comprehensive study (its Tables 3 and 5) on the Yao et al. 2023 sets, SmolLM2, single
# edits: locality by kind (pre-neighbour, distract-neighbour, unrelated-attribute) on the first N_LOC
# records of the distract-neighbour set; portability by kind (one-hop from the same set, subject-replace
# on CounterFact and ZsRE, inverse-relation on ZsRE) on the first N_PORT records of each.
# Each trained editor runs on the sets of the domain it was trained on (MEND: CounterFact train; SERAC:
# ZsRE derived-10k), leaving out cases its training shared (--drop-training-overlap); FT-L +- SSS on all;
# ROME and MEMIT on the locality set. Every run resumes.
set -euo pipefail
P=../shared/data/portability-locality
DN=counterfact-distracting:$P/locality/distracting_neighbor/counterfact_distracting_neighbor.json
CSR=counterfact-subject-replace:$P/portability/subject_replace/counterfact_subject_replace.json
ZSR=zsre-subject-replace:$P/portability/subject_replace/zsre_subject_replace.json
ZIR=zsre-inverse-relation:$P/portability/inverse_relation/zsre_inverse_relation.json
N_LOC=${N_LOC:-100}; N_PORT=${N_PORT:-100}
MEND=${MEND:-runs/mend-sweep/lr-1e-5}; MEND_SSS=${MEND_SSS:-runs/mend-sss}  # both the paper objective, 900 steps
SERAC=${SERAC:-runs/serac-zsre-subjneg}; SERAC_SSS=${SERAC_SSS:-runs/serac-zsre-subjneg-sss}
K=".venv/bin/kedit bench --resume --no-progress"
run() { local out=$1; shift; $K "$@" --out "runs/study/$out"; }
for d in dn:$DN:$N_LOC csr:$CSR:$N_PORT; do
  tag=${d%%:*}; rest=${d#*:}; n=${rest##*:}; data=${rest%:*}
  run $tag-mend --method mend --set artifact=$MEND --data "$data" --n $n --drop-training-overlap
  run $tag-mend-sss --method mend --set artifact=$MEND_SSS --data "$data" --n $n --drop-training-overlap
  run $tag-mend-mixed --method mend --set artifact=runs/mend-mixed --data "$data" --n $n --drop-training-overlap
done
for d in zsr:$ZSR:$N_PORT zir:$ZIR:$N_PORT; do
  tag=${d%%:*}; rest=${d#*:}; n=${rest##*:}; data=${rest%:*}
  run $tag-serac --method serac --set artifact=$SERAC --data "$data" --n $n --drop-training-overlap
  run $tag-serac-sss --method serac --set artifact=$SERAC_SSS --data "$data" --n $n --drop-training-overlap
done
run dn-rome --method rome --data "$DN" --n $N_LOC --drop-seen-by $MEND
run dn-memit --method memit --data "$DN" --n $N_LOC --drop-seen-by $MEND
for d in dn:$DN:$N_LOC:$MEND csr:$CSR:$N_PORT:$MEND zsr:$ZSR:$N_PORT:$SERAC zir:$ZIR:$N_PORT:$SERAC; do
  IFS=: read -r tag name path n seen <<< "$d"
  for sss in 0 0.9; do
    run $tag-ft-l-sss$sss --method ft-l --set sss_coef=$sss --data "$name:$path" --n $n --drop-seen-by $seen
  done
done
