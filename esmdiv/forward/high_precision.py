"""The high-precision reference: a third run that both paths are measured against.

fair-esm's half-precision model rounds more than the packed path does (its rotary tables are
built in fp16, for one), so "the paths differ" does not say which one is wrong. The reference is
fair-esm's padded forward over the *same* weights (the run's weights upcast exactly) in fp32 on
CUDA, or fp64 on CPU, with the rotary frequencies recomputed and the attention softmax computed at
that precision (fair-esm's own softmax is always fp32).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.measure.metrics import cosine_rows, mean_pool_batch, residue_mask

REFERENCE_CHOICES = ("fp32", "none")
def algorithm_tolerance(dtype: torch.dtype) -> float:
    """How far (rel-L2) the packed algorithm, run at the reference's precision, may sit from the
    reference before it counts as another function: agreement to half the digits of that
    precision, 0.1 * sqrt(eps): 1.5e-9 in fp64, 3.5e-5 in fp32. Clean runs sit 5 orders (fp64) and
    1 to 2 orders (fp32) below it; the known bugs that change the function, 1 to 8 orders above
    (docs/findings.md). Bugs of precision only (positions that run on across a pack) are left to
    the reference-ratio and invariance gates."""
    return 0.1 * math.sqrt(float(torch.finfo(dtype).eps))


def reference_dtype(device: torch.device) -> torch.dtype:
    """fp64 where it is practical (CPU), fp32 on CUDA (fp64 matmuls there are ~60x slower)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def build_reference(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A high-precision copy of ``model`` on ``device``: same weights, exact rotary frequencies."""
    dtype = reference_dtype(device)
    try:
        ref = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise EnvironmentUnavailable(
            f"the {str(dtype).replace('torch.', '')} reference copy of the model does not fit in GPU memory; "
            "run with --reference none"
        ) from None
    for layer in ref.layers:
        rot = layer.self_attn.rot_emb
        dim = layer.self_attn.head_dim
        # The run model's inv_freq buffer is fp16 in a half model; rebuild it at full precision.
        rot.inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device, dtype=dtype) / dim))
        rot._seq_len_cached = None
    return ref


@contextlib.contextmanager
def full_precision_softmax() -> Iterator[None]:
    """fair-esm computes attention softmax in fp32 whatever the input; an fp64 reference needs it
    in fp64. Swaps ``esm.multihead_attention.utils_softmax`` for one that keeps the input's
    precision (never below fp32) for the duration of the reference forward."""
    import esm.multihead_attention as mha

    original = mha.utils_softmax

    def softmax(x, dim: int, onnx_trace: bool = False):
        return F.softmax(x, dim=dim, dtype=torch.promote_types(x.dtype, torch.float32))

    mha.utils_softmax = softmax
    try:
        yield
    finally:
        mha.utils_softmax = original


def reference_forward(ref: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The reference's last-layer representation ``(B, L, C)`` of a padded ``(B, L)`` batch."""
    with torch.inference_mode(), full_precision_softmax():
        return ref(tokens, repr_layers=[ref.num_layers])["representations"][ref.num_layers]


def check_choice(choice: str) -> None:
    if choice not in REFERENCE_CHOICES:
        raise UsageError(f"--reference '{choice}' (choose {', '.join(REFERENCE_CHOICES)})")


@dataclass
class ReferenceDistance:
    """One path's distance to the reference for one sequence."""

    cosine: float  # pooled embedding cosine
    mad: float  # pooled embedding mean abs diff
    rel_l2: float  # ||path - ref|| / ||ref|| over the (L, D) residue rows

    def to_dict(self) -> dict:
        return asdict(self)


def distances_to_reference(
    path: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor, include_eos: bool = False
) -> list[ReferenceDistance]:
    """Per-sequence distance of ``path`` ``(B, L, D)`` to ``ref`` ``(B, L, D)``.

    ``include_eos`` pools the path as a buggy pipeline would (the reference never does).
    """
    mask = residue_mask(lengths, ref.shape[1])[..., None]
    a, r = path.double(), ref.double()
    pooled_path = mean_pool_batch(a, lengths, include_eos=include_eos).double()
    pooled_ref = mean_pool_batch(r, lengths).double()
    diff = torch.where(mask, a - r, 0.0).flatten(1).norm(dim=1)
    norm = torch.where(mask, r, 0.0).flatten(1).norm(dim=1).clamp(min=1e-300)
    rows = torch.stack([cosine_rows(pooled_path, pooled_ref), (pooled_path - pooled_ref).abs().mean(1), diff / norm], 1)
    out = []
    for cos, mad, rel in rows.cpu().tolist():
        out.append(ReferenceDistance(cos, mad, rel) if all(map(math.isfinite, (cos, mad, rel))) else
                   ReferenceDistance(math.nan, math.nan, math.nan))
    return out
