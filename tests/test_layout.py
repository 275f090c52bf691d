"""The package layout holds: typer and rich stay in ``esmdiv/cli/`` (the library returns data, the
CLI renders it), and the CLI starts without torch (so Ctrl-C while torch loads is handled)."""

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = ROOT / "esmdiv"
UI_PACKAGES = ("typer", "rich")


def _library_files():
    """Every module under esmdiv/ but the CLI package and ``__main__``."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "cli" and path.name != "__main__.py"
    ]


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, [node.module]


def test_the_library_is_every_stage_package():
    modules = {_module_name(p) for p in _library_files()}
    for expected in (
        "esmdiv.input.fasta",
        "esmdiv.model.loading",
        "esmdiv.forward.packed",
        "esmdiv.measure.decision",
        "esmdiv.report.junit",
        "esmdiv.audit.run",
        "esmdiv.bench",
        "esmdiv.selftest",
    ):
        assert expected in modules
    assert not any(m.startswith("esmdiv.cli") for m in modules)


def test_no_library_module_source_imports_typer_or_rich():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _library_files()
        for line, names in _imported_names(ast.parse(path.read_text(), str(path)))
        for name in names
        if name.split(".")[0] in UI_PACKAGES
    ]
    assert not offenders, "typer and rich belong in esmdiv/cli/ only:\n" + "\n".join(offenders)


_IMPORT_ALL = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    ui = sorted(m for m in sys.modules if m.split(".")[0] in ("typer", "rich"))
    if ui:
        print(json.dumps({"module": name, "loaded": ui[:5]}))
        break
else:
    print(json.dumps(None))
"""


def _fresh_python(script, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_importing_every_library_module_loads_neither_typer_nor_rich():
    """In a fresh interpreter, so nothing else has imported them first; names the first culprit."""
    modules = [_module_name(p) for p in _library_files()]
    assert _fresh_python(_IMPORT_ALL, *modules) is None


@pytest.mark.subprocess
def test_the_cli_starts_without_torch():
    script = "import json, sys, esmdiv.cli.app; print(json.dumps('torch' in sys.modules))"
    assert _fresh_python(script) is False


@pytest.mark.subprocess
def test_a_whole_check_never_imports_scipy_stats():
    """scipy.stats adds a second and more to every check's start-up (issue 14); the agreement bound
    and Pearson's r need only scipy.special and numpy."""
    script = (
        "import json, sys; from pathlib import Path; from esmdiv.audit.run import AuditConfig, run_audit; "
        "r = run_audit(AuditConfig(Path('fixtures/seed18.fasta'), device='cpu')); "
        "print(json.dumps([r.decision.verdict.name, r.summary['prediction']['pearson'] is not None, "
        "'scipy.stats' in sys.modules]))"
    )
    assert _fresh_python(script) == ["ACCEPT", True, False]


# Each stage may import the stages before it, never one after it (nor a peer of its own rank).
STAGE_RANK = {
    "esmdiv": 0,  # esmdiv/__init__.py: the version
    "errors": 0,
    "input": 1,
    "model": 1,
    "forward": 2,
    "measure": 3,
    "report": 4,
    "distributed": 5,
    "audit": 6,
    "bench": 6,
    "selftest": 7,
    "cli": 8,
    "__main__": 9,
}


def _stage(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_data_flows_one_way_between_the_stages():
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _stage(_module_name(path))
        for line, names in _imported_names(ast.parse(path.read_text(), str(path))):
            for name in names:
                if name.split(".")[0] != "esmdiv":
                    continue
                there = _stage(name)
                if there != here and STAGE_RANK[there] >= STAGE_RANK[here]:
                    backwards.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {name} ({there})")
    assert not backwards, "docs/architecture.md: a stage imports only the stages before it:\n" + "\n".join(backwards)
