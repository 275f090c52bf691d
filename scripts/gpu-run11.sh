#!/usr/bin/env bash
# H100 run 11: the packed path of run 10 (MLP residual added in the next layer's first region)
# still catches every known bug in the default configuration and still passes a correct run:
# the GPU tests, the self-test on random:3B, the seed18 check on random:3B.
# Usage (carry .gpu4, the fair-esm wheel): bash scripts/gpu-run11.sh
set -u
. scripts/gpu-env.sh r11 .gpu4
timeout 150 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > "$R/pytest-gpu.log" 2>&1; echo "pytest gpu exit $?"; tail -2 "$R/pytest-gpu.log"
timeout 220 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b.log" 2>&1
echo "selftest 3B exit $?"; tail -4 "$R/selftest-3b.log"
timeout 120 python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --json "$R/check-seed18-3b.json" > "$R/check-seed18-3b.log" 2>&1
echo "check seed18 3B exit $?"; grep -E "cosine|mean abs" "$R/check-seed18-3b.log" | head -3
