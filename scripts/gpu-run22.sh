#!/usr/bin/env bash
# H100 run 22 (issue 14, goal 2): the position probe in one fp32 pack (the sample twice,
# PROBE_OFFSET positions apart) instead of two packs with the filler in front and behind.
# Part a: what it guards must still hold: the trained 8M model's false-alarm grid and the bf16
# self-tests (run 13's script), and the self-test of random:3B in fp16 (the default).
# Part b: what it costs: benchmarks/check_overheads.py (both probe designs in one process), then
# the 10,000-sequence random:3B check on the commit before it (287243e, carried in .gpu6/base) and
# on this one, same machine.
# Each part bundles its folder into one archive ($OUT/RUN.tgz): a call returns only 8 files.
# Usage (carry .gpu5, and .gpu6 for b): bash scripts/gpu-run22.sh a; bash scripts/gpu-run22.sh b
set -u
part=${1:-a}
bundle() { tar czf "$OUT/$(basename "$R").tgz" -C "$(dirname "$R")" "$(basename "$R")" && rm -rf "$R"; }
case "$part" in
  a)
    RUN=r22a bash "$(dirname "$0")/gpu-run13.sh"
    . scripts/gpu-env.sh r22a .gpu5
    timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b-fp16.log" 2>&1
    echo "selftest random:3B fp16 exit $?"; grep -E "global-positions|PASSED|FAILED" "$R/selftest-3b-fp16.log" | head -4
    bundle ;;
  b)
    . scripts/gpu-env.sh r22b .gpu5
    timeout 120 python3 benchmarks/check_overheads.py --model random:3B --out "$R" > "$R/overheads.txt" 2>&1
    echo "overheads exit $?"; grep -E "probe pack" "$R/overheads.txt"
    python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
    R=$(realpath "$R")
    check_10k "10k-base-287243e" .gpu6/base 287243e 220 check-10k-3b-fp16-base check-10k-base
    check_10k "10k-new-$ESMDIV_GIT_COMMIT" . "$ESMDIV_GIT_COMMIT" 220 check-10k-3b-fp16 check-10k
    bundle ;;
esac
