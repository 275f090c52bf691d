#!/usr/bin/env bash
# H100 run 20 (issue 14, goal 2): what the packed path's first call spends its seconds on: the
# check's fixed costs again (benchmarks/check_overheads.py, with the attention kernel's first call
# timed alone), then the same under `python -X importtime`. Usage (carry .gpu4): bash scripts/gpu-run20.sh
set -u
. scripts/gpu-env.sh r20 .gpu4
timeout 200 python3 benchmarks/check_overheads.py --model random:3B --out "$R" 2>&1 | grep -v Warning | tee "$R/overheads.txt"
timeout 200 python3 -X importtime benchmarks/check_overheads.py --model random:3B --out "$R/importtime" > /dev/null 2> "$R/importtime.txt"
sort -t'|' -k2 -n "$R/importtime.txt" | tail -40
