"""Attention backends on the CPU (issue 13): each kernel's dispatch through a fake module that
records its calls, availability decided by importing the function (FlashAttention-4's
namespace-only ``flash_attn`` included), the first call's failures as environment errors, kernel
provenance, and audits of several kernels in one run (one padded pass, one verdict per kernel,
the exit code the worst).

The kernels need CUDA; here fake ``flash_attn`` / ``flash_attn.cute`` modules compute exact
attention on CPU tensors, and where a test runs them through an audit, the device check
(:func:`esmdiv.forward.attention.device_problems`) is patched to let them run on the CPU.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import textwrap
import types
import xml.etree.ElementTree as ET

import pytest
import torch
from typer.testing import CliRunner

import esmdiv.audit.batch
import esmdiv.forward.attention as attention
from esmdiv.cli.app import app
from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.forward.attention import (
    BACKENDS,
    backend_availability,
    clear_backend_cache,
    exact_attention,
    kernel_provenance,
    parse_backends,
    resolve_backends,
    varlen_attention,
)
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import encode, pack

from conftest import FIXTURES
from helpers import random_sequences
from report_helpers import assert_valid

runner = CliRunner()
CUDA = torch.device("cuda")  # only ever looked at (capability faked), never used
FA4_SIGNATURE = (
    "q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, seqused_q=None, "
    "seqused_k=None, page_table=None, softmax_scale=None, causal=False, window_size=(None, None), "
    "learnable_sink=None, softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, return_lse=False"
)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def no_flash_attn_leaks():
    """Every test starts and ends with no flash_attn module loaded and nothing cached."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "flash_attn"}
    for name in saved:
        del sys.modules[name]
    clear_backend_cache()
    importlib.invalidate_caches()
    yield
    for name in [k for k in sys.modules if k.split(".")[0] == "flash_attn"]:
        del sys.modules[name]
    sys.modules.update(saved)
    clear_backend_cache()


@pytest.fixture
def small_fasta(tmp_path):
    """The first four records of the shipped fixture: an audit on the CPU in seconds."""
    text = (FIXTURES / "seed18.fasta").read_text()
    records = [">" + r for r in text.split(">") if r.strip()][:4]
    path = tmp_path / "four.fasta"
    path.write_text("".join(records))
    return path


def on_cpu(monkeypatch):
    """Let the kernels 'run' on the CPU: the device check says nothing (the fakes compute there)."""
    monkeypatch.setattr(attention, "device_problems", lambda backend, device, dtype: [])


def gpu(monkeypatch, capability=(9, 0), arches=("sm_80", "sm_90")):
    """A CUDA device of ``capability`` as far as availability and provenance can tell."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arches))


def fa2_signature(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """flash_attn.flash_attn_varlen_func's signature (FlashAttention 2.8)."""


def fa4_signature(
    q,
    k,
    v,
    cu_seqlens_q=None,
    cu_seqlens_k=None,
    max_seqlen_q=None,
    max_seqlen_k=None,
    seqused_q=None,
    seqused_k=None,
    page_table=None,
    softmax_scale=None,
    causal=False,
    window_size=(None, None),
    learnable_sink=None,
    softcap=0.0,
    num_splits=1,
    pack_gqa=None,
    deterministic=False,
    return_lse=False,
):
    """flash_attn.cute.flash_attn_varlen_func's signature (FlashAttention-4)."""


def recorder(real, returns_lse: bool = False, perturb: float = 0.0, fail: Exception | None = None):
    """A fake kernel with ``real``'s signature: records every call (how many arguments came by
    position, which by name, and all of them bound to the parameter names) and computes exact
    attention (plus ``perturb``: a wrong kernel), or raises ``fail``."""
    signature = inspect.signature(real)

    def kernel(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # a call the real function would refuse fails here
        bound.apply_defaults()
        kernel.passed.append((len(args), sorted(kwargs)))
        kernel.calls.append(dict(bound.arguments))
        if fail is not None:
            raise fail
        a = bound.arguments
        out = exact_attention(a["q"], a["k"], a["v"], a["cu_seqlens_q"], a["max_seqlen_q"], a["softmax_scale"])
        out = out + perturb
        return (out, torch.zeros(a["q"].shape[1], a["q"].shape[0])) if returns_lse else out

    kernel.__signature__ = signature
    kernel.calls, kernel.passed = [], []
    return kernel


def fake_flash_attn(**options):
    """FlashAttention 2 installed: ``flash_attn`` with ``flash_attn_varlen_func`` (removed again by
    :func:`no_flash_attn_leaks`)."""
    module = types.ModuleType("flash_attn")
    module.__file__ = "/site-packages/flash_attn/__init__.py"
    module.__version__ = "2.8.3"
    module.flash_attn_varlen_func = recorder(fa2_signature, **options)
    sys.modules["flash_attn"] = module
    return module.flash_attn_varlen_func


def flat(text: str) -> str:
    """Terminal output as one line of words: rich's table and panel borders out, wrapping undone."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─┃━┏┓┗┛"}).split())


def install_fa4_namespace(tmp_path, monkeypatch):
    """FlashAttention-4 installed as its wheel installs it: ``flash_attn/cute/`` and no
    ``flash_attn/__init__.py``, so ``flash_attn`` is a namespace package. Its function returns
    ``(out, lse)`` and records its calls in ``CALLS``."""
    package = tmp_path / "site" / "flash_attn" / "cute"
    package.mkdir(parents=True)
    body = textwrap.dedent(f"""
        import torch
        from esmdiv.forward.attention import exact_attention

        __version__ = "4.0.0b36"
        CALLS = []

        def flash_attn_varlen_func({FA4_SIGNATURE}):
            CALLS.append(dict(locals()))
            out = exact_attention(q, k, v, cu_seqlens_q, max_seqlen_q, softmax_scale)
            return out, torch.zeros(q.shape[1], q.shape[0])
    """)
    (package / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()


def packed_qkv(lengths=(3, 17, 1, 9), heads=4, dim=16, dtype=torch.float32):
    """q, k, v ``(T, H, D)`` and the pack's ``cu_seqlens`` and ``max_seqlen``, as the packed path makes them."""
    packed = pack([torch.zeros(n, dtype=torch.long) for n in lengths])
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), heads, dim, generator=gen).to(dtype) for _ in range(3))
    return q, k, v, packed.cu_seqlens, packed.max_seqlen


# --- dispatch: what each kernel is called with --------------------------------------------------------


def _assert_called_as_a_kernel(call: dict, q, cu, max_seqlen, scale):
    T, H, D = q.shape
    for name in ("q", "k", "v"):
        assert call[name].shape == (T, H, D) and call[name].dtype == q.dtype, name
    assert torch.equal(call["q"], q)  # the queries as given: the scale goes to the kernel, not into q
    for name in ("cu_seqlens_q", "cu_seqlens_k"):
        assert call[name] is cu and cu.dtype == torch.int32 and cu.shape == (len(cu),)
    assert call["max_seqlen_q"] == call["max_seqlen_k"] == max_seqlen
    assert call["softmax_scale"] == scale and call["softmax_scale"] is not None
    assert call["causal"] is False


def both_installed(tmp_path, monkeypatch):
    """FlashAttention-4 (imported first, as a namespace) and then a FlashAttention 2 ``flash_attn``."""
    install_fa4_namespace(tmp_path, monkeypatch)
    importlib.import_module("flash_attn.cute")
    fake_flash_attn()


def test_flash_attn_is_called_with_named_boundaries_scale_and_no_dropout():
    kernel = fake_flash_attn()
    q, k, v, cu, m = packed_qkv()
    out = varlen_attention(q, k, v, cu, m, "flash-attn", scale=16**-0.5)
    assert kernel.passed == [
        (3, ["causal", "cu_seqlens_k", "cu_seqlens_q", "dropout_p", "max_seqlen_k", "max_seqlen_q", "softmax_scale"])
    ]
    _assert_called_as_a_kernel(kernel.calls[0], q, cu, m, 16**-0.5)
    assert kernel.calls[0]["dropout_p"] == 0.0
    assert torch.equal(out, exact_attention(q, k, v, cu, m, 16**-0.5))


def test_fa4_is_called_by_keyword_and_its_lse_is_dropped():
    fa4 = types.ModuleType("flash_attn.cute")
    fa4.__file__ = "/site-packages/flash_attn/cute/__init__.py"
    fa4.flash_attn_varlen_func = recorder(fa4_signature, returns_lse=True)
    sys.modules["flash_attn.cute"] = fa4
    q, k, v, cu, m = packed_qkv(dtype=torch.bfloat16)
    out = varlen_attention(q, k, v, cu, m, "fa4", scale=0.125)
    assert fa4.flash_attn_varlen_func.passed == [
        (3, ["causal", "cu_seqlens_k", "cu_seqlens_q", "max_seqlen_k", "max_seqlen_q", "softmax_scale"])
    ]
    _assert_called_as_a_kernel(fa4.flash_attn_varlen_func.calls[0], q, cu, m, 0.125)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape and out.dtype == torch.bfloat16


def test_torch_varlen_attn_gets_the_scale_by_name(monkeypatch):
    import torch.nn.attention.varlen as varlen

    calls = []

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None):
        calls.append(dict(locals()))
        return exact_attention(query, key, value, cu_seq_q, max_q, scale)

    monkeypatch.setattr(varlen, "varlen_attn", varlen_attn)
    q, k, v, cu, m = packed_qkv(dtype=torch.float16)
    out = varlen_attention(q, k, v, cu, m, "torch", scale=0.25)
    (call,) = calls
    assert call["query"] is q and call["key"] is k and call["value"] is v
    assert call["cu_seq_q"] is cu and call["cu_seq_k"] is cu and call["max_q"] == call["max_k"] == m
    assert call["scale"] == 0.25 and call["return_aux"] is None and out.dtype == torch.float16


def test_torch_without_a_softmax_scale_is_unavailable_not_a_crash(monkeypatch):
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", lambda query, key, value, cu_seq_q, cu_seq_k, max_q, max_k: None)
    gpu(monkeypatch)
    assert "takes no softmax scale" in backend_availability(CUDA)["torch"]
    assert resolve_backends("auto", CUDA) == ("reference",)


def test_the_packed_path_hands_each_layer_to_the_kernel_unscaled(random_8m):
    """Through packed_forward: one call per layer, (T, H, D) in the model's dtype, int32 (B+1,)
    boundaries, the pack's longest sequence, and softmax scale head_dim**-0.5; the output equals
    the reference backend's (a pre-scaled q would not)."""
    kernel = fake_flash_attn()
    model, alphabet = random_8m.model, random_8m.alphabet
    tokens = [encode(s, alphabet) for s in random_sequences([5, 40, 1, 23], seed=2)]
    packed = pack(tokens)
    fast = packed_forward(model, packed, "flash-attn").representations[model.num_layers]
    exact = packed_forward(model, packed, "reference").representations[model.num_layers]
    heads, head_dim = model.layers[0].self_attn.num_heads, model.layers[0].self_attn.head_dim
    assert len(kernel.calls) == model.num_layers
    for call in kernel.calls:
        assert call["q"].shape == (len(packed.input_ids), heads, head_dim) and call["q"].dtype == torch.float32
        assert call["cu_seqlens_q"].dtype == torch.int32 and call["cu_seqlens_q"].shape == (len(tokens) + 1,)
        assert call["max_seqlen_q"] == packed.max_seqlen == 42  # 40 residues, BOS and EOS
        assert call["softmax_scale"] == head_dim**-0.5
    assert torch.equal(fast, exact)


# --- the reference backend: exact attention, one sequence at a time ----------------------------------


def test_the_reference_is_softmax_of_scaled_scores_within_each_sequence():
    """Against torch's scaled_dot_product_attention in fp64, sequence by sequence (the fake kernels
    compute with exact_attention, so only this test checks its arithmetic)."""
    q, k, v, cu, max_seqlen = packed_qkv()
    scale = 0.3
    out = exact_attention(q, k, v, cu, max_seqlen, scale)
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1).double() for t in (q, k, v))
        want = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=scale).transpose(0, 1)
        torch.testing.assert_close(out[start:end].double(), want, rtol=1e-5, atol=1e-6)
    assert out.dtype == q.dtype and out.shape == q.shape


def test_the_reference_computes_half_precision_inputs_in_fp32():
    q, k, v, cu, max_seqlen = packed_qkv(dtype=torch.bfloat16)
    out = exact_attention(q, k, v, cu, max_seqlen, 0.25)
    # the same fp32 arithmetic on the same values, rounded once at the end: equal bit for bit
    wide = exact_attention(q.float(), k.float(), v.float(), cu, max_seqlen, 0.25)
    assert out.dtype == torch.bfloat16 and torch.equal(out, wide.to(torch.bfloat16))


def test_varlen_attention_scales_by_one_unless_told():
    q, k, v, cu, max_seqlen = packed_qkv()
    assert torch.equal(
        varlen_attention(q, k, v, cu, max_seqlen, "reference"), exact_attention(q, k, v, cu, max_seqlen, 1.0)
    )


def test_a_kernel_without_a_readable_signature_is_let_through_to_its_first_call():
    assert attention._takes(object(), "scale") is True  # no signature: the first call tells
    assert attention._takes(lambda q, scale: q, "scale") is True
    assert attention._takes(lambda q: q, "scale") is False


def test_an_unknown_backend_is_named_in_full():
    listed = "'auto', 'all', 'flash-attn', 'fa4', 'torch', 'reference'"
    unknown = f"--backend 'flash': 'flash' is not one of {listed} (or a comma-separated list of backends)"
    with pytest.raises(UsageError, match=f"^{re.escape(unknown)}$"):
        attention.backend_problems("flash", CUDA)
    in_a_list = f"--backend 'torch,flash': 'flash' is not one of {listed}"
    with pytest.raises(UsageError, match=f"^{re.escape(in_a_list)} "):
        parse_backends("torch,flash")
    message = "--backend ' , ': give auto, all, or one or more of flash-attn, fa4, torch, reference"
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        parse_backends(" , ")


def test_all_takes_the_run_dtype(monkeypatch):
    gpu(monkeypatch)
    assert resolve_backends("all", CUDA) == ("torch", "reference")
    assert resolve_backends("all", CUDA, torch.float32) == ("reference",)


# --- availability: importing the function decides ----------------------------------------------------


def test_nothing_installed_on_a_gpu_auto_picks_torch(monkeypatch):
    gpu(monkeypatch)
    availability = backend_availability(CUDA)
    assert availability["flash-attn"] == "the flash-attn package is not installed"
    assert "FlashAttention-4" in availability["fa4"] and "not installed" in availability["fa4"]
    assert availability["torch"] is None and availability["reference"] is None
    assert resolve_backends("auto", CUDA) == ("torch",)
    assert resolve_backends("all", CUDA) == ("torch", "reference")


def test_auto_takes_flash_attn_then_fa4_then_torch(monkeypatch, tmp_path):
    gpu(monkeypatch)
    install_fa4_namespace(tmp_path, monkeypatch)
    assert resolve_backends("auto", CUDA) == ("fa4",)  # FlashAttention-4 alone: flash-attn cannot run
    clear_backend_cache()
    fake_flash_attn()  # now a FlashAttention 2 with its function, beside FlashAttention-4
    assert resolve_backends("auto", CUDA) == ("flash-attn",)
    assert resolve_backends("all", CUDA) == BACKENDS
    assert resolve_backends("auto", CUDA, torch.float32) == ("reference",)  # the kernels take fp16/bf16


def test_fa4_alone_leaves_a_namespace_flash_attn_that_is_named_not_imported_blindly(monkeypatch, tmp_path):
    """The issue's bug: find_spec('flash_attn') finds FlashAttention-4's namespace, auto picked
    flash-attn and the import failed (exit 1). Now flash-attn is unavailable, saying why."""
    gpu(monkeypatch)
    install_fa4_namespace(tmp_path, monkeypatch)
    why = backend_availability(CUDA)["flash-attn"]
    assert "flash_attn has no flash_attn_varlen_func" in why and "namespace package" in why and "--backend fa4" in why
    with pytest.raises(EnvironmentUnavailable, match="attention backend 'flash-attn' is not available"):
        resolve_backends("flash-attn", CUDA)
    assert resolve_backends("fa4,torch", CUDA) == ("fa4", "torch")


@pytest.mark.parametrize(
    "capability, fa2, fa4",
    [
        ((9, 0), True, True),
        ((10, 0), True, True),
        ((8, 0), True, False),
        ((12, 0), True, False),
        ((7, 5), False, False),
    ],
)
def test_compute_capability_decides_which_kernels_can_run(monkeypatch, tmp_path, capability, fa2, fa4):
    gpu(monkeypatch, capability)
    both_installed(tmp_path, monkeypatch)
    availability = backend_availability(CUDA)
    assert (availability["flash-attn"] is None, availability["fa4"] is None) == (fa2, fa4)
    if not fa4:
        assert f"this GPU has {capability[0]}.{capability[1]}" in availability["fa4"]


def test_a_dtype_the_kernels_do_not_take_is_named_for_every_kernel(monkeypatch):
    gpu(monkeypatch)
    availability = backend_availability(CUDA, torch.float32)
    assert availability["torch"] == "FlashAttention kernels take fp16 or bf16, not float32"
    assert availability["flash-attn"].startswith("FlashAttention kernels take fp16 or bf16, not float32; ")
    assert availability["reference"] is None


def test_the_capability_is_read_from_the_device_the_run_uses(monkeypatch):
    second = torch.device("cuda", 1)

    def capability(device=None):
        assert device == second, device  # not the current device: the run's
        return (7, 5)

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    assert attention.device_problems("flash-attn", second, torch.bfloat16) == [
        "FlashAttention 2 needs compute capability 8.0 or later (this GPU has 7.5)"
    ]


def test_resolve_backend_asks_for_one_kernel_in_the_run_dtype(monkeypatch):
    gpu(monkeypatch)  # nothing installed: torch's varlen_attn is the one kernel
    assert attention.resolve_backend("torch", CUDA, torch.bfloat16) == "torch"
    assert attention.resolve_backend("auto", CUDA) == "torch"
    with pytest.raises(EnvironmentUnavailable, match="^attention backend 'torch' is not available: .*not float32$"):
        attention.resolve_backend("torch", CUDA, torch.float32)
    with pytest.raises(UsageError, match=r"^--backend 'all': give one backend here, not 2$"):
        attention.resolve_backend("all", CUDA)


def test_a_broken_install_is_unavailable_with_its_reason(monkeypatch, tmp_path):
    """An import that raises anything (a CUDA library that does not load) makes the backend
    unavailable with the error, never an internal error."""
    site = tmp_path / "site"
    (site / "flash_attn" / "cute").mkdir(parents=True)
    (site / "flash_attn" / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open shared object')\n")
    (site / "flash_attn" / "cute" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    gpu(monkeypatch)
    availability = backend_availability(CUDA)
    why = "OSError: libcudart.so.12: cannot open shared object"
    assert availability["flash-attn"] == f"importing flash_attn failed: {why}"
    assert availability["fa4"] == f"importing flash_attn.cute failed: {why}"
    assert resolve_backends("auto", CUDA) == ("torch",)


def test_fa4_without_the_cutlass_dsl_on_the_path_says_what_to_put_there(monkeypatch, tmp_path):
    """pip --target does not read the CUTLASS DSL's .pth file: ``import cutlass`` fails inside
    flash_attn.cute, and the reason names the folder to put on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "flash_attn" / "cute").mkdir(parents=True)
    (site / "flash_attn" / "cute" / "__init__.py").write_text("import cutlass\n")
    monkeypatch.syspath_prepend(str(site))
    gpu(monkeypatch)
    why = backend_availability(CUDA)["fa4"]
    assert why.startswith("importing flash_attn.cute failed: ModuleNotFoundError: No module named 'cutlass'")
    assert "<target>/nvidia_cutlass_dsl/dsl_packages on PYTHONPATH" in why
    assert resolve_backends("auto", CUDA) == ("torch",)


def test_the_import_is_tried_once(monkeypatch):
    tries = []

    def counting(name, *args, **kwargs):
        tries.append(name)
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    monkeypatch.setattr(attention.importlib, "import_module", counting)
    for _ in range(3):
        backend_availability(torch.device("cpu"))
    assert tries.count("flash_attn") == 1 and tries.count("flash_attn.cute") == 1


# --- the first call ----------------------------------------------------------------------------------


def test_a_kernel_that_fails_on_its_first_call_is_an_environment_error():
    fake_flash_attn(fail=RuntimeError("CUDA error: no kernel image is available\nfor execution"))
    q, k, v, cu, m = packed_qkv()
    with pytest.raises(EnvironmentUnavailable, match="failed on its first call") as caught:
        varlen_attention(q, k, v, cu, m, "flash-attn", scale=0.25)
    assert str(caught.value) == (
        "attention backend 'flash-attn' failed on its first call: "
        "RuntimeError: CUDA error: no kernel image is available for execution"
    )
    assert caught.value.exit_code == 3


def test_out_of_memory_on_the_first_call_is_left_to_the_audit():
    fake_flash_attn(fail=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    q, k, v, cu, m = packed_qkv()
    with pytest.raises(torch.cuda.OutOfMemoryError, match="^CUDA out of memory$"):  # the audit halves its budget
        varlen_attention(q, k, v, cu, m, "flash-attn", scale=0.25)


def test_only_the_first_call_is_checked():
    """Once a kernel has run, a later failure is the audit's to handle (out of memory on a longer
    pack, a fault): it passes through as it is, not as "cannot run here"."""
    results = iter([(torch.ones(2), torch.zeros(1)), RuntimeError("a later failure")])

    def run(*args):
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    checked = attention.FirstCallChecked("attention backend 'fa4'", run)
    assert torch.equal(checked(1, 2), torch.ones(2))  # (out, lse): out
    with pytest.raises(RuntimeError, match="^a later failure$") as caught:
        checked(1, 2)
    assert type(caught.value) is RuntimeError


def test_check_with_a_kernel_that_cannot_run_here_is_exit_3(monkeypatch, small_fasta, tmp_path):
    fake_flash_attn(fail=ValueError("too many values to unpack (expected 2)"))
    on_cpu(monkeypatch)
    out = tmp_path / "r.json"
    code, stdout, stderr = invoke(
        "check", small_fasta, "--device", "cpu", "--backend", "reference,flash-attn", "--evidence", "off", "--json", out
    )
    lines = stderr.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "Traceback" not in stderr
    assert "attention backend 'flash-attn' failed on its first call: ValueError: too many values" in lines[0]
    assert not any(v in stdout for v in ("ACCEPT", "VALIDATE", "FALLBACK"))
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["error"]["exit_code"] == 3
    assert partial["backend"] == "reference,flash-attn"


# --- choosing: --backend -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, names",
    [
        ("torch,fa4", ("torch", "fa4")),
        (" fa4 , torch, fa4 ", ("fa4", "torch")),
        ("auto", ("auto",)),
        ("all", ("all",)),
        ("reference", ("reference",)),
    ],
)
def test_backend_lists_parse(text, names):
    assert parse_backends(text) == names


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("xformers", "'xformers' is not one of 'auto', 'all', 'flash-attn', 'fa4', 'torch', 'reference'"),
        ("torch,fa5", "'fa5' is not one of"),
        ("", "give auto, all, or one or more of"),
        (",", "give auto, all, or one or more of"),
        ("all,torch", "all stands alone"),
        ("torch,auto", "auto stands alone"),
    ],
)
def test_bad_backend_lists_are_usage_errors(text, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_backends(text)


def test_on_the_cpu_all_is_the_reference_and_a_kernel_is_exit_3():
    cpu = torch.device("cpu")
    assert resolve_backends("all", cpu) == ("reference",) == resolve_backends("auto", cpu)
    with pytest.raises(EnvironmentUnavailable, match="attention backend 'fa4' is not available: needs a CUDA device"):
        resolve_backends("reference,fa4", cpu)


# --- provenance --------------------------------------------------------------------------------------


def test_provenance_names_package_version_function_and_architecture(monkeypatch, tmp_path):
    gpu(monkeypatch, (9, 0), ("sm_80", "sm_90"))
    install_fa4_namespace(tmp_path, monkeypatch)
    fa4 = kernel_provenance("fa4", CUDA)
    assert fa4["package"] == "flash-attn-4" and fa4["version"] == "4.0.0b36"
    assert fa4["function"] == "flash_attn.cute.flash_attn_varlen_func"
    assert fa4["built_for"].startswith("compiled at run time (CuTe DSL) for sm_90")
    assert fa4["device_capability"] == "9.0" and "nvidia-cutlass-dsl" in fa4["dependencies"]
    torch_kernel = kernel_provenance("torch", CUDA)
    assert torch_kernel["version"] == torch.__version__ and torch_kernel["built_for"] == "built for sm_80 sm_90"
    assert torch_kernel["function"] == "torch.nn.attention.varlen.varlen_attn"
    assert kernel_provenance("reference")["package"] == "esmdiv"
    absent = kernel_provenance("flash-attn", CUDA)  # flash_attn here is FlashAttention-4's namespace
    assert absent["version"] is None and absent["function"] == "flash_attn.flash_attn_varlen_func"


# --- FlashAttention-4 installed on a CPU machine: check runs, env says why -----------------------------


def test_fa4_installed_never_breaks_check_and_env_says_why_flash_attn_cannot_run(monkeypatch, tmp_path, small_fasta):
    install_fa4_namespace(tmp_path, monkeypatch)
    out = tmp_path / "r.json"
    code, stdout, stderr = invoke("check", small_fasta, "--device", "cpu", "--json", out)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["backend"] == "reference" and report["kernel"]["function"].startswith("esmdiv.")
    assert "kernels" not in report  # one kernel: the report as before, plus its provenance
    backends = report["environment"]["attention_backends"]["backends"]
    assert "namespace package" in backends["flash-attn"]["why_not"]
    assert backends["fa4"]["provenance"]["version"] == "4.0.0b36"

    code, stdout, stderr = invoke("env", "--device", "cpu", "--json", tmp_path / "env.json")
    assert code == 0, stderr
    text = flat(stdout)
    assert "backend flash-attn unavailable: needs a CUDA device; flash_attn has no flash_attn_varlen_func" in text
    assert "FlashAttention-4 installs only flash_attn.cute; use --backend fa4" in text
    assert "backend fa4 unavailable: needs a CUDA device — installed: flash-attn-4 4.0.0b36" in text


# --- several kernels in one audit ----------------------------------------------------------------------


def _count_forwards(monkeypatch) -> dict:
    counts = {"padded": 0}
    real_padded, real_packed = esmdiv.audit.batch.padded_forward, esmdiv.audit.batch.packed_forward

    def padded(*args, **kwargs):
        counts["padded"] += 1
        return real_padded(*args, **kwargs)

    def packed(model, batch, backend, *args, **kwargs):
        counts[backend] = counts.get(backend, 0) + 1
        return real_packed(model, batch, backend, *args, **kwargs)

    monkeypatch.setattr(esmdiv.audit.batch, "padded_forward", padded)
    monkeypatch.setattr(esmdiv.audit.batch, "packed_forward", packed)
    return counts


def _junit_suites(path):
    root = ET.parse(path).getroot()
    return {s.get("name"): int(s.get("failures")) for s in root.iter("testsuite")}, root


def test_two_kernels_one_padded_pass_one_verdict_each(monkeypatch, tmp_path, small_fasta):
    """Both kernels correct: one ACCEPT each, every per-sequence number equal (both compute exact
    attention), the padded forward run once per batch, and the reference kernel's verdict that of
    a run auditing it alone."""
    from esmdiv.report.html import render_html
    from esmdiv.report.markdown import render_markdown

    fake_flash_attn()
    on_cpu(monkeypatch)
    counts = _count_forwards(monkeypatch)
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code, stdout, stderr = invoke(
        "check", small_fasta, "--device", "cpu", "--backend", "reference,flash-attn", "--json", out, "--junit", junit
    )
    assert code == 0, stderr
    assert counts["padded"] == counts["reference"] == counts["flash-attn"] > 0  # warm-up and each batch
    report = json.loads(out.read_text())
    assert_valid(report)
    assert report["backend"] == "reference,flash-attn" and report["verdict"] == "ACCEPT"
    assert [k["backend"] for k in report["kernels"]] == ["reference", "flash-attn"]
    assert [k["verdict"] for k in report["kernels"]] == ["ACCEPT", "ACCEPT"]
    assert [k["exit_code"] for k in report["kernels"]] == [0, 0]
    assert report["worst_kernel"] == "reference" and report["kernel"] == report["kernels"][0]["provenance"]
    fa = report["kernels"][1]
    assert (
        fa["provenance"]["function"] == "flash_attn.flash_attn_varlen_func" and fa["provenance"]["version"] == "2.8.3"
    )
    for a, b in zip(report["kernels"][0]["sequences"], fa["sequences"]):
        assert {k: a[k] for k in ("id", "cosine", "mad", "max_abs_diff")} == {
            k: b[k] for k in ("id", "cosine", "mad", "max_abs_diff")
        }
    assert report["timings"]["packed_tokens_per_s"] is None and fa["timings"]["packed_s"] > 0
    assert "FlashAttention-4's first compile" in report["timings"]["warm_up"]
    text = flat(stdout)
    assert "verdict: reference" in text and "verdict: flash-attn" in text and "overall verdict" in text
    assert "the worst of 2 kernels (reference ACCEPT, flash-attn ACCEPT); exit code 0" in text
    assert "kernel flash-attn: flash-attn 2.8.3, flash_attn.flash_attn_varlen_func" in text

    suites, root = _junit_suites(junit)
    assert suites == {
        "esmdiv.gates.reference": 0,
        "esmdiv.sequences.reference": 0,
        "esmdiv.gates.flash-attn": 0,
        "esmdiv.sequences.flash-attn": 0,
    }
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["kernel.flash-attn"].startswith("flash-attn: flash-attn 2.8.3")
    page, markdown = render_html(report, plots=[]), render_markdown(report)
    for rendered in (page, markdown):
        assert "Verdict: reference" in rendered and "Verdict: flash-attn" in rendered

    alone = tmp_path / "alone.json"
    code, _, stderr = invoke("check", small_fasta, "--device", "cpu", "--backend", "reference", "--json", alone)
    single = json.loads(alone.read_text())
    assert code == 0 and "kernels" not in single and single["kernel"] == report["kernels"][0]["provenance"]
    assert [r["gate"] for r in single["reasons"]] == [r["gate"] for r in report["kernels"][0]["reasons"]]
    for a, b in zip(single["reasons"], report["kernels"][0]["reasons"]):
        assert a["passed"] == b["passed"] and (a["value"] is None) == (b["value"] is None), a["gate"]
        if a["value"] is not None:
            assert a["value"] == pytest.approx(b["value"], rel=1e-12, abs=1e-300), a["gate"]


def test_a_fault_in_one_kernel_gives_that_kernel_its_verdict_and_the_run_the_worst(monkeypatch, tmp_path, small_fasta):
    fake_flash_attn(perturb=0.3)  # a kernel that is wrong
    on_cpu(monkeypatch)
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code, stdout, stderr = invoke(
        "check", small_fasta, "--device", "cpu", "--backend", "reference,flash-attn", "--evidence-tokens", "50",
        "--json", out, "--junit", junit,
    )  # fmt: skip
    report = json.loads(out.read_text())
    good, bad = report["kernels"]
    assert good["verdict"] == "ACCEPT" and bad["verdict"] in ("VALIDATE", "FALLBACK")
    assert report["verdict"] == bad["verdict"] and code == bad["exit_code"] != 0
    assert report["worst_kernel"] == "flash-attn" and report["kernel"]["backend"] == "flash-attn"
    assert report["reasons"] == bad["reasons"] and report["summary"]["cosine"] == bad["summary"]["cosine"]
    assert [s["cosine"] for s in report["sequences"]] == [s["cosine"] for s in bad["sequences"]]
    assert any(not r["passed"] and r["gate"] == "min cosine" for r in bad["reasons"])
    assert all(r["passed"] for r in good["reasons"])
    # A sample of two sequences (the shortest and the longest); the sequences the wrong kernel
    # flagged went through the evidence pass too, for both kernels (the right one flagged none).
    evidence = report["evidence"]
    assert evidence["sample"]["sequences"] == 2 and evidence["flagged"] >= 1
    reran = [[s["id"] for s in k["sequences"] if "reference" in s] for k in (good, bad)]
    assert reran[0] == reran[1] and len(reran[0]) == evidence["rerun"] > 2
    suites, _ = _junit_suites(junit)
    assert suites["esmdiv.gates.reference"] == suites["esmdiv.sequences.reference"] == 0
    assert suites["esmdiv.gates.flash-attn"] > 0 and suites["esmdiv.sequences.flash-attn"] > 0
    text = flat(stdout)
    assert f"the worst of 2 kernels (reference ACCEPT, flash-attn {bad['verdict']}); exit code {code}" in text


def test_bench_times_the_packed_path_once_per_kernel(monkeypatch, tmp_path):
    fake_flash_attn()
    on_cpu(monkeypatch)
    out = tmp_path / "b.json"
    code, stdout, stderr = invoke(
        "bench", "--device", "cpu", "--backend", "reference,flash-attn", "--n", "6", "--repeats", "1",
        "--paths", "padded,packed", "--json", out,
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(out.read_text())
    assert list(data["paths"]) == ["padded", "packed[reference]", "packed[flash-attn]"]
    for name, backend in (("packed[reference]", "reference"), ("packed[flash-attn]", "flash-attn")):
        row = data["paths"][name]
        assert row["status"] == "ok" and row["check"]["ok"] and row["backend"] == backend
        assert data["speedups"][f"{name}_over_padded"] is not None
    assert data["backend"] == "reference,flash-attn" and data["speedups"]["packed_over_padded"] is None
    assert data["kernels"]["flash-attn"]["version"] == "2.8.3"
    assert "compiles" in data["timing"]["first_call"]
    text = flat(stdout)
    assert "packed flash-attn (esmdiv)" in text and "packed reference is" in text


def test_selftest_injects_its_bugs_into_one_kernel():
    for given in ("torch,fa4", "all"):
        code, _, stderr = invoke("selftest", "--device", "cpu", "--backend", given)
        assert code == 2 and "give one backend" in stderr, stderr
    code, _, stderr = invoke("selftest", "--device", "cpu", "--backend", "fa4")
    assert code == 3 and "attention backend 'fa4' is not available" in stderr
