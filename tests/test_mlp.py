"""fc1 and its erf GELU (esmdiv/forward/mlp.py, issue 14): which kernel the compiled packed path
picks, how quack's fused GEMM is called (a fake quack module records the call: quack runs on Hopper
GPUs only), that the tanh bug and the uncompiled path never reach quack, and what reports say."""

import json
import sys
import types
from xml.etree import ElementTree

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.forward import mlp
from esmdiv.forward.mlp import QUACK_TILE, UNCOMPILED_FC1, fc1_description, fc1_gelu, fc1_kernel
from esmdiv.forward.packed import _attention_out, packed_forward
from esmdiv.forward.packing import encode, pack

from conftest import FIXTURES

CUDA = torch.device("cuda")


class FakeQuack:
    """``quack.gemm_interface.gemm_act`` and ``quack.gemm_config.GemmConfig`` that record each call
    and compute what quack's kernel does, in fp64 so that only the wiring is compared."""

    def __init__(self):
        self.calls = []

    def gemm_act(self, A, B, C=None, bias=None, activation=None, store_preact=True, config=None, **rest):
        self.calls.append(
            dict(A=A, B=B, C=C, bias=bias, activation=activation, store_preact=store_preact, config=config, rest=rest)
        )
        assert activation == "gelu_erf"
        post = F.gelu(A.double() @ B.double() + bias.double()).to(A.dtype)
        return (None, post)

    @staticmethod
    def GemmConfig(**kwargs):  # noqa: N802 - quack's class name
        return types.SimpleNamespace(**kwargs)


@pytest.fixture
def quack(monkeypatch):
    """A fake quack installed, on a fake Hopper GPU (compute capability 9.0)."""
    fake = FakeQuack()
    interface = types.ModuleType("quack.gemm_interface")
    interface.gemm_act = fake.gemm_act
    config = types.ModuleType("quack.gemm_config")
    config.GemmConfig = fake.GemmConfig
    monkeypatch.setitem(sys.modules, "quack", types.ModuleType("quack"))
    monkeypatch.setitem(sys.modules, "quack.gemm_interface", interface)
    monkeypatch.setitem(sys.modules, "quack.gemm_config", config)
    # the device asked about, not the current one: 9.0 only when a device is named
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5) if device is None else (9, 0))
    monkeypatch.delenv("ESMDIV_FC1_KERNEL", raising=False)
    mlp._quack_import_problem.cache_clear()
    mlp._quack_call.cache_clear()
    yield fake
    mlp._quack_import_problem.cache_clear()
    mlp._quack_call.cache_clear()


def weights(c=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(5, c, generator=g, dtype=dtype)
    w1 = torch.randn(4 * c, c, generator=g, dtype=dtype)
    b1 = torch.randn(4 * c, generator=g, dtype=dtype)
    return h, w1, b1


def test_torch_fc1_is_linear_then_erf_gelu_and_tanh_only_for_the_bug():
    h, w1, b1 = weights()
    assert torch.equal(fc1_gelu(h, w1, b1, "torch"), F.gelu(F.linear(h, w1, b1)))
    tanh = fc1_gelu(h, w1, b1, "torch", approximate="tanh")
    assert torch.equal(tanh, F.gelu(F.linear(h, w1, b1), approximate="tanh"))
    assert not torch.equal(tanh, F.gelu(F.linear(h, w1, b1)))


def test_quack_is_called_with_the_transposed_weight_the_bias_erf_gelu_and_the_tile(quack):
    h, w1, b1 = weights()
    out = fc1_gelu(h, w1, b1, "quack")
    (call,) = quack.calls
    assert call["A"] is h and call["bias"] is b1 and call["C"] is None and call["rest"] == {}
    # B is fc1's weight (4C, C) seen as (C, 4C): the same memory, no copy
    assert call["B"].shape == (8, 32) and call["B"].data_ptr() == w1.data_ptr() and torch.equal(call["B"], w1.T)
    assert call["activation"] == "gelu_erf" and call["store_preact"] is False
    assert vars(call["config"]) == {**QUACK_TILE, "device_capacity": 9}
    torch.testing.assert_close(out, F.gelu(F.linear(h, w1, b1)), rtol=1e-5, atol=1e-5)


def test_a_quack_that_cannot_run_here_is_an_environment_error_on_its_first_call(quack, monkeypatch):
    h, w1, b1 = weights()
    failures = iter([TypeError("epilogue fn depends on <ContextVar name='_LOC_TRANSFORMS'>\n(fingerprint)")])
    real = quack.gemm_act

    def gemm_act(*args, **kwargs):
        failure = next(failures, None)
        if failure:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(sys.modules["quack.gemm_interface"], "gemm_act", gemm_act)
    message = (
        r"^fc1 kernel 'quack' failed on its first call: TypeError: epilogue fn depends on "
        r"<ContextVar name='_LOC_TRANSFORMS'> \(fingerprint\) \(ESMDIV_FC1_KERNEL=torch runs torch's\)$"
    )
    with pytest.raises(EnvironmentUnavailable, match=message):
        fc1_gelu(h, w1, b1, "quack")
    mlp._quack_call.cache_clear()  # a new process: the second call runs
    torch.testing.assert_close(fc1_gelu(h, w1, b1, "quack"), F.gelu(F.linear(h, w1, b1)), rtol=1e-5, atol=1e-5)


def test_the_tanh_bug_never_runs_through_quack(quack):
    h, w1, b1 = weights()
    out = fc1_gelu(h, w1, b1, "quack", approximate="tanh")
    assert quack.calls == [] and torch.equal(out, F.gelu(F.linear(h, w1, b1), approximate="tanh"))


def test_the_compiled_region_passes_fc1_through_its_kernel(quack):
    h, w1, b1 = weights(seed=1)
    c = h.shape[1]
    g = torch.Generator().manual_seed(2)
    o, w_o, b_o = torch.randn(5, c, generator=g), torch.randn(c, c, generator=g), torch.randn(c, generator=g)
    ln_w, ln_b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    w2, b2 = torch.randn(c, 4 * c, generator=g), torch.randn(c, generator=g)
    args = (h, o, w_o, b_o, ln_w, ln_b, 1e-5, w1, b1, w2, b2, "none")
    x_torch, mlp_torch = _attention_out(*args, "torch")
    assert quack.calls == []
    x_quack, mlp_quack = _attention_out(*args, "quack")
    assert len(quack.calls) == 1 and torch.equal(x_quack, x_torch)
    # quack is handed the layer-normed residual stream: the region's own layer norm
    x = h + F.linear(o, w_o, b_o)
    assert torch.equal(quack.calls[0]["A"], F.layer_norm(x, (c,), ln_w, ln_b, 1e-5))
    torch.testing.assert_close(mlp_quack, mlp_torch, rtol=1e-4, atol=1e-4)


def test_the_uncompiled_packed_path_never_calls_quack(quack, monkeypatch, random_8m):
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", "quack")
    tokens = [encode(s, random_8m.alphabet) for s in ("MKTAYIAKVL", "GLFDIVKKVVGALGSL")]
    packed_forward(random_8m.model, pack(tokens), "reference")
    assert quack.calls == []


def test_the_kernel_is_quack_where_it_runs_and_torch_with_the_reason_elsewhere(quack, monkeypatch):
    assert fc1_kernel(CUDA, torch.float16) == fc1_kernel(CUDA, torch.bfloat16) == "quack"
    epilogue = "one GEMM, bias and erf GELU in its epilogue"
    assert fc1_description(CUDA, torch.float16) == f"quack-kernels (version unknown): {epilogue}"  # the fake
    real = mlp.importlib.metadata.version

    def version(name):
        return "0.6.5" if name == "quack-kernels" else real(name)

    monkeypatch.setattr(mlp.importlib.metadata, "version", version)
    assert fc1_description(CUDA, torch.float16) == f"quack-kernels 0.6.5: {epilogue}"
    cases = [
        (torch.device("cpu"), torch.float16, "needs a CUDA device"),
        (CUDA, torch.float32, "takes fp16 or bf16, not float32"),
    ]
    for device, dtype, why in cases:
        assert fc1_kernel(device, dtype) == "torch"
        assert fc1_description(device, dtype) == f"torch: F.linear, then erf GELU (quack: {why})"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    assert fc1_kernel(CUDA, torch.float16) == "torch"
    assert "compute capability 9.0 (Hopper); this GPU has 10.0" in fc1_description(CUDA, torch.float16)


def test_quack_missing_or_broken_is_torch_saying_why(quack, monkeypatch):
    monkeypatch.setitem(sys.modules, "quack.gemm_interface", None)  # import fails: ImportError
    mlp._quack_import_problem.cache_clear()
    assert fc1_kernel(CUDA, torch.float16) == "torch"
    assert "quack-kernels is not installed or does not import" in fc1_description(CUDA, torch.float16)
    broken = types.ModuleType("quack.gemm_interface")
    monkeypatch.setitem(sys.modules, "quack.gemm_interface", broken)
    monkeypatch.setattr(mlp.importlib, "import_module", lambda name: (_ for _ in ()).throw(OSError("libcute.so")))
    mlp._quack_import_problem.cache_clear()
    assert "quack-kernels does not import: OSError: libcute.so" in fc1_description(CUDA, torch.float16)


def test_the_environment_variable_overrides_and_is_checked(quack, monkeypatch):
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", "torch")
    assert fc1_kernel(CUDA, torch.float16) == "torch"
    assert fc1_description(CUDA, torch.float16) == "torch: F.linear, then erf GELU (ESMDIV_FC1_KERNEL=torch)"
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", " Quack ")
    assert fc1_kernel(CUDA, torch.float16) == "quack"
    for unset in ("", "  ", "AUTO"):  # set but empty: as unset
        monkeypatch.setenv("ESMDIV_FC1_KERNEL", unset)
        assert fc1_kernel(CUDA, torch.float16) == "quack" and fc1_kernel(CUDA, torch.float32) == "torch"
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", "quack")
    with pytest.raises(EnvironmentUnavailable, match=r"^ESMDIV_FC1_KERNEL=quack: needs a CUDA device$"):
        fc1_kernel(torch.device("cpu"), torch.float16)
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", "cublas")
    with pytest.raises(UsageError, match=r"^ESMDIV_FC1_KERNEL='cublas': expected auto, torch or quack$"):
        fc1_kernel(CUDA, torch.float16)


def test_the_report_says_what_ran_fc1_and_an_uncompiled_run_never_imports_quack(tmp_path, monkeypatch):
    monkeypatch.delenv("ESMDIV_FC1_KERNEL", raising=False)

    def imported():
        raise AssertionError("an uncompiled run imported quack")

    monkeypatch.setattr(mlp, "_quack_import_problem", imported)
    fasta = tmp_path / "two.fasta"
    fasta.write_text(">a\nMKTAYIAKVL\n>b\nGLFDIVKKVVGALGSL\n")
    out, junit = tmp_path / "report.json", tmp_path / "report.xml"
    options = ["--evidence", "off", "--no-mlm", "--json", str(out), "--junit", str(junit)]
    result = CliRunner().invoke(app, ["check", str(fasta), *options])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["fc1"] == UNCOMPILED_FC1 and report["compiled"] is False
    properties = {p.get("name"): p.get("value") for p in ElementTree.parse(junit).iter("property")}
    assert properties["fc1"] == UNCOMPILED_FC1
    assert "quack-kernels" in report["environment"]["packages"]


@pytest.mark.parametrize(
    ("value", "options", "code", "message"),
    [
        ("cublas", [], 2, "ESMDIV_FC1_KERNEL='cublas': expected auto, torch or quack"),
        ("quack", ["--compile"], 3, "ESMDIV_FC1_KERNEL=quack: needs a CUDA device"),
    ],
)
def test_a_bad_or_impossible_fc1_kernel_fails_before_any_forward(tmp_path, monkeypatch, value, options, code, message):
    monkeypatch.setenv("ESMDIV_FC1_KERNEL", value)
    monkeypatch.setattr("esmdiv.audit.run.warm_up", lambda run: pytest.fail("a forward ran"))
    failed = tmp_path / "failed.json"
    result = CliRunner().invoke(app, ["check", str(FIXTURES / "seed18.fasta"), *options, "--json", str(failed)])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    partial = json.loads(failed.read_text())
    assert partial["complete"] is False and partial["error"]["exit_code"] == code
