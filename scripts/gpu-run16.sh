#!/usr/bin/env bash
# H100 run 16 (issue 14, goal 2): the 10,000-sequence random:3B check on the final tree, where its
# wall time went (the report's timings) against its two forwards.
# Usage (carry .gpu4, the fair-esm wheel): bash scripts/gpu-run16.sh
set -u
. scripts/gpu-env.sh r16 .gpu4
python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
t0=$(date +%s.%N)
timeout 400 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-fp16.json" > "$R/check-10k-3b.log" 2>&1
echo "check exit $? shell wall $(python3 -c "import time; print(round(time.time()-$t0, 1))") s" | tee "$R/wall.txt"
python3 - "$R/check-10k-3b-fp16.json" <<'PY' | tee -a "$R/wall.txt"
import json, sys
d = json.load(open(sys.argv[1])); t = d["timings"]
print(d["verdict"], d["backend"], "compiled", d.get("compiled"), "wall", round(t["wall_s"], 1), {k: round(v, 1) for k, v in t["stages"].items()})
print("forwards", round(t["padded_s"] + t["packed_s"], 1), "wall/forwards", round(t["wall_s"] / (t["padded_s"] + t["packed_s"]), 3))
PY
