#!/usr/bin/env python
"""Mutation testing of one group of esmdiv's modules with mutmut (docs/mutation-testing.md).

    python scripts/mutation.py GROUP [--max-children N] [--survivors | --all]   # GROUP: see `--list`

A habit, not a CI gate: it takes minutes to an hour per group on two cores. Each run works in a
scratch copy (``.mutation/GROUP/``, ignored by git) so groups do not share mutmut's ``mutants/``
folder and the work tree stays clean. The copy's ``pyproject.toml`` gets ``[tool.mutmut]`` from
this repository's, plus the group's table under ``[tool.esmdiv.mutation.GROUP]``:

- ``only_mutate``: the files whose functions are mutated;
- ``tests``: the test files mutmut runs (its first pass records which test reaches which function;
  each mutant then runs only the tests that reach the function it changed, fastest first);
- ``mutants`` (optional): mutant-name globs, to mutate only some functions of a file.

mutmut tests again every mutant it is given by name, results or not, so with ``mutants`` globs a
run names only the mutants that have no result yet (a run stopped half-way goes on where it
stopped); ``--all`` names them all, ``--survivors`` the last run's survivors, and ``--only GLOB``
(repeatable) only the mutants without a result that match it (a function whose code changed).

At the end it prints every mutant that was not killed (``mutmut show NAME`` in the copy shows its
diff) and writes ``.mutation/GROUP/summary.json`` (counts by status, and the survivors' names).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def groups() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["esmdiv"]["mutation"]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(name: str, group: dict) -> Path:
    """A copy of the tracked and untracked-but-not-ignored files, with the group's mutmut settings."""
    work = ROOT / ".mutation" / name
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = Path(os.fsdecode(raw))
        source = ROOT / rel
        if not source.is_file():
            continue
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)  # unchanged files keep their times: mutmut reuses its results
    text = (ROOT / "pyproject.toml").read_text()
    settings = (
        f"only_mutate = {_toml_list(group['only_mutate'])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(group['tests'])}\n"
    )
    marker = "[tool.mutmut]\n"
    assert marker in text, "pyproject.toml has no [tool.mutmut] table"
    (work / "pyproject.toml").write_text(text.replace(marker, marker + settings, 1))
    return work


def _untested(work: Path, patterns: list[str]) -> list[str] | None:
    """The mutants matching ``patterns`` that mutmut has no result for (its ``.meta`` files in the
    copy's ``mutants/``); ``None`` before the first run has made them."""
    metas = list((work / "mutants").rglob("*.meta"))
    if not metas:
        return None
    untested = []
    for meta in metas:
        for key, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            if code is None and any(fnmatch(key, p) for p in patterns):
                untested.append(key)
    return sorted(untested)


def run(
    name: str,
    group: dict,
    max_children: int,
    survivors_only: bool = False,
    rerun_all: bool = False,
    only: list[str] | None = None,
) -> int:
    work = prepare(name, group)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy's mutants/, never the tree
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: the workers share the cores
    mutmut = [sys.executable, "-m", "mutmut"]
    names = group.get("mutants", [])
    if only:  # a subset of the group's mutants, those without a result
        names = [n for n in _untested(work, only) or [] if not names or any(fnmatch(n, p) for p in names)]
        if not names:
            print(f"{name}: no mutant without a result matches {' '.join(only)}")
            return 0
    elif names and not (rerun_all or survivors_only):  # mutmut retests every mutant named: only those without a result
        untested = _untested(work, names)
        names = untested if untested is not None else names
        if untested == []:
            print(f"{name}: every mutant has a result (--all tests them again)")
    if survivors_only:  # after new tests: record which tests reach what again, retest the survivors
        names = sorted(json.loads((work / "summary.json").read_text())["not_killed"])
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        if not names:
            print(f"{name}: no survivors to retest")
            return 0
    if names or not group.get("mutants"):
        done = subprocess.run([*mutmut, "run", "--max-children", str(max_children), *names], cwd=work, env=env)
    else:  # every mutant of the group has a result; mutmut without names would test every file's
        done = subprocess.CompletedProcess([], 0)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True)
    statuses = {}
    for line in listing.stdout.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if key:
            statuses[key] = status
    patterns = group.get("mutants")
    if patterns:
        statuses = {k: v for k, v in statuses.items() if any(fnmatch(k, p) for p in patterns)}
    counts = Counter(statuses.values())
    survivors = sorted(k for k, v in statuses.items() if v != "killed")
    summary = {"group": name, "counts": dict(counts), "not_killed": {k: statuses[k] for k in survivors}}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{name}: " + ", ".join(f"{n} {status}" for status, n in counts.most_common()))
    for key in survivors:
        print(f"  {statuses[key]:>10}  {key}")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", nargs="?", help="a table of [tool.esmdiv.mutation] in pyproject.toml")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--survivors", action="store_true", help="retest only the last run's survivors (after adding tests)"
    )
    parser.add_argument(
        "--all", action="store_true", help="test every mutant of the group again (default: those without a result)"
    )
    parser.add_argument(
        "--only", action="append", metavar="GLOB", help="only the mutants without a result that match (repeatable)"
    )
    args = parser.parse_args()
    known = groups()
    if args.list or args.group is None:
        for name, group in known.items():
            print(f"{name}: {', '.join(group['only_mutate'])}")
        return 0
    if args.group not in known:
        parser.error(f"unknown group {args.group!r} (one of {', '.join(known)})")
    return run(args.group, known[args.group], args.max_children, args.survivors, args.all, args.only)


if __name__ == "__main__":
    sys.exit(main())
