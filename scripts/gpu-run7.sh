#!/usr/bin/env bash
# H100 run 7: the metrics' per-row 99.9th percentile, the old per-sequence loop against the batched
# top-k, on the same tensors in one process; then the 10,000-sequence random:3B check with its
# stage timings. Usage (carry .gpu4, which holds the fair-esm wheel): bash scripts/gpu-run7.sh
set -u
OUT=${OUT:-out}; R=$OUT/r7; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu4/fair_esm-*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ESMDIV_GIT_COMMIT=${ESMDIV_GIT_COMMIT:-unknown}
python3 - <<'PY' | tee "$R/quantile-micro.txt"
import math, time, torch
from esmdiv.measure.metrics import _row_quantiles
def old(diff, mask):  # the loop the batched top-k replaced (commit aa0d232's compare_embeddings)
    out = []
    for j in range(diff.shape[0]):
        v = diff[j][mask[j]]
        k = max(1, math.ceil(0.999 * v.numel()))
        out.append(v.flatten().kthvalue(k).values)
    return torch.stack(out)
g = torch.Generator(device="cuda").manual_seed(0)
for B, L, D in ((60, 272, 2560), (16, 1024, 2560), (256, 64, 2560)):
    lengths = torch.randint(L // 4, L + 1, (B,), device="cuda", generator=g)
    mask = torch.arange(L, device="cuda")[None, :] < lengths[:, None]
    diff = torch.where(mask[..., None], torch.rand(B, L, D, device="cuda", generator=g) * 1e-3, 0.0)
    times = {}
    for name, fn in (("loop", lambda: old(diff, mask)), ("topk", lambda: _row_quantiles(diff, mask[..., None], mask.sum(1) * D, 0.999))):
        fn(); torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10): r = fn()
        torch.cuda.synchronize(); times[name] = (time.perf_counter() - t0) / 10
        times[name + "_result"] = r
    same = torch.equal(times["loop_result"], times["topk_result"])
    print(f"B={B} L={L} D={D}: loop {times['loop']*1e3:.2f} ms, topk {times['topk']*1e3:.2f} ms, x{times['loop']/times['topk']:.1f}, identical={same}")
print(torch.cuda.get_device_name(), torch.__version__)
PY
[ -f /tmp/lognormal-10k.fasta ] || python3 -m esmdiv bench --workload lognormal --n 10000 --seed 0 --write-fasta /tmp/lognormal-10k.fasta > /dev/null
t0=$(date +%s.%N)
timeout 300 python3 -m esmdiv check /tmp/lognormal-10k.fasta --model random:3B --json "$R/check-10k-3b-fp16.json" > "$R/check-10k-3b.log" 2>&1
echo "check exit $? shell wall $(python3 -c "import time; print(round(time.time()-$t0, 1))") s" | tee "$R/wall.txt"
python3 - "$R/check-10k-3b-fp16.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); t = d["timings"]
print(d["verdict"], d["backend"], "wall", round(t["wall_s"], 1), {k: round(v, 1) for k, v in t["stages"].items()})
print("forwards", round(t["padded_s"] + t["packed_s"], 1), "wall/forwards", round(t["wall_s"] / (t["padded_s"] + t["packed_s"]), 3))
PY
