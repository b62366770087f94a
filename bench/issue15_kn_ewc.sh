#!/usr/bin/env bash
# Issue 15: KN and FT+EWC on SmolLM2-135M with the settings in kn.yaml / ft_ewc.yaml (chosen on training
# records by bench/issue15_tune.sh). Single edits on the first 200 KnowEdit ZsRE test cases and the first
# 200 CounterFact evaluation records (easyedit_counterfact-edit.json); sequential ZsRE to T = N_SEQ edits
# (checkpoints 1, 2, 5, 10, 20, 50, 100, ...) with the lifelong metrics; the upstream set is the first 100
# CounterFact evaluation records (true facts, never edited in these runs, the same set for every T):
# its token accuracy on the true answers after every checkpoint is the upstream accuracy (GRACE's TRR).
# Every run resumes (rerun after an interruption); STEPS picks a subset, e.g. STEPS="seq" or "single-cf".
# Run under the shared CPU lock:  flock /tmp/kedit-cpu.lock bench/issue15_kn_ewc.sh
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
ZS=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
N=${N:-200}; N_SEQ=${N_SEQ:-100}; METHODS=${METHODS:-"ft-ewc kn"}
STEPS=${STEPS:-"seq single-zs single-cf"}
OUT=${OUT:-runs/issue15}
K=".venv/bin/kedit bench --resume --no-progress"
for step in $STEPS; do
  for m in $METHODS; do
    case $step in
      seq) $K --method $m --data $ZS --n $N_SEQ --upstream $CF --upstream-n 100 --mode sequential:log \
             --out "$OUT/zsre-seq$N_SEQ-$m" ;;
      single-zs) $K --method $m --data $ZS --n $N --mode single --out "$OUT/zsre-$m" ;;
      single-cf) $K --method $m --data $CF --n $N --mode single --out "$OUT/cf-$m" ;;
      *) echo "unknown step $step (seq, single-zs, single-cf)" >&2; exit 2 ;;
    esac
  done
done
