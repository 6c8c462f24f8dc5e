#!/usr/bin/env bash
# Rebuilds benchmarks/results/cpu-2threads: the CPU figures quoted in the README.
# Run it on an otherwise idle 2-core machine (about 10 minutes): PyTorch's
# threads slow down several times over when another process competes for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/cpu-2threads}
bench=(.venv/bin/python benchmarks/mixer_scaling.py --out "$out")
rm -rf "$out"
# One hour of audio through the paper-scale PoM encoder, inference, batch 1.
"${bench[@]}" --scopes paper --mixers pom --modes forward \
    --lengths 3000 12000 90000 --repeats 1 --max-seconds 900
# Every mixer alone: d_model 144, batch 8.
"${bench[@]}" --append --scopes mixer --lengths 750 3000 12000 \
    --repeats 3 --max-seconds 30 --mem-budget-gib 16
# The small encoder, batch 2 so that 12000 frames fit in memory.
"${bench[@]}" --append --scopes small --lengths 750 3000 12000 --batch-small 2 \
    --repeats 2 --max-seconds 60
# The rows that the targets compare, again with more repeats (RelPosMHAXL's
# forward+backward at 3000 frames peaks near 15 GiB: a budget of 16 may skip it
# when the prediction from shorter lengths overshoots).
"${bench[@]}" --append --scopes mixer --modes forward_backward --lengths 3000 \
    --mixers pom pom_matched pom_linears pom_naive summarymixing RelPosMHAXL \
    --repeats 5 --max-seconds 60 --mem-budget-gib 21
