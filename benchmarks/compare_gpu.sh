#!/usr/bin/env bash
# The main comparison and the pre-training sweep of compare_mixers.py side by
# side on one GPU machine (16 cores, one GPU shared by all runs), 3 seeds, on
# 5 labelled minutes, within a wall-clock budget; rows that do not finish in
# time are left for a later invocation (the driver resumes).
# Usage: bash benchmarks/compare_gpu.sh RESULTS_FOLDER [SECONDS]
set -u
results=${1:-benchmarks/results/compare-gpu}
budget=${2:-450}
work=${WORK:-/tmp/compare-work}
python=${PYTHON:-python3}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$results"
driver() {
    timeout "$budget" "$python" benchmarks/compare_mixers.py --device cuda:0 \
        --work "$work" --workers 16 --seeds 1 2 3 --run-minutes 5 "$@"
}
# Generate the corpus once, before the drivers share it.
"$python" -c "
from tools.tiny_corpus import generate_lowresource_corpus as g
g('$work/corpus', 5.0, (5, 10, 60), 100, 150, seed=1234, num_workers=16)"
driver --study main --results "$results/main" --jobs 10 > "$results/main.log" 2>&1 &
driver --study sweep --results "$results/sweep" --jobs 6 --variants base fast \
    fast_freeze100 fast_reinit1 fast_freeze100_reinit1 cb256_fast \
    > "$results/sweep.log" 2>&1 &
wait
for study in main sweep; do
    "$python" benchmarks/compare_mixers.py --report-only \
        --results "$results/$study" >> "$results/$study.log" 2>&1
done
