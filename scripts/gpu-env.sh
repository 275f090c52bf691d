# The preamble of the H100 run scripts, sourced: `. scripts/gpu-env.sh RUN WHEELS`.
# RUN: the run's folder under $OUT (set as $R); WHEELS: the carried folder that holds the fair-esm
# wheel (.gpu4, or .gpu5 with the trained 8M checkpoint). Installs the wheel (no index: the device
# has no internet), exports what every esmdiv command of the run needs, and records the GPU.
OUT=${OUT:-out}; R=$OUT/$1; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$2"/fair_esm-*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$R/gpu.txt"
# stages LABEL CHECK_JSON: one line for $R/summary.txt: the verdict, the wall, the two forwards,
# their ratio (issue 14, goal 2) and every stage of 0.05 s or more.
stages() {
  python3 - "$1" "$2" <<'PY' | tee -a "$R/summary.txt"
import json, sys
d = json.load(open(sys.argv[2])); t = d["timings"]; f = t["padded_s"] + t["packed_s"]
print(sys.argv[1], d["verdict"], "wall", round(t["wall_s"], 1), "forwards", round(f, 1), "ratio", round(t["wall_s"] / f, 3),
      {k: round(v, 2) for k, v in t["stages"].items() if v >= 0.05})
PY
}
# check_10k LABEL DIR COMMIT TIMEOUT NAME LOG: the 10,000-sequence random:3B check
# (/tmp/lognormal-10k.fasta) run from DIR (this tree, or a carried `git archive` of COMMIT) as
# COMMIT; writes $R/NAME.json and $R/LOG.log ($R absolute) and adds its line to the summary.
check_10k() {
  (cd "$2" && PYTHONPATH=/tmp/site:$PWD ESMDIV_GIT_COMMIT=$3 timeout "$4" python3 -m esmdiv check \
    /tmp/lognormal-10k.fasta --model random:3B --json "$R/$5.json" > "$R/$6.log" 2>&1)
  stages "$1" "$R/$5.json"
}
