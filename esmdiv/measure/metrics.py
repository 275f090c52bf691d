"""Divergence metrics, computed in fp32 (fp64 for reductions) from the two paths' outputs.

Inputs are one sequence's representation from each path, ``(L+2, D)``: row 0 is BOS (``<cls>``),
rows 1..L the residues, row L+1 EOS. Pooling uses the residues only, as fair-esm's
``extract.py`` does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


def residue_mask(lengths: torch.Tensor, width: int, include_eos: bool = False) -> torch.Tensor:
    """``(B, width)`` bool: True on residue rows (1 .. len-2; with ``include_eos`` also len-1)."""
    positions = torch.arange(width, device=lengths.device)[None, :]
    end = lengths[:, None] - (0 if include_eos else 1)
    return (positions >= 1) & (positions < end)


def mean_pool_batch(reps: torch.Tensor, lengths: torch.Tensor, include_eos: bool = False) -> torch.Tensor:
    """Mean over each sequence's residue rows: ``(B, L, D)`` -> ``(B, D)``, fp32 (fp64 for fp64 input).

    ``include_eos`` reproduces the known pooling bug (EOS averaged in).
    """
    mask = residue_mask(lengths, reps.shape[1], include_eos)
    # where, not a product: a non-finite padding, BOS or EOS row must not reach the mean (NaN * 0 is NaN).
    total = torch.where(mask[..., None], reps.to(torch.promote_types(reps.dtype, torch.float32)), 0.0).sum(1)
    return total / mask.sum(1, keepdim=True).clamp(min=1)


def mean_pool(rep: torch.Tensor, include_eos: bool = False) -> torch.Tensor:
    """One sequence: ``(L+2, D)`` -> ``(D,)`` fp32."""
    return mean_pool_batch(rep[None], torch.tensor([rep.shape[0]], device=rep.device), include_eos)[0]


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity in fp64: ``(B, D)`` x ``(B, D)`` -> ``(B,)``.

    Two zero rows give 1, one zero row gives 0.
    """
    a, b = a.double(), b.double()
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    cos = (a * b).sum(-1) / (na * nb)
    cos = torch.where((na == 0) | (nb == 0), (na == nb).double(), cos)
    return cos.clamp(-1.0, 1.0)


# Tolerances of the element-wise allclose fractions (rtol 0: absolute error only).
ALLCLOSE_ATOLS = (1e-3, 1e-2)


@dataclass
class SequenceMetrics:
    """Per-sequence divergence between the padded (v1) and packed (v2) paths.

    Pooled: over the mean of the residue rows. Residue-level: over every residue element.
    """

    cosine: float  # cosine similarity of the mean-pooled embeddings
    mad: float  # mean absolute difference of the mean-pooled embeddings
    max_abs_diff: float  # largest absolute difference over every residue element
    finite_v1: bool
    finite_v2: bool
    residue_cosine_min: float = math.nan  # cosine between v1 and v2 of each residue row: lowest
    residue_cosine_mean: float = math.nan  # ... and mean
    rel_l2: float = math.nan  # ||v2 - v1|| / ||v1|| over the (L, D) residue rows
    p999_abs_diff: float = math.nan  # 99.9th percentile of the element-wise absolute error
    allclose_1e3: float = math.nan  # fraction of elements with |v2 - v1| <= 1e-3
    allclose_1e2: float = math.nan  # fraction of elements with |v2 - v1| <= 1e-2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchComparison:
    """Embedding comparison of a batch; pooled tensors stay on the device."""

    pooled_v1: torch.Tensor  # (B, D) fp32
    pooled_v2: torch.Tensor  # (B, D) fp32
    metrics: list[SequenceMetrics]


def compare_embeddings(
    v1: torch.Tensor, v2: torch.Tensor, lengths: torch.Tensor, include_eos_v2: bool = False
) -> BatchComparison:
    """Compare two ``(B, L, D)`` batches of representations, each sequence over its own rows.

    ``lengths`` ``(B,)`` counts tokens (BOS and EOS included); rows past a length are padding and
    never read.
    """
    mask = residue_mask(lengths, v1.shape[1])
    pooled_v1 = mean_pool_batch(v1, lengths)
    pooled_v2 = mean_pool_batch(v2, lengths, include_eos=include_eos_v2)
    m = mask[..., None]
    a, b = v1.float(), v2.float()
    # Finite over every token row, BOS and EOS too: they reach <cls> heads and buggy poolings.
    tokens = (torch.arange(v1.shape[1], device=lengths.device)[None, :] < lengths[:, None])[..., None]
    finite_v1 = (torch.isfinite(a) | ~tokens).flatten(1).all(1)
    finite_v2 = (torch.isfinite(b) | ~tokens).flatten(1).all(1)
    diff = torch.where(m, (a - b).abs(), 0.0)
    n_rows = mask.sum(1).clamp(min=1)
    n_elements = n_rows * v1.shape[2]
    # fp32 rounding can put the cosine of near-equal rows just past 1: clamp, as cosine_rows does
    row_cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-30).clamp(-1.0, 1.0)  # (B, L)
    ref_norm = torch.where(m, a, 0.0).double().pow(2).flatten(1).sum(1).sqrt()
    columns = [
        cosine_rows(pooled_v1, pooled_v2),
        (pooled_v1.double() - pooled_v2.double()).abs().mean(1),
        diff.flatten(1).amax(1).double(),
        finite_v1.double(),
        finite_v2.double(),
        torch.where(mask, row_cos, math.inf).amin(1).double(),
        (torch.where(mask, row_cos, 0.0).sum(1) / n_rows).double(),
        diff.double().pow(2).flatten(1).sum(1).sqrt() / ref_norm.clamp(min=1e-30),
        _row_quantiles(diff, m, mask.sum(1) * v1.shape[2], 0.999).double(),
        *[((diff <= atol) & m).flatten(1).sum(1).double() / n_elements for atol in ALLCLOSE_ATOLS],
    ]
    metrics = []
    for row in torch.stack(columns, dim=1).cpu().tolist():
        f1, f2 = bool(row[3]), bool(row[4])
        if f1 and f2:
            metrics.append(SequenceMetrics(row[0], row[1], row[2], True, True, *row[5:]))
        else:
            metrics.append(SequenceMetrics(math.nan, math.nan, math.nan, f1, f2))
    return BatchComparison(pooled_v1, pooled_v2, metrics)


def _row_quantiles(values: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor, q: float) -> torch.Tensor:
    """Each row's nearest-rank ``q`` quantile (the ``ceil(q n)``-th smallest of its ``n`` values,
    numpy's ``inverted_cdf``) of ``values`` ``(B, L, D)`` where ``mask`` ``(B, L, 1)`` is set
    (``counts`` ``(B,)`` of them); 0 for a row with none. One batched top-k: a masked gather and a
    selection per sequence cost a GPU a synchronisation and a one-block kernel each. The k-th
    smallest of n is the (n - k + 1)-th largest, and ``torch.quantile`` would refuse rows past
    2**24 values."""
    flat = torch.where(mask, values, -math.inf).flatten(1)  # (B, L*D): what a row does not have sorts last
    counts = counts.reshape(-1)
    k = torch.ceil(q * counts.double()).long().clamp(min=1)
    from_top = (counts - k).clamp(min=0)  # 0-based rank from the largest
    top = flat.topk(int(from_top.max()) + 1, dim=1).values  # sorted, largest first
    picked = top.gather(1, from_top[:, None])[:, 0]
    return torch.where(counts > 0, picked, torch.zeros_like(picked))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors in fp64 (see :func:`cosine_rows`)."""
    return float(cosine_rows(a[None], b[None])[0])


@dataclass
class PredictionSummary:
    n: int
    agreement: float  # fraction of sequences whose predicted label is the same on both paths
    disagreements: int
    pearson: float | None  # Pearson r of the confidences; None where undefined (n < 2 or constant)
    pearson_note: str | None
    mean_conf_diff: float
    max_conf_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


def prediction_summary(labels_v1, labels_v2, conf_v1, conf_v2) -> PredictionSummary:
    """Label agreement and confidence agreement over all sequences (arrays of length n)."""
    labels_v1, labels_v2 = np.asarray(labels_v1), np.asarray(labels_v2)
    conf_v1, conf_v2 = np.asarray(conf_v1, dtype=np.float64), np.asarray(conf_v2, dtype=np.float64)
    n = len(labels_v1)
    if n == 0:
        raise ValueError("no predictions to summarise")
    same = labels_v1 == labels_v2
    diff = np.abs(conf_v1 - conf_v2)
    pearson, note = None, None
    if n < 2:
        note = "undefined for fewer than 2 sequences"
    elif np.ptp(conf_v1) == 0 or np.ptp(conf_v2) == 0:
        note = "undefined: a path gave every sequence the same confidence"
    elif not (np.isfinite(conf_v1).all() and np.isfinite(conf_v2).all()):
        note = "undefined: non-finite confidences"
    else:
        pearson = _pearson(conf_v1, conf_v2)
    return PredictionSummary(
        n=n,
        agreement=float(same.mean()),
        disagreements=int((~same).sum()),
        pearson=pearson,
        pearson_note=note,
        mean_conf_diff=float(np.nanmean(diff)) if np.isfinite(diff).any() else math.nan,
        max_conf_diff=float(np.nanmax(diff)) if np.isfinite(diff).any() else math.nan,
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two fp64 vectors that are finite and not constant, as scipy's ``pearsonr``
    computes it (centred, each scaled to unit length, then their dot product, clipped to [-1, 1]);
    numpy alone keeps scipy.stats' import out of every check's start-up."""
    dx, dy = x - x.mean(), y - y.mean()
    dx, dy = dx / np.linalg.norm(dx), dy / np.linalg.norm(dy)
    return float(np.clip(dx @ dy, -1.0, 1.0))


def spread(values) -> dict[str, float]:
    """min / mean / max of finite values (NaN where there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return {"min": math.nan, "mean": math.nan, "max": math.nan}
    return {"min": float(arr.min()), "mean": float(arr.mean()), "max": float(arr.max())}


@dataclass
class HighPrecisionDistance:
    """One path's distance to the high-precision run (the report's ``reference``) for one sequence."""

    cosine: float  # pooled embedding cosine
    mad: float  # pooled embedding mean abs diff
    rel_l2: float  # ||path - ref|| / ||ref|| over the (L, D) residue rows
    pooled_rel_l2: float  # ||pooled path - pooled ref|| / ||pooled ref||: the pooling too

    def to_dict(self) -> dict:
        return asdict(self)


def distances_to_high_precision(
    path: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor, include_eos: bool = False
) -> list[HighPrecisionDistance]:
    """Per-sequence distance of ``path`` ``(B, L, D)`` to ``ref`` ``(B, L, D)``.

    ``include_eos`` pools the path as a buggy pipeline would (``ref`` never is).
    """
    mask = residue_mask(lengths, ref.shape[1])[..., None]
    a, r = path.double(), ref.double()
    pooled_path = mean_pool_batch(a, lengths, include_eos=include_eos).double()
    pooled_ref = mean_pool_batch(r, lengths).double()
    diff = torch.where(mask, a - r, 0.0).flatten(1).norm(dim=1)
    norm = torch.where(mask, r, 0.0).flatten(1).norm(dim=1).clamp(min=1e-300)
    pooled_rel = (pooled_path - pooled_ref).norm(dim=1) / pooled_ref.norm(dim=1).clamp(min=1e-300)
    cos, mad = cosine_rows(pooled_path, pooled_ref), (pooled_path - pooled_ref).abs().mean(1)
    rows = torch.stack([cos, mad, diff / norm, pooled_rel], 1)
    out = []
    for values in rows.cpu().tolist():
        out.append(
            HighPrecisionDistance(*values)
            if all(map(math.isfinite, values))
            else HighPrecisionDistance(math.nan, math.nan, math.nan, math.nan)
        )
    return out
