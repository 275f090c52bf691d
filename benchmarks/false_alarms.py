"""False-alarm study: clean packed paths under every gate, over many models, inputs and settings.

A gate that turns rounding into a verdict is as serious a bug as one that misses a real fault. This
runs the audit with every optional gate on (``evidence all``, ``trace``, MLM where the model has an
LM head) and no fault injected, over a grid of models, seeds, inputs and settings, and records for
every gate its largest clean value beside its threshold: the head-room (threshold over value, in
the gate's "badness" sense, so larger is safer). Goal: zero verdicts other than ACCEPT.

Inputs (seeded, generated here): ``peptides`` (5 to 40 residues), ``proteins`` (the lognormal
workload: typical lengths), ``long`` (1,000 to 1,400 residues, run with ``--long full``).

    python benchmarks/false_alarms.py --device cpu --models random:8M,random:35M,PATH --seeds 0,1 \\
        --threads 1,2,default --rounding exact,by-shape --json OUT.json
    python benchmarks/false_alarms.py --device cuda --models random:650M,random:3B,PATH \\
        --dtypes fp16,bf16 --compile on,off --max-tokens 4096,16384,65536 --json OUT.json

``--rounding by-shape`` also runs every audit on an emulated machine whose GEMMs round by matrix
shape (tests/rounding.py), as an Intel Xeon with two threads does. Threads are set in-process with
``torch.set_num_threads``; ``default`` is torch's own choice (OMP_NUM_THREADS unset).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/rounding.py: the emulated machine

from esmdiv.audit.run import AuditConfig, run_audit  # noqa: E402
from esmdiv.measure.noise import badness  # noqa: E402
from esmdiv.model.loading import load_model  # noqa: E402
from esmdiv.report.fingerprint import environment  # noqa: E402

from rounding import shape_dependent_rounding  # noqa: E402

SCHEMA = "esmdiv-false-alarms/1"
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def write_inputs(folder: Path, peptides: int, proteins: int, long: int, seed: int = 7) -> dict[str, Path]:
    """The three seeded inputs as FASTA files in ``folder``."""
    from esmdiv.input.workloads import lognormal_workload, write_fasta

    rng = random.Random(seed)
    sets = {
        "peptides": [
            (f"pep{i}", "".join(rng.choice(AMINO) for _ in range(rng.randint(5, 40)))) for i in range(peptides)
        ],
        "proteins": [(s.id, s.sequence) for s in lognormal_workload(proteins, seed)],
        "long": [(f"long{i}", "".join(rng.choice(AMINO) for _ in range(rng.randint(1000, 1400)))) for i in range(long)],
    }
    paths = {}
    for name, records in sets.items():
        if records:
            paths[name] = folder / f"{name}.fasta"
            write_fasta(records, paths[name])
    return paths


def run_one(loaded, fasta: Path, input_name: str, **options) -> dict:
    long_policy = "full" if input_name == "long" else "truncate"
    config = AuditConfig(
        fasta,
        model=loaded.info.spec,
        long_policy=long_policy,
        evidence="all",
        trace=True,
        mlm=None,
        **options,
    )
    start = time.perf_counter()
    result = run_audit(config, loaded=loaded)
    seconds = time.perf_counter() - start
    gates = []
    for r in result.decision.reasons:
        bad, limit = badness(r.gate, r.value), badness(r.gate, r.threshold) if r.threshold is not None else math.inf
        headroom = limit / bad if bad > 0 else math.inf
        gates.append(
            {"gate": r.gate, "passed": r.passed, "value": r.value, "threshold": r.threshold, "headroom": headroom}
        )
    return {
        "verdict": result.decision.verdict.value,
        "sequences": len(result.sequences),
        "seconds": seconds,
        "gates": gates,
        "failed": [r.message for r in result.decision.reasons if not r.passed],
        "notes": result.decision.notes,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="random:8M")
    p.add_argument("--seeds", default="0", help="seeds of random: models (a checkpoint runs once)")
    p.add_argument("--dtypes", default=None, help="default: fp32 on CPU, fp16 on CUDA")
    p.add_argument("--threads", default="default", help="CPU: comma list of thread counts or 'default'")
    p.add_argument("--compile", default="off", help="on,off")
    p.add_argument("--max-tokens", default=None, help="comma list of token budgets (default: the device's)")
    p.add_argument("--rounding", default="exact", help="exact,by-shape")
    p.add_argument("--inputs", default="peptides,proteins,long")
    p.add_argument("--peptides", type=int, default=60)
    p.add_argument("--proteins", type=int, default=24)
    p.add_argument("--long", type=int, default=3)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()

    device = torch.device(args.device)
    dtypes = (args.dtypes or ("fp16" if device.type == "cuda" else "fp32")).split(",")
    threads = args.threads.split(",")
    default_threads = torch.get_num_threads()
    budgets = [int(x) for x in args.max_tokens.split(",")] if args.max_tokens else [None]
    compiles = [c == "on" for c in args.compile.split(",")]
    roundings = args.rounding.split(",")
    runs, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp), args.peptides, args.proteins, args.long)
        inputs = {k: v for k, v in inputs.items() if k in args.inputs.split(",")}
        for spec, dtype in itertools.product(args.models.split(","), dtypes):
            specs = [f"{spec}:{s}" for s in args.seeds.split(",")] if spec.startswith("random:") else [spec]
            for model_spec in specs:
                loaded = load_model(
                    model_spec, device, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
                )
                for thread, budget, comp, rounding, (name, fasta) in itertools.product(
                    threads, budgets, compiles, roundings, inputs.items()
                ):
                    torch.set_num_threads(default_threads if thread == "default" else int(thread))
                    emulate = shape_dependent_rounding() if rounding == "by-shape" else contextlib.nullcontext()
                    with emulate:
                        out = run_one(
                            loaded, fasta, name, device=args.device, dtype=dtype, max_tokens=budget, compile=comp
                        )
                    row = {
                        "model": model_spec,
                        "dtype": dtype,
                        "threads": thread,
                        "max_tokens": budget,
                        "compile": comp,
                        "rounding": rounding,
                        "input": name,
                        **out,
                    }
                    runs.append(row)
                    worst = min(row["gates"], key=lambda g: g["headroom"])
                    print(
                        f"{row['verdict']:8} {model_spec:24} {dtype} threads={thread} budget={budget} "
                        f"compile={comp} {rounding:8} {name:9} {out['seconds']:6.1f}s tightest {worst['gate']} "
                        f"x{worst['headroom']:.3g}",
                        flush=True,
                    )
                del loaded
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    torch.set_num_threads(default_threads)
    summary = gate_summary(runs)
    report = {
        "schema": SCHEMA,
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(device, torch.float32, None, None, None, None),
        "runs": runs,
        "not_accept": sum(r["verdict"] != "ACCEPT" for r in runs),
        "gates": summary,
        "seconds": time.perf_counter() - started,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, allow_nan=True, default=str) + "\n")
    print(f"\n{len(runs)} clean runs, {report['not_accept']} not ACCEPT")
    print(table(summary))
    return 0 if report["not_accept"] == 0 else 1


def gate_summary(runs: list[dict]) -> dict:
    """Per gate: how many runs, how many failed, and the largest load (the clean value over its
    threshold, both as "badness": larger is worse), with the run it came from. Head-room = 1/load."""
    summary: dict = {}
    for run in runs:
        for g in run["gates"]:
            s = summary.setdefault(g["gate"], {"runs": 0, "failed": 0, "load": -1.0, "at": None})
            s["runs"] += 1
            s["failed"] += not g["passed"]
            bad = badness(g["gate"], g["value"])
            limit = badness(g["gate"], g["threshold"]) if g["threshold"] is not None else math.inf
            load = bad / limit if limit > 0 else (0.0 if bad == 0 else math.inf)
            if load > s["load"]:
                s["load"], s["at"] = (
                    load,
                    {
                        "value": g["value"],
                        "threshold": g["threshold"],
                        **{
                            k: run.get(k)
                            for k in ("model", "input", "dtype", "threads", "rounding", "compile", "max_tokens")
                        },
                    },
                )
    for s in summary.values():
        s["headroom"] = 1 / s["load"] if s["load"] > 0 else math.inf
    return summary


def table(summary: dict) -> str:
    """The study's Markdown table: per gate, runs, failures, the largest clean value beside its threshold."""
    lines = [
        "| gate | runs | not passed | largest clean value / threshold | head-room | where |",
        "|---|---|---|---|---|---|",
    ]
    for gate, s in summary.items():
        at = s["at"] or {}
        where = ", ".join(
            str(at.get(k)) for k in ("model", "dtype", "input", "threads", "rounding") if at.get(k) is not None
        )
        value = "n/a" if at.get("value") is None else f"{at['value']:.3g}"
        threshold = "n/a" if at.get("threshold") is None else f"{at['threshold']:.3g}"
        lines.append(
            f"| {gate} | {s['runs']} | {s['failed']} | {value} / {threshold} | {s['headroom']:.3g} | {where} |"
        )
    return "\n".join(lines)


def summarize(paths: list[str]) -> int:
    """``python benchmarks/false_alarms.py --summarize A.json B.json ...``: one table over several studies."""
    runs = [run for path in paths for run in json.loads(Path(path).read_text())["runs"]]
    print(f"{len(runs)} clean runs, {sum(r['verdict'] != 'ACCEPT' for r in runs)} not ACCEPT")
    print(table(gate_summary(runs)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--summarize":
        sys.exit(summarize(sys.argv[2:]))
    sys.exit(main())
