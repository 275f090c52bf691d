#!/usr/bin/env bash
# H100 run 10 (issue 14): the packed path with each layer's MLP residual added in the next layer's
# first region, benchmarked against fair-esm's padded path in the same run (3B, 650M); the packed
# variants again (benchmarks/packed_variants.py): untuned, Inductor's pointwise autotuning, and
# max-autotune with persistent TMA GEMM templates (can a Triton GEMM with the erf-GELU epilogue beat
# cuBLAS + a GELU kernel?). Usage (carry .gpu4, the fair-esm wheel): bash scripts/gpu-run10.sh
set -u
. scripts/gpu-env.sh r10 .gpu4
for m in 3B 650M; do
  timeout 200 python3 -m esmdiv bench --model random:$m --dtype fp16 --paths padded,packed \
    --json "$R/bench-${m,,}-fp16.json" > "$R/bench-${m,,}.log" 2>&1
  echo "bench $m exit $?"; grep -E "tokens/s" "$R/bench-${m,,}.log" | tail -3
done
V="python3 benchmarks/packed_variants.py --model random:3B --out $R"
timeout 120 $V --variants current,repacked,gemms 2>&1 | grep -v Warning | tee "$R/variants.log"
timeout 150 $V --variants current --inductor max_autotune_pointwise=1 --inductor coordinate_descent_tuning=1 \
  > "$R/tuned.log" 2>&1; echo "tuned exit $?"; grep -E "^current " "$R/tuned.log"
timeout 170 $V --variants autotune --inductor triton.enable_persistent_tma_matmul=1 > "$R/tma.log" 2>&1
echo "tma exit $?"; grep -E "^autotune " "$R/tma.log"; grep -c "best_kernel\": \"triton" "$R/tma.log"
