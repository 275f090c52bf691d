"""Is ``esmdiv check`` deterministic? Run the same command several times and compare the reports.

Each run is a fresh process (``python -m esmdiv check FASTA --json ...`` with the options given
after ``--``); the JSON reports are compared field by field with ``timings`` left out. Prints the
verdicts, the exit codes, how many numbers were compared and the largest difference between runs
(0 means bit-identical), and exits 1 if any run differs.

    python benchmarks/determinism.py fixtures/seed18.fasta --runs 3 -- --device cpu
    python benchmarks/determinism.py fixtures/seed18.fasta -- --model path/to/hf_folder --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IGNORED = {"timings"}  # wall-clock figures: different every run by nature
IGNORED_ENVIRONMENT = {"captured_at"}  # when the fingerprint was taken: a clock reading too


def comparable(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in IGNORED}
    if isinstance(out.get("environment"), dict):
        out["environment"] = {k: v for k, v in out["environment"].items() if k not in IGNORED_ENVIRONMENT}
    return out


def differences(a, b, path: str = "") -> tuple[int, float, list[str]]:
    """(numbers compared, largest absolute difference, paths whose non-numeric values differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = (0, 0.0, [] if a.keys() == b.keys() else [f"{path}: keys differ"])
        for key in a.keys() & b.keys():
            out = _add(out, differences(a[key], b[key], f"{path}.{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = (0, 0.0, [] if len(a) == len(b) else [f"{path}: lengths differ"])
        for i, (x, y) in enumerate(zip(a, b)):
            out = _add(out, differences(x, y, f"{path}[{i}]"))
        return out
    if _number(a) and _number(b):
        return 1, (0.0 if a == b or (math.isnan(a) and math.isnan(b)) else abs(a - b)), []
    return (1 if _number(a) or _number(b) else 0), 0.0, [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _add(x, y):
    return x[0] + y[0], max(x[1], y[1]), x[2] + y[2]


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fasta", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reports, codes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            done = subprocess.run(
                [sys.executable, "-m", "esmdiv", "check", str(args.fasta), *extra, "--json", str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
            codes.append(done.returncode)
            reports.append(json.loads(out.read_text()))
    numbers, largest, mismatched = 0, 0.0, []
    for other in reports[1:]:
        n, d, m = differences(comparable(reports[0]), comparable(other))
        numbers, largest, mismatched = n, max(largest, d), mismatched + m
    figures = {
        "command": f"esmdiv check {args.fasta} {' '.join(extra)} --json OUT",
        "runs": args.runs,
        "verdicts": [r["verdict"] for r in reports],
        "exit_codes": codes,
        "sequences": len(reports[0].get("sequences", [])),
        "numbers_compared_per_run": numbers,
        "largest_difference": largest,
        "non_numeric_differences": mismatched[:20],
        "identical": largest == 0.0 and not mismatched,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),  # None: torch's default (one per core)
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
