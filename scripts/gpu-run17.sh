#!/usr/bin/env bash
# H100 run 17 (issue 14, goal 2): where the 10,000-sequence random:3B check's seconds outside its
# two forwards go, by function: the check under cProfile (CPU time and the waits on the GPU that
# the Python thread sees), its report's own timings beside it.
# Usage (carry .gpu4, the fair-esm wheel): bash scripts/gpu-run17.sh
set -u
. scripts/gpu-env.sh r17 .gpu4
python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
timeout 500 python3 -m cProfile -o "$R/check-10k-3b.prof" -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B \
  --json "$R/check-10k-3b-fp16-profiled.json" > "$R/check-10k-3b-profiled.log" 2>&1
echo "profiled check exit $?"
python3 - "$R" <<'PY' | tee "$R/profile.txt"
import json, pstats, sys
r = sys.argv[1]
t = json.load(open(f"{r}/check-10k-3b-fp16-profiled.json"))["timings"]
print("stages", {k: round(v, 2) for k, v in t["stages"].items()})
s = pstats.Stats(f"{r}/check-10k-3b.prof")
s.sort_stats("cumulative").print_stats(r"esmdiv|esm/|torch/(cuda|nn/functional)", 70)
s.sort_stats("tottime").print_stats(25)
PY
