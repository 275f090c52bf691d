#!/usr/bin/env bash
# FlashAttention-4 beside torch's varlen_attn on one GPU (issue 13): env, a full-evidence check of
# both kernels in one run, the self-test with FA4, and the benchmark of both kernels on the same
# batches. Run from the repo root on the GPU machine once the wheels are installed:
#
#   pip install --target /tmp/site flash-attn-4 nvidia-cutlass-dsl ...   # (the lead's wheels)
#   scripts/gpu-fa4.sh OUT_DIR
#
# pip --target does not read the CUTLASS DSL's .pth file, so $FA4_SITE (default /tmp/site) and its
# nvidia_cutlass_dsl/dsl_packages go on PYTHONPATH here. Every command writes --json into OUT_DIR;
# commands.txt records each command line, exit code and seconds; a short table ends the output.
# The first call of each kernel shape compiles (FA4's CuTe DSL, torch.compile): check and bench
# warm up before timing, and the reports say so.
set -u
OUT=${1:?usage: scripts/gpu-fa4.sh OUT_DIR}
mkdir -p "$OUT"
SITE=${FA4_SITE:-/tmp/site}
export PYTHONPATH=$PWD:$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
: >"$OUT/commands.txt"

step() { # name, esmdiv arguments...
  local name=$1 start=$SECONDS code
  shift
  echo "== $(date +%T) $name: esmdiv $*"
  python3 -m esmdiv "$@" >"$OUT/$name.log" 2>&1
  code=$?
  printf 'esmdiv %s\n  exit %s, %s s\n' "$*" "$code" "$((SECONDS - start))" >>"$OUT/commands.txt"
  echo "   exit $code ($((SECONDS - start)) s)"
}

step env env --json "$OUT/env.json"
step check-3b check fixtures/seed18.fasta --model random:3B --backend torch,fa4 --evidence all \
  --json "$OUT/check-3b-torch-fa4.json" --junit "$OUT/check-3b-torch-fa4.xml"
step selftest-650m selftest --model random:650M --backend fa4 --json "$OUT/selftest-650m-fa4.json"
step bench-3b bench --model random:3B --backend torch,fa4 --workload lognormal --n 256 --seed 0 --repeats 3 \
  --paths padded,packed --json "$OUT/bench-3b-torch-fa4.json"

python3 - "$OUT" <<'PY'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])


def read(name):
    path = out / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


env = read("env.json")
if env:
    for name, b in env["environment"]["attention_backends"]["backends"].items():
        p = b.get("provenance") or {}
        state = "available" if b["available"] else f"unavailable: {b['why_not']}"
        what = f"{p['package']} {p['version']}" if p else "-"
        print(f"backend {name:10} {what}: {state}")
check = read("check-3b-torch-fa4.json")
if check:
    print(f"\ncheck random:3B seed18 --evidence all: {check.get('verdict')} (backend {check.get('backend')})")
    print(f"{'kernel':10} {'verdict':8} {'agree':>7} {'cos min':>11} {'MAD max':>9} {'max|d|':>9} {'ref ratio':>9} {'tok/s':>9}  built for")
    for k in check.get("kernels") or []:
        s, p = k["summary"], k["provenance"]
        ratio = (s.get("reference") or {}).get("ratio")
        print(
            f"{k['backend']:10} {k['verdict']:8} {s['prediction']['agreement']:7.2%} {s['cosine']['min']:11.8f} "
            f"{s['mad']['max']:9.2e} {s['max_abs_diff']:9.2e} {'-' if ratio is None else format(ratio, '.3g'):>9} "
            f"{k['timings']['packed_tokens_per_s'] or 0:9,.0f}  {p.get('version')} {p.get('built_for')}"
        )
selftest = read("selftest-650m-fa4.json")
if selftest:
    rows = selftest["rows"]
    print(f"\nselftest random:650M fa4: {'PASSED' if selftest['passed'] else 'FAILED'}, "
          f"{sum(r['ok'] for r in rows)}/{len(rows)} rows ok, backend {selftest['settings']['backend']}")
bench = read("bench-3b-torch-fa4.json")
if bench:
    w = bench["workload"]
    print(f"\nbench random:3B {w['description']} ({w['tokens']:,} tokens), median of {bench['timing']['repeats']}:")
    for name, p in bench["paths"].items():
        if p["status"] != "ok":
            print(f"{name:20} {p['status']}: {p['note']}")
            continue
        speedup = bench["speedups"].get(f"{name}_over_padded")
        diff = "" if p["check"] is None else f"max|d| vs padded {p['check']['max_abs_diff']:.2e}"
        print(
            f"{name:20} {p['median_s']:7.3f} s {p['tokens_per_s']:11,.0f} tok/s "
            f"{'' if speedup is None else f'{speedup:5.2f}x padded':14} {diff}"
        )
PY
