"""`esmdiv selftest`: every known packed-path bug is caught, the clean run is ACCEPT."""

import json

import pytest
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.forward.faults import Fault
from esmdiv.selftest import SelftestRow, passed, seed18_path

from conftest import FIXTURES


def row(bug="none", ok=True, verdict="ACCEPT"):
    return SelftestRow(bug, "d", verdict, [], "e", ok)


def test_passed_needs_rows_and_every_row_ok():
    assert passed([]) is False
    assert passed([row()]) is True
    assert passed([row(), row("tanh-gelu", True, "VALIDATE")]) is True
    assert passed([row(), row("tanh-gelu", False, "ACCEPT")]) is False
    assert passed([row(ok=False, verdict="VALIDATE"), row("tanh-gelu", True, "VALIDATE")]) is False


def test_the_packaged_fixture_is_the_shipped_one():
    assert seed18_path().read_bytes() == (FIXTURES / "seed18.fasta").read_bytes()


@pytest.mark.slow
def test_selftest_catches_every_known_bug_on_cpu(tmp_path):
    out = tmp_path / "st.json"
    result = CliRunner().invoke(app, ["selftest", "--model", "random:8M", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True
    rows = {r["bug"]: r for r in data["rows"]}
    assert set(rows) == {"none"} | {f.value for f in Fault} and len(data["rows"]) == len(Fault) + 1
    assert rows["none"]["verdict"] == "ACCEPT" and rows["none"]["caught_by"] == [] and rows["none"]["ok"]
    for fault in Fault:
        r = rows[fault.value]
        assert r["verdict"] != "ACCEPT" and r["caught_by"] and r["ok"], r
        assert r["description"] == fault.description
    assert data["settings"]["device"] == "cpu" and data["settings"]["dtype"] == "fp32"
