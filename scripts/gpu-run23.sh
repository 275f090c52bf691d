#!/usr/bin/env bash
# H100 run 23 (issue 14, goal 1): quack-kernels' GEMM with the bias and exact-erf GELU in its
# epilogue, in place of cuBLAS fc1 then Inductor's GELU kernel, timed against the packed path in
# one process (benchmarks/packed_variants.py). Usage, from the repo root, in two calls in a row:
#   bash scripts/gpu-run23.sh stage1   # carry .gpu7: the first half of the CUTLASS DSL cu13 wheel to /tmp/w
#   bash scripts/gpu-run23.sh run      # carry .gpu8: the rest; join, check sha256, install, run
# or, after stage1, in the very next calls (the machine stays warm about 30 s between calls):
#   bash scripts/gpu-run23.sh all      # carry .gpu8 .gpu9: install as `run` does, then every GEMM
#                                      # through quack and the tuned configs quack chose
#                                      # (VARIANTS=a,b,… for others: run 23c's current,quack-break,quack-pinned,current)
#   bash scripts/gpu-run23.sh stack    # carry .gpu4 .gpu9 (FlashAttention-4): quack-tuned with
#                                      # Inductor's pointwise tuning, then also with FA4
# Results: $OUT/run23.tgz (JSON and logs); the variants' table is printed last.
set -u
case "${1:-}" in
stage1) mkdir -p /tmp/w && cp .gpu7/* /tmp/w/ && ls -la /tmp/w && nvidia-smi -L ;;
run)
  . scripts/gpu-env.sh run23 .gpu8
  trap 'tar czf "$OUT/run23.tgz" -C "$OUT" run23' EXIT
  cp .gpu8/* /tmp/w/ && cat /tmp/w/cu13.part.* > /tmp/w/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl \
    && (cd / && sha256sum -c /tmp/w/cu13.sha) || exit 3
  # a folder named site-packages: quack fingerprints an epilogue's code down to the first function
  # it finds outside site-packages, and cutlass's own globals (a ContextVar) have no fingerprint
  Q=/tmp/q/site-packages
  python3 -m pip install -q --no-index --no-deps --no-compile --target $Q /tmp/w/*.whl 2>&1 | tail -2
  export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH  # before /tmp/site
  python3 -c "import quack, cutlass, torch; print('quack', quack.__version__, quack.__file__, 'torch', torch.__version__)" 2>&1 | tee "$R/versions.txt"
  timeout 420 python3 benchmarks/packed_variants.py --model random:3B \
    --variants current,fc1-cublas,fc1-quack,quack-break,quack,quack-tuned,current --out "$R" 2>&1 | tee "$R/variants.log" | grep -v Warning
  ;;
all|stack)
  . scripts/gpu-env.sh run23$1 .gpu4
  trap 'tar czf "$OUT/run23$1.tgz" -C "$OUT" run23$1' EXIT
  Q=/tmp/q/site-packages
  if [ -d .gpu8 ] && [ ! -d $Q/quack ]; then
    cp .gpu8/* /tmp/w/ && cat /tmp/w/cu13.part.* > /tmp/w/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl \
      && (cd / && sha256sum -c /tmp/w/cu13.sha) || exit 3
    python3 -m pip install -q --no-index --no-deps --no-compile --target $Q /tmp/w/*.whl 2>&1 | tail -2
  fi
  [ -d .gpu9 ] && python3 -m pip install -q --no-index --no-deps --no-compile --target $Q .gpu9/*.whl 2>&1 | tail -2
  export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
  V="timeout 440 python3 benchmarks/packed_variants.py --model random:3B --out $R"
  TUNE="--inductor max_autotune_pointwise=1 --inductor coordinate_descent_tuning=1"
  if [ "$1" = all ]; then
    $V --variants ${VARIANTS:-current,quack-tuned,quack-all,current} 2>&1 | tee "$R/variants.log" | grep -v Warning
  else
    $V --variants current,quack-tuned $TUNE 2>&1 | tee "$R/variants-pointwise.log" | grep -v Warning
    $V --variants current,quack-tuned $TUNE --backend fa4 2>&1 | tee "$R/variants-pointwise-fa4.log" | grep -v Warning
  fi
  ;;
*) echo "usage: $0 stage1|run|all|stack" >&2; exit 2 ;;
esac
