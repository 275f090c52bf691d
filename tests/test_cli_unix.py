"""Unix conventions (issue 17): ``-`` reads FASTA from stdin and writes a report to stdout, bzip2
and xz input, ``ESMDIV_MODEL``/``ESMDIV_DEVICE``, option choices as enums (listed in ``--help``,
completed by the shell), and options that do not parse ending as one line."""

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import pytest
import torch
from typer.testing import CliRunner

from esmdiv.cli import choices
from esmdiv.cli.app import app
from esmdiv.report.fingerprint import sha256_file

from conftest import FIXTURES, ROOT

runner = CliRunner()
SEED18 = FIXTURES / "seed18.fasta"
SMALL = b">s1 first\nMKTAYIAKQRQISFVKSHFSRQ\n>s2\nGLFDIVKKVVGALGSL\n>s3\nMKVLAAGIVGLLLAGCSSHKE\n"


def invoke(*args, input=None, env=None):
    result = runner.invoke(app, [str(a) for a in args], input=input, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.fasta"
    path.write_bytes(SMALL)
    return path


@pytest.fixture
def spool_dir(tmp_path, monkeypatch):
    """Where stdin is spooled, so a test can see the temporary file go."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# --- FASTA from standard input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress", [None, gzip.compress, bz2.compress, lzma.compress], ids=["plain", "gz", "bz2", "xz"]
)
def test_fasta_from_stdin_is_audited_named_stdin_and_its_spool_removed(compress, tmp_path, spool_dir):
    data = SMALL if compress is None else compress(SMALL)
    out = tmp_path / "r.json"
    result = invoke("check", "-", "--device", "cpu", "--json", out, input=data)
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["input"]["path"] == "<stdin>" and report["input"]["records"] == 3
    assert [s["id"] for s in report["sequences"]] == ["s1", "s2", "s3"]
    fingerprint = report["environment"]["input"]
    assert fingerprint["path"] == "<stdin>" and fingerprint["bytes"] == len(data)
    (tmp_path / "same").write_bytes(data)
    assert fingerprint["sha256"] == sha256_file(tmp_path / "same")  # the bytes that came through the pipe
    assert list(spool_dir.iterdir()) == []


def test_bad_fasta_on_stdin_names_stdin_and_the_line(tmp_path, spool_dir):
    out = tmp_path / "r.json"
    result = invoke("check", "-", "--device", "cpu", "--json", out, input=b">a\nMKT\n>b\nMK9\n")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: <stdin>, record 'b', line 4: illegal character")
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["input"]["path"] == "<stdin>"
    assert list(spool_dir.iterdir()) == []


@pytest.mark.subprocess
def test_stdin_that_is_a_terminal_is_a_usage_error():
    """A real process whose stdin is a pseudo-terminal: ``-`` must not wait on a prompt."""
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "esmdiv", "check", "-", "--device", "cpu"],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: FASTA '-' reads standard input, which is a terminal: pipe the file in "
        "(cat proteins.fasta | esmdiv check -) or give its path"
    ]


def test_a_pipe_path_still_says_to_use_stdin(tmp_path):
    fifo = tmp_path / "p.fasta"
    os.mkfifo(fifo)
    result = invoke("check", fifo, "--device", "cpu")
    assert result.exit_code == 2 and "pipe it to standard input as '-'" in result.stderr


# --- reports to standard output --------------------------------------------------------------------


def test_json_to_stdout_is_the_only_thing_on_stdout(tmp_path, small):
    result = invoke("check", small, "--device", "cpu", "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # nothing but the report: it parses whole
    assert report["complete"] is True and report["verdict"] == "ACCEPT" and len(report["sequences"]) == 3
    assert "ACCEPT" in result.stderr and "report written to standard output" in result.stderr
    assert not (tmp_path / "-").exists() and not (ROOT / "-").exists()


def test_stdin_to_stdout_in_one_pipe():
    result = invoke("check", "-", "--device", "cpu", "--json", "-", input=SMALL)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input"]["path"] == "<stdin>" and report["input"]["records"] == 3


def test_a_failed_run_writes_its_partial_report_to_stdout():
    result = invoke("check", "-", "--device", "cpu", "--json", "-", input=b">a\nMK9\n")
    assert result.exit_code == 2
    partial = json.loads(result.stdout)
    assert partial["complete"] is False and partial["verdict"] is None and partial["error"]["exit_code"] == 2
    assert "partial report written to standard output" in result.stderr


def test_junit_to_stdout_and_only_one_report_there(tmp_path, small):
    result = invoke("check", small, "--device", "cpu", "--junit", "-", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    assert ET.fromstring(result.stdout.encode()).tag == "testsuites"
    result = invoke("check", small, "--device", "cpu", "--junit", "-", "--json", "-")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["complete"] is False  # --json -: the partial report, as for any failure
    assert "--json - and --junit -: only one report can go to standard output" in result.stderr


def test_report_reads_stdin_and_env_writes_stdout(tmp_path, small):
    out = tmp_path / "r.json"
    assert invoke("check", small, "--device", "cpu", "--json", out).exit_code == 0
    result = invoke("report", "-", "--junit", "-", input=out.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert ET.fromstring(result.stdout.encode()).get("failures") == "0"
    result = invoke("report", "-", "--markdown", "-", input=out.read_bytes())
    assert result.exit_code == 2 and "add --no-plots" in result.stderr
    result = invoke("report", "-", "--markdown", "-", "--no-plots", input=out.read_bytes())
    assert result.exit_code == 0 and "**Verdict: ACCEPT**" in result.stdout and "<stdin>" in result.stdout
    result = invoke("env", "--device", "cpu", "--json", "-")
    assert result.exit_code == 0 and json.loads(result.stdout)["environment"]["run"]["device"] == "cpu"


# --- environment variables ---------------------------------------------------------------------------


def test_esmdiv_model_and_device_come_from_the_environment(tmp_path, small):
    fasta = small
    out = tmp_path / "r.json"
    result = invoke("check", fasta, "--json", out, env={"ESMDIV_MODEL": "random:8M:7", "ESMDIV_DEVICE": "cpu"})
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model"]["spec"] == "random:8M:7" and report["device"] == "cpu"
    # the option wins over the variable
    result = invoke(
        "check",
        fasta,
        "--model",
        "random:8M:3",
        "--json",
        out,
        env={"ESMDIV_MODEL": "random:8M:7", "ESMDIV_DEVICE": "cpu"},
    )
    assert json.loads(out.read_text())["model"]["spec"] == "random:8M:3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_esmdiv_device_is_read(tmp_path):
    result = invoke("check", SEED18, env={"ESMDIV_DEVICE": "cuda"})
    assert result.exit_code == 3 and "CUDA is not available" in result.stderr


def test_help_names_the_variables():
    text = invoke("check", "--help").stdout
    assert "ESMDIV_MODEL" in text and "ESMDIV_DEVICE" in text


# --- choices ------------------------------------------------------------------------------------------


def test_each_enum_holds_exactly_the_values_the_library_takes():
    from esmdiv.audit.evidence import EVIDENCE_MODES
    from esmdiv.bench import WORKLOADS
    from esmdiv.forward.attention import BACKENDS, SELECTORS
    from esmdiv.forward.device import DTYPES
    from esmdiv.forward.high_precision import HIGH_PRECISION_CHOICES
    from esmdiv.input.sequences import LONG_POLICIES
    from esmdiv.measure.decision import GATE_MODES
    from esmdiv.model.heads import ACTIVATIONS

    def values(enum):
        return [member.value for member in enum]

    assert values(choices.Backend) == [*SELECTORS, *BACKENDS]  # --backend is a string of these words
    assert set(values(choices.Dtype)) == set(DTYPES)
    assert values(choices.LongPolicy) == list(LONG_POLICIES)
    assert values(choices.HeadActivation) == list(ACTIVATIONS)
    assert values(choices.Gate) == list(GATE_MODES)
    assert set(values(choices.Reference)) == set(HIGH_PRECISION_CHOICES)
    assert values(choices.Workload) == list(WORKLOADS)
    assert values(choices.Evidence) == list(EVIDENCE_MODES)


def test_help_lists_the_choices():
    text = " ".join(invoke("check", "--help", env={"COLUMNS": "200"}).stdout.split())
    for listed in (
        "auto|all|flash-attn|fa4|torch|reference[,...]",
        "fp16|bf16|fp32",
        "truncate|skip|error|full",
        "relu|gelu|tanh|sigmoid|none",
        "point|bound",
        "fp32|none",
    ):
        assert listed in text, listed


@pytest.mark.subprocess
def test_the_shell_completes_the_choices():
    """What bash's completion function asks: the values of --backend after '--backend '."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ESMDIV_COMPLETE": "complete_bash", "COMP_CWORD": "4"}
    for words, expected in (
        ("esmdiv check x.fasta --backend ", ["auto", "all", "flash-attn", "fa4", "torch", "reference"]),
        ("esmdiv check x.fasta --backend torch,f", ["torch,flash-attn", "torch,fa4"]),
        ("esmdiv check x.fasta --long ", ["truncate", "skip", "error", "full"]),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "esmdiv"], env={**env, "COMP_WORDS": words}, capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout.split() == expected, done.stderr
    help_text = invoke("--help").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text


def test_a_value_outside_the_choices_is_one_line_and_leaves_a_partial_report(tmp_path):
    stale = tmp_path / "r.json"
    stale.write_text(json.dumps({"schema_version": 1, "complete": True, "verdict": "ACCEPT"}))
    result = invoke("check", SEED18, "--gate", "maybe", "--json", stale)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'maybe' is not one of 'point', 'bound'" in lines[0]
    partial = json.loads(stale.read_text())  # the earlier ACCEPT is gone
    assert partial["complete"] is False and partial["verdict"] is None and partial["error"]["exit_code"] == 2
    assert "--gate maybe" in partial["options"]["command_line"]


# --- what the environment lacks, and streams that cannot take the output --------------------------


def _python(code_or_args, env=None, **kwargs):
    """``python -c CODE`` (a str) or ``python -m esmdiv ARGS`` (a list) from the repo root."""
    argv = ["-c", code_or_args] if isinstance(code_or_args, str) else ["-m", "esmdiv", *map(str, code_or_args)]
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=environ, timeout=600, **kwargs
    )


@pytest.mark.subprocess
def test_a_package_missing_at_start_up_is_exit_3_and_one_line():
    """A Python without esmdiv's dependencies (the pre-stop checker ran one): not a traceback, exit 1."""
    code = (
        "import runpy, sys; sys.modules['typer'] = None; sys.argv = ['esmdiv', 'check', 'x.fasta']; "
        "runpy.run_module('esmdiv', run_name='__main__')"
    )
    done = _python(code)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: package 'typer' is missing or broken (ModuleNotFoundError")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_package_missing_during_a_run_is_exit_3_and_one_of_esmdivs_own_modules_exit_1(monkeypatch, small):
    import esmdiv.audit.run as run_module

    def fail(name):
        def load(*args, **kwargs):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)

        return load

    monkeypatch.setattr(run_module, "load_model", fail("scipy.special"))
    result = invoke("check", small, "--device", "cpu")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: package 'scipy' is missing or broken (ModuleNotFoundError")
    monkeypatch.setattr(run_module, "load_model", fail("esmdiv.model.gone"))
    result = invoke("check", small, "--device", "cpu")
    assert result.exit_code == 1 and result.stderr.startswith("internal error: ModuleNotFoundError")


@pytest.mark.subprocess
def test_a_closed_stdout_still_ends_in_the_verdicts_code():
    done = _python(["check", SEED18, "--device", "cpu"], preexec_fn=lambda: os.close(1))
    assert done.returncode == 0, done.stderr
    assert "ACCEPT" in done.stderr or done.stderr == ""


@pytest.mark.subprocess
def test_an_ascii_terminal_gets_question_marks_not_an_internal_error():
    done = _python(["check", SEED18, "--device", "cpu"], env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "ACCEPT" in done.stdout and "?" in done.stdout
    done.stdout.encode("ascii")  # every character it wrote is ASCII


def test_the_partial_report_of_a_missing_package_carries_exit_3(monkeypatch, small, tmp_path):
    import esmdiv.audit.run as run_module

    def load(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(run_module, "load_model", load)
    out = tmp_path / "r.json"
    result = invoke("check", small, "--device", "cpu", "--json", out)
    report = json.loads(out.read_text())
    assert result.exit_code == 3 and report["complete"] is False and report["error"]["exit_code"] == 3
