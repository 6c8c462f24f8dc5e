#!/usr/bin/env bash
# Rebuilds benchmarks/results/cpu-2threads-train: the paper-scale training-step
# table of the README (Whetten et al.'s protocol, forward+backward, fp32).
# Run it on an otherwise idle 2-core, 24 GiB machine (about 26 minutes):
# PyTorch's threads slow down several times over when another process competes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/cpu-2threads-train}
bench=(.venv/bin/python benchmarks/train_lengths.py --out "$out"
    --modes forward_backward --repeats 2 --mem-budget-gib 21 --max-seconds 60)
rm -rf "$out"
# Batch 6 at 10, 20 and 40 s, every mixer at one length before the next.
for seconds in 10 20 40; do
    "${bench[@]}" --append --seconds "$seconds"
done
# 80 s at batch 2: at batch 6 a step takes minutes on 2 cores.
"${bench[@]}" --append --seconds 80 --batch 2
