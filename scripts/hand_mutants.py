#!/usr/bin/env python
"""Mutants made by hand, one change at a time, that mutmut cannot make (docs/mutation-testing.md).

    python scripts/hand_mutants.py [NAME ...]        # all of them by default; --list to list

mutmut mutates function bodies only. The Hugging Face key map is data (module-level dicts), and
issue 18 named changes a reviewer made by hand; each is listed here with the tests that must kill
it. Every mutant is applied to a scratch copy (``.mutation/hand/``, ignored by git), its tests run
with ``pytest -x``, and the copy is restored. Exit 0 only if every mutant was killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation" / "hand"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


KEYMAP_TESTS = ("tests/test_hf_keymap.py",)
MUTANTS = [
    Mutant(
        "layer-norms-swapped",
        "esmdiv/model/loading.py",
        '"attention.LayerNorm": "self_attn_layer_norm",\n    "intermediate.dense": "fc1",\n'
        '    "output.dense": "fc2",\n    "LayerNorm": "final_layer_norm",',
        '"attention.LayerNorm": "final_layer_norm",\n    "intermediate.dense": "fc1",\n'
        '    "output.dense": "fc2",\n    "LayerNorm": "self_attn_layer_norm",',
        KEYMAP_TESTS,
    ),
    Mutant(
        "query-key-swapped",
        "esmdiv/model/loading.py",
        '"attention.self.query": "self_attn.q_proj",\n    "attention.self.key": "self_attn.k_proj",',
        '"attention.self.query": "self_attn.k_proj",\n    "attention.self.key": "self_attn.q_proj",',
        KEYMAP_TESTS,
    ),
    Mutant(
        "final-norm-weight-bias-swapped",
        "esmdiv/model/loading.py",
        '"encoder.emb_layer_norm_after.weight": "emb_layer_norm_after.weight",\n'
        '    "encoder.emb_layer_norm_after.bias": "emb_layer_norm_after.bias",',
        '"encoder.emb_layer_norm_after.weight": "emb_layer_norm_after.bias",\n'
        '    "encoder.emb_layer_norm_after.bias": "emb_layer_norm_after.weight",',
        KEYMAP_TESTS,
    ),
    Mutant(
        "lm-head-norm-weight-bias-swapped",
        "esmdiv/model/loading.py",
        '"lm_head.layer_norm.weight": "lm_head.layer_norm.weight",\n'
        '    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",',
        '"lm_head.layer_norm.weight": "lm_head.layer_norm.bias",\n'
        '    "lm_head.layer_norm.bias": "lm_head.layer_norm.weight",',
        KEYMAP_TESTS,
    ),
    Mutant(
        "legacy-gamma-beta-swapped",
        "esmdiv/model/loading.py",
        "'weight' if match.group(2) == 'gamma' else 'bias'",
        "'bias' if match.group(2) == 'gamma' else 'weight'",
        KEYMAP_TESTS,
    ),
    Mutant(
        "unknown-layer-key-accepted",
        "esmdiv/model/loading.py",
        "            if module not in _HF_LAYER_MAP:\n",
        "            if False:\n",
        KEYMAP_TESTS,
    ),
    Mutant(
        "vocab-size-unchecked",
        "esmdiv/model/loading.py",
        'if config.get("vocab_size", 33) != 33:',
        "if False:",
        KEYMAP_TESTS,
    ),
    Mutant(
        "emb-layer-norm-before-unchecked",
        "esmdiv/model/loading.py",
        ' or config.get("emb_layer_norm_before"):',
        ":",
        KEYMAP_TESTS,
    ),
    Mutant(
        "classifier-keys-unchecked",
        "esmdiv/model/loading.py",
        'if classifier and set(classifier) != {"dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"}:',
        "if False:",
        KEYMAP_TESTS,
    ),
    Mutant(
        "missing-weights-unchecked",
        "esmdiv/model/loading.py",
        "    if missing:\n",
        "    if False:\n",
        KEYMAP_TESTS,
    ),
    Mutant(
        "rank-failure-always-exit-1",
        "esmdiv/distributed.py",
        "self.exit_code = exit_code or EXIT_INTERNAL",
        "self.exit_code = EXIT_INTERNAL",
        ("tests/test_distributed.py::test_the_first_failed_rank_fails_the_run_with_its_code_and_stage",),
    ),
    Mutant(
        "failure-before-the-audit-not-sent",
        "esmdiv/audit/run.py",
        "    with failures_reach_root(world, partial):\n",
        "    with contextlib.nullcontext():\n",
        ("tests/test_distributed.py::test_a_failing_rank_fails_the_run_with_its_exit_code_and_rank_0s_partial_report",),
    ),
    Mutant(
        "temporary-file-left-behind",
        "esmdiv/report/files.py",
        "            Path(tmp).unlink(missing_ok=True)",
        "            pass",
        ("tests/test_failclosed.py",),
    ),
    Mutant(
        "failed-partial-write-ignored",
        "esmdiv/cli/app.py",
        "            raise UnwrittenPartialReport(err, failed, json_path) from err",
        "            raise err from None",
        ("tests/test_failclosed.py",),
    ),
    Mutant(
        "partial-stage-not-recorded",
        "esmdiv/audit/run.py",
        '        partial.stage = "model"\n',
        "",
        ("tests/test_corpus.py",),
    ),
]


def copy_tree() -> None:
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"]
    files = subprocess.run(listing, cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = Path(os.fsdecode(raw))
        if (ROOT / rel).is_file():
            (WORK / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, WORK / rel)


def try_mutant(mutant: Mutant) -> bool:
    """True if the mutant's tests fail (killed)."""
    target = WORK / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the text to change is not found once in {mutant.path}: update the mutant")
    source = original.replace(mutant.old, mutant.new)
    if mutant.new.startswith("    with contextlib.nullcontext"):
        source = "import contextlib\n" + source
    target.write_text(source)
    try:
        env = {**os.environ, "PYTHONPATH": str(WORK), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=WORK,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        target.write_text(original)
    return done.returncode != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}: {m.path}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    copy_tree()
    survived = []
    for mutant in chosen:
        killed = try_mutant(mutant)
        print(f"{'killed  ' if killed else 'SURVIVED'}  {mutant.name}", flush=True)
        if not killed:
            survived.append(mutant.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
