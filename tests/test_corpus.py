"""Every case of the bad-input corpus (tests/corpus.py) through the CLI.

Each must end with its documented exit code (never 0), one line on stderr that holds the message
fragment and names the file (record and line where there is one), no traceback, no verdict, and a
partial ``--json`` report that says ``"complete": false`` and matches the report schema. A few
cases also run as a real process, where an escaping exception would print Python's own traceback.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.report.schemas import schema_problems

from conftest import ROOT
from corpus import CASES, HF_CONFIG, MARKER, Case, hf_folder

runner = CliRunner()
VERDICTS = ("ACCEPT", "VALIDATE", "FALLBACK")
# The cases whose model loaded before the options that concern it failed (a head it does not have).
LOADED_BEFORE_FAILING = {"head-model-without-head", "head-unknown"}


def _skip_unless_possible(case: Case) -> None:
    if "no-cuda" in case.needs and torch.cuda.is_available():
        pytest.skip("checks the no-CUDA error; CUDA is present")
    if "not-root" in case.needs and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    if "proc" in case.needs and not Path("/proc/self/mem").is_file():
        pytest.skip("needs Linux /proc")


def test_the_corpus_is_big_and_its_ids_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_one_line(case: Case, tmp_path, monkeypatch):
    _skip_unless_possible(case)
    inputs = tmp_path / "in"
    inputs.mkdir()
    if case.patch:
        case.patch(monkeypatch, inputs)
    args = case.build(inputs)
    report = tmp_path / "report.json"
    partial_expected = "--json" not in args  # the one case with its own --json tests that path
    if partial_expected:
        args += ["--json", str(report)]
    result = runner.invoke(app, ["check", *args, "--evidence", "off"])  # bad input: no evidence to gather

    # The CLI ended on purpose (an exception escaping it would be caught here by the runner).
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == case.code != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert case.fragment in lines[0]
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(v in result.stdout for v in VERDICTS)
    assert not (inputs / MARKER).exists()  # no checkpoint ran code
    if partial_expected:
        partial = json.loads(report.read_text())
        assert partial["complete"] is False and partial["verdict"] is None
        assert partial["error"]["exit_code"] == case.code
        assert case.fragment in partial["error"]["message"]
        assert schema_problems(partial) == []  # a partial report is a valid report: esmdiv report reads it
        # Where it stopped, and what it had found by then: bad input never reaches a model or an audit.
        assert partial["error"]["stage"] == case.stage
        assert (partial.get("device") == "cpu") == (case.stage != "options")  # resolved once options pass
        assert (partial["input"] is not None) == (case.stage != "options")
        if case.stage == "model":  # the whole file was read before any model loads
            assert partial["input"]["records"] == 18 and partial["input"]["path"].endswith("seed18.fasta")
        assert (partial["model"] is not None) == (case.id in LOADED_BEFORE_FAILING)
        assert partial["sequences_done"] == 0 and partial["sequences"] == []


def test_the_tiny_hf_folder_behind_the_checkpoint_cases_loads(tmp_path):
    """Control: the corpus's broken folders are broken copies of one that loads."""
    from esmdiv.model.loading import load_model

    loaded = load_model(hf_folder(tmp_path, "hf_ok", HF_CONFIG))
    assert (loaded.info.num_layers, loaded.info.embed_dim, loaded.info.attention_heads) == (2, 64, 4)


REAL_PROCESS = ["markup-in-record-id", "malicious-pickle"]


@pytest.mark.subprocess
@pytest.mark.parametrize("case", [c for c in CASES if c.id in REAL_PROCESS], ids=lambda c: c.id)
def test_bad_input_in_a_real_process(case: Case, tmp_path):
    """``python -m esmdiv``: what a pipeline sees, Python's own last-resort traceback included."""
    args = case.build(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "esmdiv", "check", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == case.code
    assert len(done.stderr.strip().splitlines()) == 1 and case.fragment in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / MARKER).exists()
