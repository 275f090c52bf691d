"""Where an audit's seconds went (issue 14): stages that add up to the wall time, the compile
decision and why, and progress lines a CI log shows."""

import io
import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from esmdiv.audit.clock import STAGES, StageClock
from esmdiv.cli.app import app
from esmdiv.cli.console import PathProgress
from esmdiv.forward.device import COMPILE_MIN_TOKENS, COMPILE_MIN_TOKENS_WARM, decide_compile, note_compiled

from conftest import FIXTURES


def test_stage_laps_add_up_to_the_wall_time():
    clock = StageClock()
    clock.lap("input")
    sum(range(100_000))
    clock.lap("metrics")
    clock.split("metrics", {"padded": 0.0})
    out = clock.report(STAGES)
    assert out["wall_s"] == pytest.approx(sum(out["stages"].values()), abs=1e-12)
    assert list(out["stages"])[:3] == ["input_s", "padded_s", "metrics_s"]


def test_the_json_says_where_every_second_went(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["check", str(FIXTURES / "seed18.fasta"), "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    t = json.loads(out.read_text())["timings"]
    stages = t["stages"]
    for stage in (
        "startup",
        "options",
        "input",
        "model_load",
        "compile",
        "padded",
        "packed",
        "mlm",
        "metrics",
        "reference",
        "evidence",
        "decision",
        "fingerprint",
        "report",
    ):
        assert stages[f"{stage}_s"] >= 0, stage
    # the parts add up to the wall time, and each forward is the one the report quotes
    assert sum(stages.values()) == pytest.approx(t["wall_s"], rel=1e-9)
    assert stages["padded_s"] == t["padded_s"] and stages["packed_s"] == t["packed_s"]
    assert stages["reference_s"] == t["reference_s"] > 0
    assert stages["startup_s"] > 0 and stages["evidence_s"] > 0
    report = json.loads(out.read_text())
    assert report["compiled"] is False and report["compile_reason"] == "not on CUDA with Triton"
    assert "packed path not compiled: not on CUDA with Triton" in result.stdout


def test_the_compile_decision_follows_the_workload(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cuda = torch.device("cuda")
    monkeypatch.setattr("esmdiv.forward.device.default_compile", lambda device: device.type == "cuda")
    assert decide_compile(True, torch.device("cpu"), 10, "k") == (True, "asked for (--compile)")
    assert decide_compile(False, cuda, 10**9, "k") == (False, "asked for (--no-compile)")
    assert decide_compile(None, torch.device("cpu"), 10**9, "k") == (False, "not on CUDA with Triton")
    small, reason = decide_compile(None, cuda, 2_807_488, "k")
    assert not small and "2,807,488 tokens" in reason and "cold compile cache" in reason
    big, reason = decide_compile(None, cuda, COMPILE_MIN_TOKENS, "k")
    assert big and "pays for itself" in reason
    # once this machine has compiled the same model, a warm cache lowers the bar
    assert not decide_compile(None, cuda, COMPILE_MIN_TOKENS_WARM, "k")[0]
    note_compiled("k")
    warm, reason = decide_compile(None, cuda, COMPILE_MIN_TOKENS_WARM, "k")
    assert warm and "warm compile cache" in reason
    assert not decide_compile(None, cuda, COMPILE_MIN_TOKENS_WARM, "other model")[0]


def test_progress_lines_when_stderr_is_not_a_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    ticks = iter([0.0, 1.0, 6.0, 6.5, 12.0])
    with PathProgress(console, every=5, clock=lambda: next(ticks)) as progress:
        progress.start(1000)  # t=0
        progress.advance("padded", 100, 1.0)  # t=1: too soon
        progress.advance("packed", 100, 0.5)  # t=6: a line
        progress.advance("padded", 100, 1.0)  # t=6.5: too soon
        progress.advance("packed", 100, 0.5)  # t=12: a line
        progress.stage("evidence pass")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == (
        "esmdiv: main pass 100 of 1,000 tokens (10%), padded 100 tokens/s, packed 200 tokens/s, about 14 s left"
    )
    assert lines[1].startswith("esmdiv: main pass 200 of 1,000 tokens (20%)")
    assert lines[2] == "esmdiv: evidence pass" and len(lines) == 3
    silent = io.StringIO()
    with PathProgress(Console(file=silent, force_terminal=False), every=0) as progress:
        progress.start(10)
        progress.advance("padded", 10, 1.0)
        progress.stage("evidence pass")
    assert silent.getvalue() == ""
