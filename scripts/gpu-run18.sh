#!/usr/bin/env bash
# H100 run 18 (issue 14, goal 2): the evidence pass's high-precision run in groups of similar
# lengths and the masked-perplexity sample in a pass of its own, against the commit before them
# (114bc7e, carried in .gpu6/base), the 10,000-sequence random:3B check each, same machine; and the
# seed18 check twice (a fresh interpreter cache, then a warm one) for what start-up costs when
# Python has to compile the installed modules first.
# Usage (carry .gpu4 and .gpu6): bash scripts/gpu-run18.sh
set -u
. scripts/gpu-env.sh r18 .gpu4
python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
for i in 1 2; do
  timeout 120 python3 -m esmdiv check esmdiv/data/seed18.fasta --model random:3B --no-compile --json "$R/seed18-$i.json" > "$R/seed18-$i.log" 2>&1
  stages "seed18-run$i" "$R/seed18-$i.json"
done
R=$(realpath "$R")
check_10k "10k-base-114bc7e" .gpu6/base 114bc7e 280 check-10k-3b-fp16-base check-10k-base
check_10k "10k-new-$ESMDIV_GIT_COMMIT" . "$ESMDIV_GIT_COMMIT" 280 check-10k-3b-fp16 check-10k
