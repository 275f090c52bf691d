"""`esmdiv selftest`: every known packed-path bug is caught with margin in the default and the full
configuration, and the clean runs are ACCEPT."""

import json
import math

import pytest
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.forward.faults import Fault
from esmdiv.measure.noise import REQUIRED_MARGIN
from esmdiv.selftest import CONFIGURATIONS, GateMargin, SelftestRow, passed, seed18_path, shown_gate

from conftest import FIXTURES


def row(bug="none", ok=True, verdict="ACCEPT", gates=()):
    return SelftestRow("default", bug, "d", verdict, [], "e", ok, list(gates))


def test_passed_needs_rows_and_every_row_ok():
    assert passed([]) is False
    assert passed([row()]) is True
    assert passed([row(), row("tanh-gelu", True, "VALIDATE")]) is True
    assert passed([row(), row("tanh-gelu", False, "ACCEPT")]) is False
    assert passed([row(ok=False, verdict="VALIDATE"), row("tanh-gelu", True, "VALIDATE")]) is False


def test_the_shown_gate_is_a_catching_one_with_the_largest_margin():
    weak = GateMargin("invariance", 2e-6, 0.0, 1.2e-6, 1.7)
    strong = GateMargin("position", 1.6e-5, 3.5e-6, 0.0, 45.9)
    stronger_but_uncaught = GateMargin("max MAD", 1.0, 0.01, 0.9, 1.1)
    assert shown_gate(row("global-positions", gates=[weak, strong, stronger_but_uncaught])) is strong
    assert shown_gate(row("global-positions", gates=[weak])) is weak  # nothing caught: the best failure
    assert shown_gate(row("global-positions", gates=[])) is None and shown_gate(row()) is None
    assert strong.with_margin and not weak.with_margin and not GateMargin("x", 1, 1, 1, None).with_margin


def test_the_packaged_fixture_is_the_shipped_one():
    assert seed18_path().read_bytes() == (FIXTURES / "seed18.fasta").read_bytes()


def test_the_default_configuration_is_what_check_runs_by_default():
    assert CONFIGURATIONS["default"] == {} and CONFIGURATIONS["full"] == {"evidence": "all", "trace": True}


@pytest.mark.slow
def test_selftest_catches_every_known_bug_with_margin_on_cpu(tmp_path):
    out = tmp_path / "st.json"
    result = CliRunner().invoke(app, ["selftest", "--model", "random:8M", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout and "caught by (x clean run)" in result.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["settings"]["required_margin"] == REQUIRED_MARGIN
    assert data["settings"]["device"] == "cpu" and data["settings"]["dtype"] == "fp32"
    rows = {(r["configuration"], r["bug"]): r for r in data["rows"]}
    assert set(rows) == {(c, b) for c in CONFIGURATIONS for b in ["none", *(f.value for f in Fault)]}
    for config in CONFIGURATIONS:
        clean = rows[(config, "none")]
        assert clean["verdict"] == "ACCEPT" and clean["caught_by"] == [] and clean["ok"]
        clean_values = {g["gate"]: g["value"] for g in clean["gates"]}
        assert {"algorithm", "invariance", "position", "reference ratio"} <= set(clean_values)
        for fault in Fault:
            r = rows[(config, fault.value)]
            assert r["verdict"] != "ACCEPT" and r["ok"] and r["caught_by"], r
            assert r["description"] == fault.description
            for gate in r["gates"]:  # every failed gate carries the clean value of the same gate
                assert gate["clean_value"] == clean_values.get(gate["gate"]), gate
            caught = [g for g in r["gates"] if g["gate"] in r["caught_by"]]
            assert caught and all(g["margin"] is None or g["margin"] >= REQUIRED_MARGIN for g in caught), r
    # positions that run on across the pack: caught by the position probe, in the default configuration too
    assert "position" in rows[("default", "global-positions")]["caught_by"]
    margins = [g["margin"] for g in rows[("default", "global-positions")]["gates"] if g["gate"] == "position"]
    assert margins[0] is None or (math.isfinite(margins[0]) and margins[0] >= REQUIRED_MARGIN)
