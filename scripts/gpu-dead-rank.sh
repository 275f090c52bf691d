#!/usr/bin/env bash
# A rank killed (SIGKILL) or hung mid-audit under torchrun with NCCL on two GPUs (issue 15): how
# long the job takes to end, every rank's exit code, and what rank 0's partial report says.
# Usage: bash scripts/gpu-dead-rank.sh OUT_DIR   (from the repo root, on a machine with 2 GPUs;
# PYTHONPATH must already reach fair-esm). Writes OUT_DIR/dead-rank-{kill,hang}.{json,log} and
# OUT_DIR/dead-rank.txt (the table).
set -u
R=${1:?OUT_DIR}; mkdir -p "$R"
HOOK=$(mktemp -d)
cat > "$HOOK/sitecustomize.py" <<'PY'
import os
if os.environ.get("RANK") == os.environ.get("FAIL_RANK"):
    import signal, time
    import esmdiv.audit.run
    real, calls = esmdiv.audit.run.compare_batch, []
    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(os.environ["FAIL_CALL"]):
            print(f"rank {os.environ['RANK']}: {os.environ['FAIL_WITH']} at batch {len(calls)}", flush=True)
            if os.environ["FAIL_WITH"] == "SIGKILL":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)  # HANG
        return real(*args, **kwargs)
    esmdiv.audit.run.compare_batch = broken
PY
FASTA=/tmp/lognormal-2k.fasta
[ -f $FASTA ] || python3 -m esmdiv bench --workload lognormal --n 2000 --seed 1 --write-fasta $FASTA > /dev/null
for how in kill hang; do
  with=$([ $how = kill ] && echo SIGKILL || echo HANG)
  start=$(date +%s.%N)
  FAIL_RANK=1 FAIL_WITH=$with FAIL_CALL=5 PYTHONPATH="$HOOK:$PYTHONPATH" \
    torchrun --standalone --nproc-per-node 2 -m esmdiv check $FASTA --model random:650M \
    --collective-timeout 60 --json "$R/dead-rank-$how.json" > "$R/dead-rank-$how.log" 2>&1
  code=$?
  end=$(date +%s.%N)
  echo "$how torchrun_exit=$code seconds=$(python3 -c "print(f'{$end-$start:.1f}')")" >> "$R/dead-rank.txt"
done
python3 - "$R" <<'PY' | tee -a "$R/dead-rank.txt"
import json, re, sys
from pathlib import Path
R = Path(sys.argv[1])
for how in ("kill", "hang"):
    log = (R / f"dead-rank-{how}.log").read_text(errors="replace")
    codes = dict(re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s+exitcode\s*:\s*(-?\d+)", log))
    try:
        rep = json.loads((R / f"dead-rank-{how}.json").read_text())
        err = rep.get("error") or {}
        what = f"complete={rep['complete']} verdict={rep['verdict']} stage={err.get('stage')} type={err.get('type')} exit={err.get('exit_code')} done={rep.get('sequences_done')}: {err.get('message')}"
    except (OSError, ValueError) as e:
        what = f"no report ({e})"
    print(f"{how}: rank codes {codes}; {what}")
PY
cat "$R/dead-rank.txt"
