#!/usr/bin/env bash
# Run 8 (4 GPUs of one host): the 10,000-sequence random:3B check on 1, 2 and 4 GPUs, one after
# the other on the same machine. Carry .gpu4 (the fair-esm wheel). Usage: bash scripts/gpu-run8.sh
set -u
OUT=${OUT:-out}; R=$OUT/r8; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu4/fair_esm-*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$R/gpus.txt"
for n in 1 2 4; do
  t0=$(date +%s.%N)
  if [ $n = 1 ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 170 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-${n}gpu.json" > "$R/${n}gpu.log" 2>&1
  else
    timeout $((60 + 100 / n)) torchrun --standalone --nproc-per-node $n -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-${n}gpu.json" > "$R/${n}gpu.log" 2>&1
  fi
  echo "gpus $n exit $? shell_wall $(python3 -c "import time; print(round(time.time()-$t0, 1))")" | tee -a "$R/walls.txt"
done
python3 - "$R" <<'PY'
import json, sys
for n in (1, 2, 4):
    try:
        d = json.load(open(f"{sys.argv[1]}/check-10k-3b-{n}gpu.json")); t = d["timings"]
    except (OSError, ValueError) as e:
        print(n, "no report", e); continue
    print(n, d.get("verdict"), "wall", round(t["wall_s"], 1), "padded", round(t["padded_s"], 1), "packed", round(t["packed_s"], 1), {k: round(v, 1) for k, v in t["stages"].items() if v >= 0.5})
PY
