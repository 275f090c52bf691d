#!/usr/bin/env bash
# H100 run 19 (issue 14, goal 2): the fixed costs of a check, piece by piece, random:3B fp16
# (benchmarks/check_overheads.py), twice in fresh processes. Usage (carry .gpu4): bash scripts/gpu-run19.sh
set -u
. scripts/gpu-env.sh r19 .gpu4
for i in 1 2; do
  mkdir -p "$R/p$i"
  timeout 200 python3 benchmarks/check_overheads.py --model random:3B --out "$R/p$i" 2>&1 | grep -v Warning | tee "$R/overheads-$i.txt"
done
