"""The fuller fingerprint (issue 17): the settings that change numerics (TF32, matmul precision,
determinism, cuDNN, threads and their environment variables), triton and the cuBLAS/cuDNN wheels,
and the esmdiv commit where no ``.git`` is beside it (``ESMDIV_GIT_COMMIT``, the build info a
wheel carries), said when unknown."""

import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

import esmdiv.report.fingerprint as fingerprint
from esmdiv.forward.device import resolve_device
from esmdiv.report.schemas import environment_report_schema, validation_errors

from conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def env_block(**kwargs):
    return fingerprint.environment(resolve_device("cpu"), torch.float32, **kwargs)


# --- numerics --------------------------------------------------------------------------------------


def test_numerics_follow_the_process_settings(monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        numerics = env_block()["numerics"]
    finally:
        torch.set_float32_matmul_precision(before)
    assert numerics["float32_matmul_precision"] == "high"
    assert numerics["env"] == {
        "NVIDIA_TF32_OVERRIDE": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }
    assert numerics["torch_threads"] == torch.get_num_threads()
    assert numerics["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    assert fingerprint.numerics()["float32_matmul_precision"] == before  # read now, not cached


def test_deterministic_algorithms_and_tf32_are_read():
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        assert fingerprint.numerics()["deterministic_algorithms"] is True
    finally:
        torch.use_deterministic_algorithms(was)
    state = fingerprint.numerics()
    assert state["deterministic_algorithms"] is was
    assert isinstance(state["matmul_allow_tf32"], bool) and isinstance(state["cudnn_allow_tf32"], bool)
    assert state["matmul_allow_tf32"] is bool(torch.backends.cuda.matmul.allow_tf32)


def test_triton_and_the_cublas_cudnn_wheels_are_listed(monkeypatch):
    class Dist:
        def __init__(self, name, version):
            self.metadata = {"Name": name}
            self.version = version

    fake = [Dist("nvidia-cublas-cu12", "12.8.4.1"), Dist("nvidia_cudnn_cu12", "9.10.2.21"), Dist("numpy", "2.0")]
    monkeypatch.setattr(fingerprint.importlib.metadata, "distributions", lambda: iter(fake))
    packages = fingerprint.package_versions()
    assert "triton" in packages and "transformers" in packages
    assert packages["nvidia-cublas-cu12"] == "12.8.4.1" and packages["nvidia-cudnn-cu12"] == "9.10.2.21"
    assert "numpy" in packages and "nvidia-numpy" not in packages


def test_the_environment_block_with_numerics_matches_the_schema():
    data = {"schema_version": 1, "environment": env_block()}
    assert not validation_errors(data, environment_report_schema())
    bad = json.loads(json.dumps(data))
    bad["environment"]["numerics"]["float32_matmul_precision"] = "fastest"
    assert validation_errors(bad, environment_report_schema())


def test_the_benchmark_environment_carries_numerics_and_the_commit_source():
    bench = fingerprint.bench_environment(resolve_device("cpu"))
    assert bench["numerics"]["torch_threads"] == torch.get_num_threads()
    assert "git_commit_from" in bench and "triton" in bench["packages"]


# --- the esmdiv commit -------------------------------------------------------------------------------


@pytest.fixture
def no_checkout(monkeypatch):
    """esmdiv as if copied without its .git (a GPU machine, an installed wheel)."""
    monkeypatch.setattr(fingerprint, "_git", lambda cwd, *args: None)
    monkeypatch.setattr(fingerprint, "_commit_from_pip", lambda: None)
    monkeypatch.delenv("ESMDIV_GIT_COMMIT", raising=False)
    monkeypatch.setitem(sys.modules, "esmdiv._build_info", None)  # import -> ImportError


def test_the_checkout_s_own_git_says_when_no_variable_is_set(monkeypatch):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    monkeypatch.delenv("ESMDIV_GIT_COMMIT", raising=False)
    source = fingerprint.esmdiv_source()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert source["commit_from"] == "git checkout" and source["git_commit"] == head.strip()
    assert source["commit_unknown_reason"] is None


def test_a_set_variable_overrides_a_checkout_s_git(monkeypatch):
    """A tree copied to a GPU machine arrived there with a .git of an older commit (run 5 recorded
    cc8bb90 for commit 7a41e4d): the variable, set by whoever copied the tree, wins."""
    stale = ("cc8bb90199d44487deb5a4c32ffc8029eec452fb", True, "git checkout")
    monkeypatch.setattr(fingerprint, "_commit_from_git", lambda root: stale)
    monkeypatch.setenv("ESMDIV_GIT_COMMIT", COMMIT)
    source = fingerprint.esmdiv_source()
    assert (source["git_commit"], source["git_dirty"], source["commit_from"]) == (COMMIT, None, "ESMDIV_GIT_COMMIT")
    monkeypatch.delenv("ESMDIV_GIT_COMMIT")
    assert fingerprint.esmdiv_source()["git_commit"] == stale[0]  # unset: the checkout's own


def test_without_git_the_environment_variable_says(no_checkout, monkeypatch):
    monkeypatch.setenv("ESMDIV_GIT_COMMIT", COMMIT.upper())
    source = fingerprint.esmdiv_source()
    assert (source["git_commit"], source["git_dirty"], source["commit_from"]) == (COMMIT, None, "ESMDIV_GIT_COMMIT")


def test_without_git_or_variable_the_build_info_says(no_checkout, monkeypatch):
    info = types.ModuleType("esmdiv._build_info")
    info.GIT_COMMIT, info.GIT_DIRTY = COMMIT, False
    monkeypatch.setitem(sys.modules, "esmdiv._build_info", info)
    source = fingerprint.esmdiv_source()
    assert (source["git_commit"], source["git_dirty"], source["commit_from"]) == (COMMIT, False, "build info")


def test_unknown_is_null_with_the_reason(no_checkout, monkeypatch):
    monkeypatch.setenv("ESMDIV_GIT_COMMIT", "main")  # a branch name is not a commit
    source = fingerprint.esmdiv_source()
    assert source["git_commit"] is None and source["commit_from"] is None
    assert "ESMDIV_GIT_COMMIT='main' is not a commit hash" in source["commit_unknown_reason"]
    assert "no git checkout" in source["commit_unknown_reason"]
    data = {"schema_version": 1, "environment": env_block()}
    assert not validation_errors(data, environment_report_schema())
    assert data["environment"]["esmdiv"]["git_commit"] is None


@pytest.mark.slow
def test_a_wheel_built_from_a_checkout_carries_its_commit(tmp_path):
    """setup.py writes esmdiv/_build_info.py into the wheel: the checkout's commit, or
    ESMDIV_GIT_COMMIT when set; the source tree itself never gets the file."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for name in tracked.stdout.splitlines():
        if (ROOT / name).is_file() and not name.startswith(("benchmarks/", "tests/", "docs/", "fixtures/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    def built_info(env_commit):
        out = tmp_path / f"wheel-{env_commit or 'git'}"
        env = {k: v for k, v in os.environ.items() if k != "ESMDIV_GIT_COMMIT"}
        if env_commit:
            env["ESMDIV_GIT_COMMIT"] = env_commit
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        (wheel,) = out.glob("esmdiv-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            return archive.read("esmdiv/_build_info.py").decode()

    text = built_info(None)
    assert f"GIT_COMMIT = {head!r}" in text and "GIT_DIRTY = False" in text
    assert f"GIT_COMMIT = {COMMIT!r}" in built_info(COMMIT)
    assert not (src / "esmdiv" / "_build_info.py").exists()
    namespace: dict = {}
    exec(text, namespace)  # the file is what the fingerprint imports: plain assignments
    assert namespace["GIT_COMMIT"] == head and Path(src / "setup.py").is_file()
