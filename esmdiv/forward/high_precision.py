"""The high-precision run (``--reference fp32``): a third run that both paths are measured against.

fair-esm's half-precision model rounds more than the packed path does (its rotary tables are
built in fp16, for one), so "the paths differ" does not say which one is wrong. The third run is
fair-esm's padded forward over the *same* weights (the run's weights upcast exactly) in fp32 on
CUDA, or fp64 on CPU, with the rotary frequencies recomputed and the attention softmax computed at
that precision (fair-esm's own softmax is always fp32). Reports call it "the reference" (the
``--reference`` option, the JSON's ``reference`` blocks); the code calls it high precision, so the
word is not shared with the padded baseline or the exact attention backend. How far each path
sits from it is measured in :mod:`esmdiv.measure.metrics`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from esmdiv.errors import EnvironmentUnavailable, UsageError

#: ``--reference`` values: ``fp32`` runs the high-precision copy (fp64 on CPU), ``none`` does not.
HIGH_PRECISION_CHOICES = ("fp32", "none")


def algorithm_tolerance(dtype: torch.dtype) -> float:
    """How far (rel-L2, of the residue rows and of the pooled embedding) the packed algorithm, run at
    the high precision, may sit from the high-precision run before it counts as another function:
    agreement to half the digits of that precision, 0.1 * sqrt(eps): 1.5e-9 in fp64, 3.5e-5 in
    fp32. Clean runs sit 5 orders (fp64) and 1 to 2 orders (fp32) below it; the known bugs that
    change the function, 1 to 8 orders above (docs/findings.md). Bugs of precision only (positions
    that run on across a pack) are left to the reference-ratio and invariance gates."""
    return 0.1 * math.sqrt(float(torch.finfo(dtype).eps))


def high_precision_dtype(device: torch.device) -> torch.dtype:
    """fp64 where it is practical (CPU), fp32 on CUDA (fp64 matmuls there are ~60x slower)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def build_high_precision(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A high-precision copy of ``model`` on ``device``: same weights, exact rotary frequencies."""
    dtype = high_precision_dtype(device)
    try:
        high = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise EnvironmentUnavailable(
            f"the {str(dtype).replace('torch.', '')} reference copy of the model does not fit in GPU memory; "
            "run with --evidence off"
        ) from None
    for layer in high.layers:
        rot = layer.self_attn.rot_emb
        dim = layer.self_attn.head_dim
        # The run model's inv_freq buffer is fp16 in a half model; rebuild it at full precision.
        rot.inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device, dtype=dtype) / dim))
        rot._seq_len_cached = None
    return high


@contextlib.contextmanager
def full_precision_softmax() -> Iterator[None]:
    """fair-esm computes attention softmax in fp32 whatever the input; an fp64 run needs it
    in fp64. Swaps ``esm.multihead_attention.utils_softmax`` for one that keeps the input's
    precision (never below fp32) for the duration of the high-precision forward."""
    import esm.multihead_attention as mha

    original = mha.utils_softmax

    def softmax(x, dim: int, onnx_trace: bool = False):
        return F.softmax(x, dim=dim, dtype=torch.promote_types(x.dtype, torch.float32))

    mha.utils_softmax = softmax
    try:
        yield
    finally:
        mha.utils_softmax = original


def high_precision_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The high-precision copy's last-layer representation ``(B, L, C)`` of a padded ``(B, L)`` batch."""
    with torch.inference_mode(), full_precision_softmax():
        return model(tokens, repr_layers=[model.num_layers])["representations"][model.num_layers]


def check_high_precision_choice(choice: str) -> None:
    if choice not in HIGH_PRECISION_CHOICES:
        raise UsageError(f"--reference '{choice}' (choose {', '.join(HIGH_PRECISION_CHOICES)})")
