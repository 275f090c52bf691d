#!/usr/bin/env bash
# H100 run 25 (issue 14): what is left of goals 1 and 2, on one machine, four calls in a row (the
# machine stays warm ~30 s between calls):
#   bash scripts/gpu-run25.sh stage1    # carry .gpu7: the first half of the CUTLASS DSL cu13 wheel
#   bash scripts/gpu-run25.sh install   # carry .gpu8 .gpu9: the rest, fair-esm, quack; FlashAttention-4
#                                       # in a folder of its own (only part `bench` puts it on the path)
#   bash scripts/gpu-run25.sh check     # carry .gpu10 (dce4e30's esmdiv): the 10k random:3B check as
#                                       # users run it, dce4e30 (first on the machine), this commit,
#                                       # dce4e30 again; then each start-up import alone, fresh processes
#   bash scripts/gpu-run25.sh bench     # random:3B: the packed path as it ships (torch varlen_attn), with
#                                       # FlashAttention-4, and with FA4 and Inductor's pointwise tuning
# Results: $OUT/run25-PART.tgz; summary lines printed.
set -u
. scripts/gpu-wheels.sh "${1:-}"  # stage1 and install end there; Q and F are set
case "${1:-}" in
check|bench) ;;
*) echo "usage: $0 stage1|install|check|bench" >&2; exit 2 ;;
esac
OUT=${OUT:-out}
. scripts/gpu-env.sh "run25-$1" /tmp/w > /dev/null
R=$(realpath "$R")
trap 'tar czf "$OUT/run25-$1.tgz" -C "$OUT" "run25-$1"' EXIT
export PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
if [ "$1" = check ]; then
  # quack on the path, as in run 24's part `default`: installed, not imported (the check is not compiled)
  python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
  run10k() {  # LABEL DIR COMMIT NAME
    (cd "$2" && PYTHONPATH=$Q:$Q/nvidia_cutlass_dsl/dsl_packages:/tmp/site:$PWD ESMDIV_GIT_COMMIT=$3 timeout 200 \
      python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/$4.json" > "$R/$4.log" 2>&1)
    echo "$1 exit $?" | tee -a "$R/summary.txt"
    stages "$1" "$R/$4.json"
  }
  run10k 10k-dce4e30-first .gpu10/base dce4e30 check-10k-dce4e30-first
  run10k "10k-$ESMDIV_GIT_COMMIT" . "$ESMDIV_GIT_COMMIT" check-10k-head
  run10k 10k-dce4e30-again .gpu10/base dce4e30 check-10k-dce4e30-again
  for what in torch cuda scipy.stats varlen esmdiv; do  # each in a fresh process, after import torch
    python3 - "$what" <<'PY' 2>&1 | tail -1 | tee -a "$R/summary.txt"
import sys, time
t = time.perf_counter(); import torch; t_torch = time.perf_counter() - t
what = sys.argv[1]; t = time.perf_counter()
if what == "cuda": torch.zeros(1, device="cuda"); torch.cuda.synchronize()
elif what == "scipy.stats": import scipy.stats
elif what == "varlen": import torch.nn.attention.varlen
elif what == "esmdiv": import esmdiv.audit.run
print(f"import torch {t_torch:.2f} s, then {what}: {time.perf_counter() - t:.2f} s" if what != "torch" else f"import torch {t_torch:.2f} s")
PY
  done
else
  bench3b() {  # LABEL, with the environment given before the call
    timeout 240 python3 -m esmdiv bench --model random:3B --dtype fp16 --repeats 3 --paths padded,packed \
      --json "$R/bench-3B-$1.json" > "$R/bench-3B-$1.log" 2>&1
    echo "bench $1 exit $?" | tee -a "$R/summary.txt"
    python3 - "$R/bench-3B-$1.json" "$1" <<'PY' | tee -a "$R/summary.txt"
import json, sys
d = json.load(open(sys.argv[1])); p = d["paths"]
print(sys.argv[2], "padded", round(p["padded"]["tokens_per_s"]), "packed", round(p["packed"]["tokens_per_s"]),
      "x", round(d["speedups"]["packed_over_padded"], 3), "|", d.get("backend"), "|", d["fc1"])
PY
  }
  bench3b shipped
  PYTHONPATH=$F:$PYTHONPATH bench3b fa4
  PYTHONPATH=$F:$PYTHONPATH TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 bench3b fa4-pointwise
fi
