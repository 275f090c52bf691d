"""torchrun audits: two CPU processes over gloo give the single-process report; a failing rank
fails the run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from esmdiv.distributed import shard_by_tokens

from conftest import FIXTURES, ROOT

SEED18 = str(FIXTURES / "seed18.fasta")
PER_SEQUENCE = (
    "cosine",
    "mad",
    "max_abs_diff",
    "rel_l2",
    "residue_cosine_min",
    "label_v1",
    "label_v2",
    "confidence_v1",
    "confidence_v2",
    "mlm",
    "invariance",
)


def test_shards_cover_everything_once_and_balance_tokens():
    lengths = {i: n for i, n in enumerate([400, 5, 300, 300, 20, 250, 100, 90, 12, 402])}
    shards = shard_by_tokens(lengths, 3)
    assert sorted(i for s in shards for i in s) == sorted(lengths)
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(lengths.values())
    assert shard_by_tokens(lengths, 3) == shards  # every rank computes the same split


def _torchrun(tmp_path, *args, extra_env=None):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "esmdiv",
        "check",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_two_processes_give_the_single_process_report(tmp_path):
    from typer.testing import CliRunner

    from esmdiv.cli.app import app

    args = [SEED18, "--device", "cpu", "--trace", "--invariance"]
    single = tmp_path / "single.json"
    assert CliRunner().invoke(app, ["check", *args, "--json", str(single)]).exit_code == 0
    double = tmp_path / "double.json"
    run = _torchrun(tmp_path, *args, "--json", str(double))
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert b["timings"]["ranks"] == 2 and "ranks" not in a["timings"]
    assert a["verdict"] == b["verdict"] == "ACCEPT"
    assert [s["id"] for s in a["sequences"]] == [s["id"] for s in b["sequences"]]
    for x, y in zip(a["sequences"], b["sequences"]):
        assert {k: x.get(k) for k in PER_SEQUENCE} == {k: y.get(k) for k in PER_SEQUENCE}, x["id"]
    for block in ("cosine", "mad", "prediction", "residue", "mlm", "bound"):
        assert a["summary"][block] == b["summary"][block], block
    assert a["invariance"] == b["invariance"]
    # The evidence pass's reference ratio is a mean over sequences summed in another order on two ranks:
    # equal to fp64 rounding, not bit for bit.
    assert [(r["gate"], r["passed"]) for r in a["reasons"]] == [(r["gate"], r["passed"]) for r in b["reasons"]]
    for ra, rb in zip(a["reasons"], b["reasons"]):
        assert ra["value"] == pytest.approx(rb["value"], rel=1e-9, abs=1e-15), ra["gate"]
    # Per-layer sums over all sequences: the same to fp64 rounding (summed in another grouping).
    assert a["trace"].keys() == b["trace"].keys()
    for la, lb in zip(a["trace"]["layers"], b["trace"]["layers"]):
        assert la.keys() == lb.keys()
        for key in la:
            assert la[key] == pytest.approx(lb[key], rel=1e-9, abs=1e-15), (la["layer"], key)


def test_a_failing_rank_fails_the_whole_run(tmp_path):
    # sitecustomize runs in every process at start-up: rank 1's audit breaks mid-run.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent("""
        import os
        if os.environ.get("RANK") == "1":
            import esmdiv.audit.run
            def broken(*args, **kwargs):
                raise RuntimeError("injected failure on rank 1")
            esmdiv.audit.run.compare_batch = broken
    """)
    )
    out = tmp_path / "r.json"
    env = {"PYTHONPATH": str(hook) + os.pathsep + str(ROOT)}
    run = _torchrun(tmp_path, SEED18, "--device", "cpu", "--json", str(out), extra_env=env)
    assert run.returncode != 0
    assert "rank 1 failed" in run.stderr and "injected failure on rank 1" in run.stderr
    assert "ACCEPT" not in run.stdout
    report = json.loads(out.read_text())
    assert report["complete"] is False and report.get("verdict") is None


FAKE_FLASH_ATTN = """
from esmdiv.forward.attention import exact_attention

__version__ = "2.8.3"


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    return exact_attention(q, k, v, cu_seqlens_q, max_seqlen_q, softmax_scale) + 0.3  # a wrong kernel
"""
KERNELS_ON_CPU = """
import esmdiv.forward.attention as attention
attention.device_problems = lambda backend, device, dtype: []
"""


def test_two_processes_audit_several_kernels_as_one_process_does(tmp_path, monkeypatch):
    """--backend reference,flash-attn under torchrun (a fake, wrong flash-attn that runs on the CPU):
    each kernel's per-sequence results gathered from both ranks, one verdict per kernel, the same
    report as one process."""
    from typer.testing import CliRunner

    import esmdiv.forward.attention as attention
    from esmdiv.cli.app import app

    site, hook = tmp_path / "site", tmp_path / "hook"
    (site / "flash_attn").mkdir(parents=True)
    hook.mkdir()
    (site / "flash_attn" / "__init__.py").write_text(FAKE_FLASH_ATTN)
    (hook / "sitecustomize.py").write_text(KERNELS_ON_CPU)
    records = [">" + r for r in (FIXTURES / "seed18.fasta").read_text().split(">") if r.strip()][:6]
    fasta = tmp_path / "six.fasta"
    fasta.write_text("".join(records))
    args = [str(fasta), "--device", "cpu", "--backend", "reference,flash-attn", "--trace", "--invariance"]

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(attention, "device_problems", lambda backend, device, dtype: [])
    attention.clear_backend_cache()
    try:
        single = tmp_path / "single.json"
        result = CliRunner().invoke(app, ["check", *args, "--json", str(single)])
    finally:
        sys.modules.pop("flash_attn", None)
        attention.clear_backend_cache()
    a = json.loads(single.read_text())
    assert result.exit_code == a["kernels"][1]["exit_code"] != 0, result.stderr

    double = tmp_path / "double.json"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(site), str(ROOT)])}
    run = _torchrun(tmp_path, *args, "--json", str(double), extra_env=env)
    b = json.loads(double.read_text())
    assert b["complete"] is True and b["timings"]["ranks"] == 2, run.stderr[-2000:]
    assert "rank 0 failed" not in run.stderr and "rank 1 failed" not in run.stderr
    assert a["verdict"] == b["verdict"] and a["worst_kernel"] == b["worst_kernel"] == "flash-attn"
    for ka, kb in zip(a["kernels"], b["kernels"]):
        assert (ka["backend"], ka["verdict"], ka["exit_code"]) == (kb["backend"], kb["verdict"], kb["exit_code"])
        assert [s["id"] for s in ka["sequences"]] == [s["id"] for s in kb["sequences"]]
        for x, y in zip(ka["sequences"], kb["sequences"]):
            assert {k: x.get(k) for k in PER_SEQUENCE} == {k: y.get(k) for k in PER_SEQUENCE}, (ka["backend"], x["id"])
        assert [(r["gate"], r["passed"]) for r in ka["reasons"]] == [(r["gate"], r["passed"]) for r in kb["reasons"]]
        assert ka["trace"]["layers"][-1]["rel_l2"] == pytest.approx(kb["trace"]["layers"][-1]["rel_l2"], rel=1e-9)
