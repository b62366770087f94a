#!/usr/bin/env bash
# Issue 15: GRACE and WISE on SmolLM2-135M, with the settings chosen on derived-10k (bench/grace_sweep.sh,
# bench/wise_sweep.sh, bench/issue15_choose.py; the same values are the smollm2-135m defaults in
# grace.yaml / wise.yaml).
#  * ZsRE, single edits: the first 200 KnowEdit ZsRE test cases, each edited alone.
#  * ZsRE, sequential: the first 1,000 KnowEdit ZsRE test cases edited one after another into one
#    memory, measured after 1, 2, 5, 10, 20, 50, 100, 200, 500 and 1,000 edits (sequential:log: the
#    states after T = 1, 10, 100, 1,000 edits are those of runs of T edits); the upstream set (accuracy,
#    drawdown) is the first 100 CounterFact evaluation records, as in bench/issue15_kn_ewc.sh (ZsRE's test
#    file gives 1,195 cases, too few for 1,000 edits plus 200 held out of it). /usr/bin/time records wall
#    time and peak memory; bench/memory_held.py measures the memory the 1,000 edits hold.
#  * The WISE sets (hallucination: the first 100 edit records; temporal: all 75), sequential.
# WISE draws its unrelated texts from the derived-10k ZsRE training set's NQ questions (loc_pool).
# Every run resumes: rerun the script after an interruption. Run under the shared CPU lock.
set -euo pipefail
TEST=knowedit:../shared/data/knowedit/ZsRE/ZsRE-test-all.json
TRAIN=zsre-derived:../shared/data/zsre/derived-10k/zsre_mend_train_10000.json
HALLU=wise:../shared/data/wise/hallucination-edit.json
TEMPORAL=wise:../shared/data/wise/temporal-edit.json
CF=counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json
OUT=${OUT:-runs/issue15}
RESULTS=${RESULTS:-docs/results/issue15}
STEPS=${STEPS:-"single seq1000 sets"}
K=".venv/bin/kedit bench --resume --no-progress"
# optional hyperparameter files (e.g. written by bench/issue15_choose.py); without them the YAML defaults
declare -A SETS=([grace]="${GRACE_HPARAMS:+--hparams $GRACE_HPARAMS}" [wise]="--set loc_pool=$TRAIN ${WISE_HPARAMS:+--hparams $WISE_HPARAMS}")
mkdir -p "$OUT" "$RESULTS"
for step in $STEPS; do
  for method in ${METHODS:-grace wise}; do
    case $step in
      single)
        $K --method $method ${SETS[$method]} --data "$TEST" --n 200 --mode single --out "$OUT/zsre-$method-single" ;;
      seq1000)
        /usr/bin/time -v -o "$OUT/zsre-$method-seq1000.time" $K --method $method ${SETS[$method]} --data "$TEST" \
          --n 1000 --upstream "$CF" --upstream-n 100 --mode sequential:log --out "$OUT/zsre-$method-seq1000"
        .venv/bin/python bench/memory_held.py --run "$OUT/zsre-$method-seq1000" \
          --out "$RESULTS/$method-seq1000-memory.json" ;;
      sets)
        $K --method $method ${SETS[$method]} --data "$HALLU" --n 100 --mode sequential:log --out "$OUT/hallucination-$method"
        $K --method $method ${SETS[$method]} --data "$TEMPORAL" --n 75 --mode sequential:log --out "$OUT/temporal-$method" ;;
    esac
  done
done
