#!/usr/bin/env bash
# Both long-tail runs (bench/longtail_genes.sh: the gene subject-popularity benchmark; bench/longtail_pubtator.sh:
# the PubTator/HPO co-occurrence benchmark) under ONE hold of the shared CPU lock, cheapest steps first, so
# whatever time there is goes to the probes and the fast editors of both before the slow ones:
#   nohup flock /tmp/kedit-cpu.lock bench/longtail_all.sh > runs/longtail/all.log 2>&1 &
set -uo pipefail
export LOCK=
for steps in probe fast slow mend; do
  STEPS=$steps bench/longtail_genes.sh || echo "genes, $steps: failed ($?)"
  [ "$steps" = mend ] || STEPS=$steps bench/longtail_pubtator.sh || echo "pubtator, $steps: failed ($?)"
done
