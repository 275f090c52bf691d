"""Fails closed: faults at every stage, Ctrl-C, non-finite outputs and hostile checkpoints never end
in ACCEPT, and a run that did not finish leaves ``"complete": false`` where its report would be."""

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import esmdiv.audit.batch
import esmdiv.audit.run
import esmdiv.cli.console
import esmdiv.report.json_report
from esmdiv.cli.app import app
from esmdiv.forward.padded import ForwardOutput, padded_forward

from conftest import FIXTURES, ROOT
from corpus import MARKER, evil_checkpoint, evil_hf_folder

runner = CliRunner()
VERDICTS = ("ACCEPT", "VALIDATE", "FALLBACK")
# Six short sequences of distinct lengths; --max-tokens 64 splits them into three batches.
SMALL = "".join(f">s{n}\n{'MKTAYIAKVLGLFDIVKKVVGALGSLWW'[:n]}\n" for n in (8, 12, 16, 20, 24, 28))


def check(tmp_path, *args, fasta=None):
    path = tmp_path / "small.fasta"
    path.write_text(SMALL if fasta is None else fasta)
    evidence = [] if "--evidence" in args else ["--evidence", "off"]  # the evidence pass: test_evidence.py
    result = runner.invoke(app, ["check", str(path), "--device", "cpu", "--max-tokens", "64", *args, *evidence])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def fail_on_call(n, exc):
    """A compare_batch that works n - 1 times, then raises ``exc``."""
    real, calls = esmdiv.audit.batch.compare_batch, []

    def fake(run, sequences, tokens):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(run, sequences, tokens)

    return fake


def raising(exc):
    def fake(*args, **kwargs):
        raise exc

    return fake


# (where the fault is injected, the stage the partial report names, sequences finished by then)
STAGE_FAULTS = [
    ("esmdiv.audit.run.load_model", "model", 0),
    ("esmdiv.audit.run.warm_up", "audit", 0),
    ("second-batch", "audit", 2),
    ("esmdiv.audit.run.summarise", "decision", 6),
    ("esmdiv.audit.run.decide", "decision", 6),
    ("esmdiv.cli.console.render_summary", "report", 6),
]


@pytest.mark.parametrize("target, stage, done", STAGE_FAULTS, ids=[t for t, _, _ in STAGE_FAULTS])
def test_an_unexpected_fault_at_any_stage_is_exit_1_and_a_partial_report(target, stage, done, tmp_path, monkeypatch):
    if target == "second-batch":
        monkeypatch.setattr(esmdiv.audit.run, "compare_batch", fail_on_call(2, RuntimeError("kernel exploded")))
    else:
        module, name = target.rsplit(".", 1)
        monkeypatch.setattr(sys.modules[module], name, raising(RuntimeError("kernel exploded")))
    out = tmp_path / "r.json"
    result = check(tmp_path, "--json", str(out))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError: kernel exploded")
    assert "no verdict" in lines[0] and "Traceback" not in result.stderr
    assert not any(v in result.stdout for v in VERDICTS)
    report = json.loads(out.read_text())  # for "report", this replaced the complete report written first
    assert (report["complete"], report["verdict"]) == (False, None)
    assert report["error"] == {"stage": stage, "type": "RuntimeError", "message": "kernel exploded", "exit_code": 1}
    assert report["sequences_done"] == done == len(report["sequences"])
    assert "summary" not in report and "reasons" not in report


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(esmdiv.audit.run, "load_model", raising(RuntimeError("kernel exploded")))
    result = check(tmp_path, "--debug")
    assert result.exit_code == 1 and "Traceback" in result.stderr and "kernel exploded" in result.stderr


STALE = json.dumps({"complete": True, "verdict": "ACCEPT"})


def test_a_failed_write_of_the_report_is_not_a_verdict(tmp_path, monkeypatch):
    """The full report cannot be written: exit 1, no verdict, and the partial report (stage
    "report") replaces the ACCEPT an earlier run left at the path."""
    monkeypatch.setattr(esmdiv.report.json_report, "write_json", raising(RuntimeError("disk on fire")))
    out = tmp_path / "r.json"
    out.write_text(STALE)
    result = check(tmp_path, "--json", str(out))
    assert result.exit_code == 1 and not any(v in result.stdout for v in VERDICTS)
    assert result.stderr.strip().splitlines() == [
        "internal error: RuntimeError: disk on fire (no verdict; rerun with --debug for the traceback)"
    ]
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["error"]["stage"] == "report"
    assert report["sequences_done"] == 6


@pytest.mark.parametrize(
    "fasta, code, why",
    [(">a\nMK-T\n", 2, "illegal character"), (SMALL, 130, "interrupted")],
    ids=["bad-input", "interrupted"],
)
def test_a_failed_partial_write_is_an_error_and_leaves_no_stale_report(fasta, code, why, tmp_path, monkeypatch):
    import esmdiv.cli.app

    if code == 130:
        monkeypatch.setattr(esmdiv.audit.run, "compare_batch", fail_on_call(2, KeyboardInterrupt()))
    monkeypatch.setattr(esmdiv.cli.app, "write_partial", raising(OSError(28, "No space left on device")))
    out = tmp_path / "r.json"
    out.write_text(STALE)
    result = check(tmp_path, "--json", str(out), fasta=fasta)
    assert result.exit_code == code  # the run's own code: the report's failure does not hide it
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], result.stderr
    assert "the partial report could not be written either (OSError: [Errno 28] No space left on device)" in lines[0]
    assert lines[0].endswith(f"nothing is left at {out}")
    assert not out.exists() and "partial report written" not in result.stdout


def test_a_stale_report_that_cannot_be_removed_is_named_untrustworthy(tmp_path, monkeypatch):
    import esmdiv.cli.app

    monkeypatch.setattr(esmdiv.cli.app, "write_partial", raising(OSError(30, "Read-only file system")))
    monkeypatch.setattr(Path, "unlink", raising(PermissionError(13, "Permission denied")))
    out = tmp_path / "r.json"
    out.write_text(STALE)
    result = check(tmp_path, "--json", str(out), fasta=">a\nMK-T\n")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(f"{out} could not be removed (Permission denied): do not trust it")


def test_a_report_path_that_is_a_folder_is_left_alone(tmp_path):
    out = tmp_path / "r.json"
    out.mkdir()
    (out / "keep").write_text("x")
    result = check(tmp_path, "--json", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {out}: is a directory; --json needs a file path"]
    assert (out / "keep").read_text() == "x"


def test_a_report_that_cannot_be_moved_into_place_leaves_no_temporary_file(tmp_path, monkeypatch):
    from esmdiv.errors import OutputError
    from esmdiv.report.files import write_text

    monkeypatch.setattr(os, "replace", raising(OSError(28, "No space left on device")))
    with pytest.raises(OutputError, match=r"r.json: cannot write the report \(No space left on device\)"):
        write_text("{}", tmp_path / "r.json", "--json")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_exit_130_with_a_partial_report(tmp_path, monkeypatch):
    monkeypatch.setattr(esmdiv.audit.run, "compare_batch", fail_on_call(3, KeyboardInterrupt()))
    out = tmp_path / "r.json"
    result = check(tmp_path, "--json", str(out))
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == ["interrupted: no verdict"]
    assert not any(v in result.stdout for v in VERDICTS)
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["verdict"] is None
    assert report["error"]["type"] == "KeyboardInterrupt" and report["error"]["exit_code"] == 130
    assert report["error"]["message"] == "KeyboardInterrupt"  # an error with no words says what it is
    assert report["sequences_done"] == 4  # the two batches that finished, each sequence whole
    assert all(s["cosine"] > 0.9999 for s in report["sequences"])


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _seed18_check(out: Path) -> list[str]:
    """``python -m esmdiv check`` of seed18 on the CPU, its report to ``out``."""
    return [
        sys.executable,
        "-m",
        "esmdiv",
        "check",
        str(FIXTURES / "seed18.fasta"),
        "--device",
        "cpu",
        "--json",
        str(out),
    ]


_INTERRUPT_THROUGH_C = """
import ctypes
import esmdiv.audit.run as run_module

def interrupted(*args, **kwargs):
    # as C code that runs Python does (pybind11's exec): the KeyboardInterrupt passes through it
    run = ctypes.pythonapi.PyRun_String
    run.restype = ctypes.py_object
    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    run(b"raise KeyboardInterrupt", 257, {}, {})

run_module.load_model = interrupted
"""


@pytest.mark.subprocess
def test_an_interrupt_that_passed_through_c_code_still_ends_in_130_under_python_dash_m(tmp_path):
    """CPython remembers such an interrupt as unhandled, and ``python -m`` then ends the process by
    SIGINT (-2) at exit, after esmdiv handled it: what made the real-signal test below flaky."""
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_THROUGH_C)
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        _seed18_check(out),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted: no verdict"]
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["error"]["type"] == "KeyboardInterrupt"


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/<pid>/maps (Linux)")
@pytest.mark.parametrize(
    "sent, code, line, error_type",
    [
        (signal.SIGINT, 130, "interrupted: no verdict", "KeyboardInterrupt"),
        # torchrun stops the other ranks with SIGTERM when one exits: the same fail-closed ending
        (signal.SIGTERM, 143, "terminated (SIGTERM): no verdict", "Terminated"),
    ],
    ids=["sigint", "sigterm"],
)
def test_a_real_signal_mid_run_is_its_exit_code_and_a_partial_report(tmp_path, sent, code, line, error_type):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # One retry, from before the cause was found: about 1 run in 20 ended with the process killed by
    # SIGINT (returncode -2) after esmdiv had printed its one line and written its partial report
    # (CPython's flag, the test above; fixed in esmdiv/__main__.py). Both attempts check all below.
    for _attempt in range(2):
        child = subprocess.Popen(
            _seed18_check(out),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # a suite started in the background (`cmd &`, nohup) ignores SIGINT, and so would the
            # child: a process that starts with a signal ignored keeps ignoring it, as it should
            preexec_fn=lambda: signal.signal(sent, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        while not _torch_loaded(child.pid) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # into the model build or the run
        child.send_signal(sent)
        stdout, stderr = child.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith(line) and "ACCEPT" not in stdout, (child.returncode, stderr)
        report = json.loads(out.read_text())
        assert report["complete"] is False and report["error"]["exit_code"] == code
        assert report["error"]["type"] == error_type
        if child.returncode == code:
            break
    assert child.returncode == code, stderr


def test_a_stale_accept_at_the_json_path_is_replaced(tmp_path):
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"complete": True, "verdict": "ACCEPT"}))
    result = check(tmp_path, "--json", str(out), fasta=">a\nMK-T\n")
    assert result.exit_code == 2
    report = json.loads(out.read_text())
    assert report["verdict"] is None and report["complete"] is False and report["error"]["stage"] == "input"


def test_a_partial_report_carries_every_field_it_knows(tmp_path):
    """Bad input: the options as given, what was resolved before the input stage, the error, and no
    model or sequences yet; nothing else, and every name as documented."""
    import esmdiv

    out = tmp_path / "r.json"
    assert check(tmp_path, "--json", str(out), fasta=">a\nMK-T\n").exit_code == 2
    report = json.loads(out.read_text())
    assert sorted(report) == sorted(
        ["schema_version", "complete", "esmdiv_version", "verdict", "error", "options", "device", "dtype"]
        + ["backend", "max_tokens", "model", "input", "sequences_done", "sequences"]
    )
    assert report["esmdiv_version"] == esmdiv.__version__ and report["schema_version"] == 1
    assert report["options"]["fasta"] == str(tmp_path / "small.fasta") and report["options"]["max_tokens"] == 64
    resolved = (report["device"], report["dtype"], report["backend"], report["max_tokens"])
    assert resolved == ("cpu", "fp32", "reference", 64)
    error = report["error"]
    assert (error["stage"], error["type"], error["exit_code"]) == ("input", "FastaError", 2) and len(error) == 4
    assert error["message"].endswith(
        "record 'a', line 2: illegal character '-' at column 3 (a gap); allowed: "
        "ACDEFGHIKLMNPQRSTVWYXBUZO (and a trailing '*')"
    )
    assert (report["model"], report["sequences_done"], report["sequences"]) == (None, 0, [])


def test_a_partial_report_is_written_as_a_full_one_is(tmp_path):
    """Same writer, so the same file mode under any umask (and no temporary file left behind)."""
    old = os.umask(0o027)
    try:
        full, partial = tmp_path / "full.json", tmp_path / "partial.json"
        assert check(tmp_path, "--json", str(full)).exit_code == 0
        assert check(tmp_path, "--json", str(partial), fasta=">a\nMK-T\n").exit_code == 2
    finally:
        os.umask(old)
    assert json.loads(partial.read_text())["complete"] is False and json.loads(full.read_text())["complete"] is True
    assert partial.stat().st_mode & 0o777 == full.stat().st_mode & 0o777 == 0o640
    assert partial.read_text().endswith("}\n") and full.read_text().endswith("}\n")
    assert not list(tmp_path.glob(".*.tmp"))


# --- non-finite outputs --------------------------------------------------------------------------------


def poison_padded(row_value, rows=(0,)):
    """padded_forward whose batches (not the 1-sequence warm-up) carry ``row_value`` in given rows."""

    def fake(model, tokens, *args, **kwargs):
        out = padded_forward(model, tokens, *args, **kwargs)
        last = model.num_layers
        x = out.representations[last].clone()
        if x.shape[0] > 1:
            for row in rows:
                x[row, 2] = row_value
        return ForwardOutput({last: x}, out.logits)

    return fake


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_reference_output_is_fallback_naming_the_sequence(value, tmp_path, monkeypatch):
    monkeypatch.setattr(esmdiv.audit.batch, "padded_forward", poison_padded(value))
    out = tmp_path / "r.json"
    result = check(tmp_path, "--json", str(out), "--max-tokens", "4096")  # one batch, longest (s28) first
    assert result.exit_code == 20 and "FALLBACK" in result.stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "FALLBACK" and report["complete"] is True
    assert report["summary"]["nonfinite"] == ["s28: v1 (padded) output not finite"]
    assert next(s for s in report["sequences"] if s["id"] == "s28")["cosine"] is None  # JSON null, not NaN


def test_nan_in_a_bos_row_is_caught(tmp_path, monkeypatch):
    """A row outside the residues (BOS) still reaches pooling and <cls> heads: never ACCEPT."""

    def fake(model, tokens, *args, **kwargs):
        out = padded_forward(model, tokens, *args, **kwargs)
        x = out.representations[model.num_layers].clone()
        if x.shape[0] > 1:
            x[0, 0] = float("nan")
        return ForwardOutput({model.num_layers: x}, out.logits)

    monkeypatch.setattr(esmdiv.audit.batch, "padded_forward", fake)
    out = tmp_path / "r.json"
    result = check(tmp_path, "--json", str(out), "--max-tokens", "4096")
    assert result.exit_code == 20
    assert json.loads(out.read_text())["summary"]["nonfinite"][0] == "s28: v1 (padded) output not finite"


def test_nan_everywhere_is_fallback_even_with_the_loosest_thresholds(tmp_path, monkeypatch):
    monkeypatch.setattr(esmdiv.audit.batch, "padded_forward", poison_padded(float("nan"), rows=range(6)))
    out = tmp_path / "r.json"
    result = check(
        tmp_path,
        "--max-tokens",
        "4096",
        "--accept-agreement",
        "0",
        "--validate-agreement",
        "0",
        "--min-cosine",
        "-1",
        "--max-mad",
        "1e308",
        "--json",
        str(out),
    )
    assert result.exit_code == 20 and json.loads(out.read_text())["verdict"] == "FALLBACK"


# --- checkpoints never run code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [evil_checkpoint, lambda tmp: evil_checkpoint(tmp, legacy=True), evil_hf_folder],
    ids=["zip", "legacy", "hf-folder"],
)
def test_a_malicious_checkpoint_is_exit_2_and_runs_nothing(build, tmp_path):
    spec = build(tmp_path)
    result = check(tmp_path, "--model", spec)
    assert result.exit_code == 2 and "refused" in result.stderr and "posix.system" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / MARKER).exists()


def test_the_malicious_checkpoint_is_real(tmp_path):
    """Control: unpickled the unsafe way, the same file does write the marker."""
    path = evil_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert (tmp_path / MARKER).exists()


def _calls(tree, module, attr):
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == attr
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == module
    ]


def test_every_torch_load_is_weights_only_and_nothing_else_unpickles():
    sources = {p: p.read_text() for p in (ROOT / "esmdiv").rglob("*.py")}
    loads = 0
    for path, text in sources.items():
        tree = ast.parse(text)
        for call in _calls(tree, "torch", "load"):
            loads += 1
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, path
        assert not _calls(tree, "pickle", "load") and not _calls(tree, "pickle", "loads"), path
        assert "esm.pretrained" not in text and "load_model_and_alphabet" not in text, path
    assert loads >= 2  # the zip and the legacy readers: the scan saw them


def test_a_safetensors_state_dict_loads_as_the_same_model(random_8m, tmp_path):
    from safetensors.torch import save_file

    from esmdiv.model.loading import load_model

    state = {
        k: v.contiguous()
        for k, v in random_8m.model.state_dict().items()
        if "inv_freq" not in k and k != "lm_head.weight"
    }  # lm_head.weight is tied to embed_tokens
    save_file(state, tmp_path / "esm2_8m.safetensors")
    loaded = load_model(str(tmp_path / "esm2_8m.safetensors"))
    assert loaded.info.source == "safetensors"
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in state.items())


def test_a_legacy_format_checkpoint_loads(random_8m, tmp_path):
    """torch < 1.6 files (no zip) are read by the weights-only unpickler too."""
    import argparse

    from esmdiv.model.loading import load_model

    state = {f"encoder.sentence_encoder.{k}": v for k, v in random_8m.model.state_dict().items() if "inv_freq" not in k}
    args = argparse.Namespace(encoder_attention_heads=20, token_dropout=True)
    torch.save({"model": state, "args": args}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    loaded = load_model(str(tmp_path / "old.pt"))
    assert torch.equal(loaded.model.embed_tokens.weight, random_8m.model.embed_tokens.weight)


def test_an_option_that_does_not_parse_is_exit_2_without_traceback(tmp_path):
    result = check(tmp_path, "--min-cosine", "abc")
    assert result.exit_code == 2 and "--min-cosine" in result.stderr and "Traceback" not in result.stderr


def test_cuda_oom_halves_down_to_single_sequences_and_the_report_says_so(tmp_path, monkeypatch):
    real = esmdiv.audit.batch.compare_batch

    def one_at_a_time(run, sequences, tokens):
        if len(sequences) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(run, sequences, tokens)

    monkeypatch.setattr(esmdiv.audit.run, "compare_batch", one_at_a_time)
    out = tmp_path / "r.json"
    result = check(tmp_path, "--json", str(out), "--max-tokens", "4096")
    report = json.loads(out.read_text())
    assert result.exit_code == 0 and report["complete"] is True and len(report["sequences"]) == 6
    halvings = [w for w in report["warnings"] if "token budget halved" in w]
    assert halvings and report["max_tokens"] < 4096
    assert halvings[-1].endswith(f"halved to {report['max_tokens']}")


# --- main(): the process's exit code ---------------------------------------------------------------


def _main_exit(monkeypatch, argv, app=None):
    import esmdiv.cli.app

    if app is not None:
        monkeypatch.setattr(esmdiv.cli.app, "app", app)
    monkeypatch.setattr(sys, "argv", ["esmdiv", *argv])
    with pytest.raises(SystemExit) as done:
        esmdiv.cli.app.main()
    return done.value.code


def test_main_exits_with_the_commands_code(monkeypatch, capsys):
    import esmdiv

    assert _main_exit(monkeypatch, ["--version"]) == 0
    assert capsys.readouterr().out == f"esmdiv {esmdiv.__version__}\n"
    assert _main_exit(monkeypatch, ["check", "--min-cosine", "abc", "x.fasta"]) == 2


@pytest.mark.parametrize(
    "raised, code, stderr",
    [
        (KeyboardInterrupt(), 130, "interrupted: no verdict\n"),
        (SystemExit("a message instead of a code"), 1, "a message instead of a code\n"),
        (SystemExit(None), 0, ""),
        (SystemExit(20), 20, ""),
    ],
    ids=["interrupt", "message", "none", "code"],
)
def test_main_turns_what_escapes_the_command_into_an_exit_code(raised, code, stderr, monkeypatch, capsys):
    assert _main_exit(monkeypatch, [], app=raising(raised)) == code
    assert capsys.readouterr().err == stderr


def test_main_ends_a_torchrun_rank_with_rank_0s_code(monkeypatch):
    import esmdiv.cli.app

    seen = []
    monkeypatch.setattr(esmdiv.cli.app, "finish", lambda code: seen.append(code) or 10)
    assert _main_exit(monkeypatch, [], app=lambda **kwargs: None) == 10 and seen == [0]


# --- the report writer and the failure lines, in process -------------------------------------------


def test_the_writer_sends_dash_to_standard_output_whole(tmp_path, monkeypatch, capsys):
    from esmdiv.report.files import write_text

    monkeypatch.chdir(tmp_path)
    write_text('{"a": "é"}\n', "-", "--json")
    write_text(b"<x/>\n", "-", "--junit")
    assert capsys.readouterr().out == '{"a": "é"}\n<x/>\n'
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_a_failed_write_to_standard_output_names_the_option(monkeypatch):
    from esmdiv.errors import OutputError
    from esmdiv.report.files import write_text

    class ClosedPipe:
        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        buffer = property(lambda self: self)

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(OutputError, match=r"^--junit -: cannot write the report to standard output \(Broken pipe\)$"):
        write_text(b"<x/>", "-", "--junit")
    with pytest.raises(OutputError, match=r"^--json -: cannot write the report to standard output \(Broken pipe\)$"):
        write_text("{}", "-", "--json")


def test_the_writer_makes_missing_folders_and_its_temporary_file_beside_the_report(tmp_path, monkeypatch):
    """Beside it: ``os.replace`` is atomic only within one file system, and a hidden ``.NAME.*.tmp``
    is what a reader skips."""
    from esmdiv.report.files import write_text

    moved, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: moved.append((Path(src), Path(dst))) or real(src, dst))
    path = tmp_path / "a" / "b" / "r.json"
    write_text("{}\n", path, "--json")
    [(src, dst)] = moved
    assert dst == path and src.parent == path.parent
    assert src.name.startswith(".r.json.") and src.name.endswith(".tmp")
    assert path.read_text() == "{}\n" and sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_the_writer_writes_text_as_utf8_and_bytes_as_they_are(tmp_path):
    from esmdiv.report.files import write_text

    write_text("é\n", tmp_path / "t.md", "--markdown")
    write_text(b"\xff\x00<x/>", tmp_path / "b.xml", "--junit")
    assert (tmp_path / "t.md").read_bytes() == "é\n".encode() and (tmp_path / "b.xml").read_bytes() == b"\xff\x00<x/>"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_report_is_readable_as_the_umask_allows(umask, mode, tmp_path):
    from esmdiv.report.files import write_text

    old = os.umask(umask)
    try:
        write_text("{}", tmp_path / "r.json", "--json")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode


def test_the_writer_refuses_a_folder_and_a_path_under_a_file(tmp_path):
    from esmdiv.errors import OutputError
    from esmdiv.report.files import write_text
    from esmdiv.report.partial import write_partial

    with pytest.raises(OutputError, match=rf"^{tmp_path}: is a directory; --html needs a file path$"):
        write_text("x", tmp_path, "--html")
    with pytest.raises(OutputError, match=r"is a directory; --json needs a file path$"):
        write_partial({"complete": False}, tmp_path)  # the partial report's writer names --json too
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"f/r.json: cannot write the report \("):
        write_text("x", tmp_path / "f" / "r.json", "--json")  # mkdir fails before any temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_report_path_is_checked_against_its_nearest_existing_folder(tmp_path, monkeypatch):
    """Before the run: the nearest folder that exists must be writable (the writer makes the rest);
    ``-`` is standard output, whatever the working folder allows."""
    from esmdiv.errors import OutputError
    from esmdiv.report.files import check_output_path

    writable = os.W_OK | os.X_OK  # only tmp_path may be written to and entered
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) == tmp_path and mode & writable == writable)
    check_output_path(tmp_path / "new" / "deeper" / "r.json", "--json")
    check_output_path(tmp_path / "r.json", "--json")
    monkeypatch.chdir(tmp_path / "..")
    check_output_path(Path("-"), "--json")
    (tmp_path / "locked").mkdir()
    with pytest.raises(OutputError, match=rf"^{tmp_path}/locked/r.json: cannot write the report there "):
        check_output_path(tmp_path / "locked" / "r.json", "--json")
    with pytest.raises(OutputError, match=r"is a directory; --json needs a file path"):
        check_output_path(tmp_path / "locked", "--json")


def test_the_one_line_of_an_error():
    from esmdiv.cli.app import _one_line

    assert _one_line(ValueError("first\n\n   second  \n")) == "first second"
    assert _one_line(ValueError("")) == "ValueError"


@pytest.mark.parametrize(
    "error, first",
    [
        (KeyboardInterrupt(), "interrupted"),
        (RuntimeError("disk\non fire"), "RuntimeError: disk on fire (internal error)"),
    ],
    ids=["interrupt", "internal"],
)
@pytest.mark.parametrize("stale", [True, False], ids=["stale", "absent"])
def test_the_line_of_a_partial_report_that_could_not_be_written(error, first, stale, tmp_path):
    from esmdiv.cli.app import UnwrittenPartialReport

    path = tmp_path / "r.json"
    if stale:
        path.write_text(STALE)
    err = UnwrittenPartialReport(error, OSError(28, "No space left on device"), path)
    assert str(err) == (
        f"{first}; no verdict; the partial report could not be written either "
        f"(OSError: [Errno 28] No space left on device); nothing is left at {path}"
    )
    assert not path.exists()
    to_stdout = UnwrittenPartialReport(error, OSError(32, "Broken pipe"), Path("-"))
    assert str(to_stdout).endswith("(BrokenPipeError: [Errno 32] Broken pipe)")  # standard output cannot be taken back


def test_the_line_names_a_stale_report_it_could_not_remove(tmp_path, monkeypatch):
    from esmdiv.cli.app import UnwrittenPartialReport
    from esmdiv.errors import InputError

    monkeypatch.setattr(Path, "unlink", raising(PermissionError(13, "Permission denied")))
    path = tmp_path / "r.json"
    err = UnwrittenPartialReport(InputError("x.fasta: bad"), OSError(30, "Read-only file system"), path)
    assert str(err) == (
        "x.fasta: bad; no verdict; the partial report could not be written either "
        f"(OSError: [Errno 30] Read-only file system); {path} could not be removed (Permission denied): "
        "do not trust it"
    )


def test_main_names_the_program_esmdiv_and_ends_a_terminated_run_with_its_code(monkeypatch, capsys):
    import esmdiv.cli.app
    from esmdiv.errors import Terminated

    monkeypatch.setattr(sys, "argv", ["/somewhere/__main__.py", "check"])  # as `python -m esmdiv` starts
    with pytest.raises(SystemExit) as done:
        esmdiv.cli.app.main()
    assert done.value.code == 2 and "(see esmdiv check --help)" in capsys.readouterr().err
    assert _main_exit(monkeypatch, [], app=raising(Terminated("terminated (SIGTERM): no verdict"))) == 143
    assert capsys.readouterr().err == "terminated (SIGTERM): no verdict\n"
