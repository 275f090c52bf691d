#!/usr/bin/env bash
# H100 run 14: run 13 again after the algorithm gate took in the pooled embedding (run 13: EOS in
# the pooling slipped through in bf16): the trained 8M model's false-alarm study (run 12's grid),
# the self-test in bf16 (trained 8M, random:650M), then in fp16 (random:3B, the default).
# Usage (carry .gpu5): bash scripts/gpu-run14.sh
set -u
RUN=r14 bash "$(dirname "$0")/gpu-run13.sh"
OUT=${OUT:-out}; R=$OUT/r14
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b-fp16.log" 2>&1
echo "selftest random:3B fp16 exit $?"; grep -E "eos-in-pooling|PASSED|FAILED" "$R/selftest-3b-fp16.log" | head -3
