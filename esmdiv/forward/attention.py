"""Variable-length (packed) self-attention backends, and the one place that picks among them.

Backends, in the order ``auto`` tries them on CUDA:

- ``flash-attn``: ``flash_attn.flash_attn_varlen_func`` from the FlashAttention package.
- ``torch``: ``torch.nn.attention.varlen.varlen_attn``, FlashAttention-2 inside PyTorch (CUDA).
- ``reference``: exact attention computed per sequence in fp32 (fp64 for fp64 inputs) with plain
  matmuls; any device.
  ``auto`` picks it on CPU, where it stands in for the kernels.

The softmax scale is passed to the kernel (``head_dim ** -0.5`` for ESM-2) rather than folded
into the queries: one elementwise pass fewer, the same function (rotary is linear).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from functools import cache

import torch

from esmdiv.errors import EnvironmentUnavailable, UsageError

BACKENDS = ("flash-attn", "torch", "reference")
_KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def backend_availability(device: torch.device, dtype: torch.dtype = torch.float16) -> dict[str, str | None]:
    """For each backend, ``None`` when it can run on ``device`` in ``dtype``, else why not."""
    kernel_problem = None
    if device.type != "cuda":
        kernel_problem = "needs a CUDA device"
    elif dtype not in _KERNEL_DTYPES:
        kernel_problem = f"FlashAttention kernels take fp16 or bf16, not {str(dtype).replace('torch.', '')}"
    return {
        "flash-attn": kernel_problem
        or (None if importlib.util.find_spec("flash_attn") else "the flash-attn package is not installed"),
        "torch": kernel_problem
        or (
            None
            if importlib.util.find_spec("torch.nn.attention.varlen")
            else f"torch {torch.__version__} has no torch.nn.attention.varlen"
        ),
        "reference": None,
    }


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype = torch.float16) -> str:
    """Turn ``auto`` or a backend name into the backend that will run; never falls back silently.

    ``auto``: the first available of flash-attn, torch, reference on CUDA; reference on CPU.
    """
    availability = backend_availability(device, dtype)
    if requested == "auto":
        if device.type != "cuda":
            return "reference"
        return next(name for name in BACKENDS if availability[name] is None)
    if requested not in availability:
        raise UsageError(f"unknown attention backend '{requested}' (choose auto, {', '.join(BACKENDS)})")
    if availability[requested] is not None:
        raise EnvironmentUnavailable(f"attention backend '{requested}' is not available: {availability[requested]}")
    return requested


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    backend: str,
    scale: float = 1.0,
) -> torch.Tensor:
    """Bidirectional attention within each packed sequence: ``softmax(scale * q k^T) v``.

    Args:
        q, k, v: ``(total_tokens, num_heads, head_dim)``, last dimension contiguous.
        cu_seqlens: ``(B+1,)`` int32, sequence boundaries in the packed token axis.
        max_seqlen: longest sequence in the pack.
        backend: a name from :data:`BACKENDS` (see :func:`resolve_backend`).
        scale: softmax scale.

    Returns:
        ``(total_tokens, num_heads, head_dim)`` in ``q``'s dtype.
    """
    return _kernel(backend)(q, k, v, cu_seqlens, max_seqlen, scale)


@cache
def _kernel(backend: str) -> Callable[..., torch.Tensor]:
    if backend == "flash-attn":
        from flash_attn import flash_attn_varlen_func

        def run(q, k, v, cu, max_len, scale):
            return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, dropout_p=0.0, softmax_scale=scale)

        return run
    if backend == "torch":
        from torch.nn.attention.varlen import varlen_attn

        if "scale" not in inspect.signature(varlen_attn).parameters:
            raise EnvironmentUnavailable(f"torch {torch.__version__}: varlen_attn takes no softmax scale")

        def run(q, k, v, cu, max_len, scale):
            return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale)

        return run
    if backend == "reference":  # the option's name; the function says what it computes
        return _exact_attention
    raise UsageError(f"unknown attention backend '{backend}'")


def _exact_attention(q, k, v, cu_seqlens, max_seqlen, scale):
    """Exact attention, one sequence at a time, in fp32 at least: the ``reference`` backend."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        # (H, L, D) in fp32 at least (fp64 stays fp64: the packed algorithm of the high-precision run)
        qs, ks, vs = (t[start:end].transpose(0, 1).to(torch.promote_types(t.dtype, torch.float32)) for t in (q, k, v))
        weights = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out[start:end] = (weights @ vs).transpose(0, 1).to(q.dtype)
    return out
