#!/usr/bin/env bash
# Final H100 check of the merged tree: GPU tests, selftest on random:3B fp16, a full check, and
# both benchmarks again (every run is reported). Results in $OUT/results.tgz.
set -u
OUT=${OUT:-out}; R=$OUT/r; mkdir -p "$R"
trap 'tar czf "$OUT/results.tgz" -C "$OUT" r' EXIT
export PYTHONPATH=${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }
step gpu-tests; python3 -m pytest -q -m gpu tests/ >"$R/pytest-gpu.log" 2>&1; tail -1 "$R/pytest-gpu.log"
step selftest-3b; python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" >"$R/selftest-3b.log" 2>&1; echo "exit $?"; grep -E "PASSED|FAILED" "$R/selftest-3b.log"
step check-3b-full; python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --reference fp32 --trace --invariance --json "$R/check-3b-fp16-full.json" --junit "$R/check-3b.xml" >"$R/check-3b-full.log" 2>&1; echo "exit $?"
step report; python3 -m esmdiv report "$R/check-3b-fp16-full.json" --html "$R/check-3b.html" >/dev/null 2>&1; echo "exit $?"
step bench-3b; python3 -m esmdiv bench --model random:3B --dtype fp16 --json "$R/bench-3b-fp16.json" >"$R/bench-3b.log" 2>&1; grep -E "packed \(|padded \(|HF |speed-up" "$R/bench-3b.log" | cut -c1-112
step bench-650m; python3 -m esmdiv bench --model random:650M --dtype fp16 --json "$R/bench-650m-fp16.json" >"$R/bench-650m.log" 2>&1; grep -E "packed \(|padded \(|HF |speed-up" "$R/bench-650m.log" | cut -c1-112
step done
