#!/usr/bin/env bash
# The sweep benchmarks of docs/BENCHMARKS.md ("Sweeps on one machine: the local pool and Ray against
# one run after another" and "FT-L's ε by Ray Tune"), one after another. Run alone, under the shared
# CPU lock:
#   nohup flock /tmp/kedit-cpu.lock bench/sweep_benchmarks.sh runs/sweep-bench > runs/sweep-bench.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/sweep-bench}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
# 1. ROME, MEMIT and FT-L on 50 CounterFact cases each: one after another, a local pool of 2, Ray (2 CPUs)
.venv/bin/python bench/sweep_wall_time.py --out "$OUT/wall"
# 2. FT-L's ε: the hand grid (6 values) and the Tune search (8 trials, ASHA) on the same 25 train records
.venv/bin/kedit sweep run bench/sweeps/ft_eps_grid.yaml --out "$OUT/ft-eps-grid" --workers 2 --no-progress --resume
.venv/bin/kedit sweep run bench/sweeps/ft_eps_search.yaml --out "$OUT/ft-eps-search" --ray auto --cpus-per-run 1 \
    --no-progress --resume
.venv/bin/kedit report "$OUT/ft-eps-grid" "$OUT/ft-eps-search" --out "$OUT/ft-eps-report"
