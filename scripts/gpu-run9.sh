#!/usr/bin/env bash
# H100 run 9 (issue 14): candidate speed-ups of the packed path against the current one, same
# process, random:3B fp16 (benchmarks/packed_variants.py); max-autotune in a second process with
# the current path again as its baseline. Usage (carry .gpu4, the fair-esm wheel): bash scripts/gpu-run9.sh
set -u
. scripts/gpu-env.sh r9 .gpu4
timeout 240 python3 benchmarks/packed_variants.py --model random:3B --variants current,deferred,repacked,gemms --out "$R" 2>&1 | grep -v Warning | tee "$R/variants.log"
timeout 330 python3 benchmarks/packed_variants.py --model random:3B --variants current,autotune --out "$R" > "$R/autotune.log" 2>&1
echo "autotune exit $?"; grep -E "^(current|autotune) " "$R/autotune.log"; tail -3 "$R/autotune.log"
