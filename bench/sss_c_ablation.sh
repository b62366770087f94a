#!/usr/bin/env bash
# The SSS paper's ablation of C (its Fig. 3) for FT-L with SSS on SmolLM2: C = 0.0, 0.1, ..., 1.0 on a
# validation split of the distract-neighbour locality set (the LAST 30 records of the file; the
# comprehensive study, bench/comprehensive_study.sh, measures its FIRST 100). Single edits; each run
# resumes. Read: reliability and locality.distract-neighbour per C (summary.json of each run).
set -euo pipefail
DN=counterfact-distracting:../shared/data/portability-locality/locality/distracting_neighbor/counterfact_distracting_neighbor.json
N=${N:-30}
[ -f runs/splits/dn-val.json ] || .venv/bin/python bench/split_cases.py "$DN" --start -$N --out runs/splits/dn-val.json
for c in 0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0; do
  .venv/bin/kedit bench --method ft-l --set sss_coef=$c --data cases:runs/splits/dn-val.json --n $N \
    --out runs/sss-c/c$c --resume --no-progress
done
