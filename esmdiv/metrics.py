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
from scipy import stats


def residue_mask(lengths: torch.Tensor, width: int, include_eos: bool = False) -> torch.Tensor:
    """``(B, width)`` bool: True on residue rows (1 .. len-2; with ``include_eos`` also len-1)."""
    positions = torch.arange(width, device=lengths.device)[None, :]
    end = lengths[:, None] - (0 if include_eos else 1)
    return (positions >= 1) & (positions < end)


def mean_pool_batch(reps: torch.Tensor, lengths: torch.Tensor, include_eos: bool = False) -> torch.Tensor:
    """Mean over each sequence's residue rows: ``(B, L, D)`` -> ``(B, D)`` fp32.

    ``include_eos`` reproduces the known pooling bug (EOS averaged in).
    """
    mask = residue_mask(lengths, reps.shape[1], include_eos)
    total = (reps.float() * mask[..., None]).sum(1)
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


@dataclass
class SequenceMetrics:
    """Per-sequence embedding divergence between the padded (v1) and packed (v2) paths."""

    cosine: float  # cosine similarity of the mean-pooled embeddings
    mad: float  # mean absolute difference of the mean-pooled embeddings
    max_abs_diff: float  # largest absolute difference over every residue element
    finite_v1: bool
    finite_v2: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchComparison:
    """Embedding comparison of a batch; every field has B rows, pooled ones are on the device."""

    pooled_v1: torch.Tensor  # (B, D) fp32
    pooled_v2: torch.Tensor  # (B, D) fp32
    metrics: list[SequenceMetrics]


def compare_embeddings(v1: torch.Tensor, v2: torch.Tensor, lengths: torch.Tensor, include_eos_v2: bool = False) -> BatchComparison:
    """Compare two ``(B, L, D)`` batches of representations, each sequence over its own rows.

    ``lengths`` ``(B,)`` counts tokens (BOS and EOS included); rows past a length are padding and
    never read.
    """
    mask = residue_mask(lengths, v1.shape[1])
    pooled_v1 = mean_pool_batch(v1, lengths)
    pooled_v2 = mean_pool_batch(v2, lengths, include_eos=include_eos_v2)
    m = mask[..., None]
    finite_v1 = (torch.isfinite(v1) | ~m).flatten(1).all(1)
    finite_v2 = (torch.isfinite(v2) | ~m).flatten(1).all(1)
    max_abs = torch.where(m, (v1.float() - v2.float()).abs(), 0.0).flatten(1).amax(1)
    stats = torch.stack([
        cosine_rows(pooled_v1, pooled_v2),
        (pooled_v1.double() - pooled_v2.double()).abs().mean(1),
        max_abs.double(),
        finite_v1.double(),
        finite_v2.double(),
    ], dim=1).cpu().tolist()
    metrics = []
    for cos, mad, mx, f1, f2 in stats:
        if f1 and f2:
            metrics.append(SequenceMetrics(cos, mad, mx, True, True))
        else:
            metrics.append(SequenceMetrics(math.nan, math.nan, math.nan, bool(f1), bool(f2)))
    return BatchComparison(pooled_v1, pooled_v2, metrics)


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
        pearson = float(stats.pearsonr(conf_v1, conf_v2).statistic)
    return PredictionSummary(
        n=n,
        agreement=float(same.mean()),
        disagreements=int((~same).sum()),
        pearson=pearson,
        pearson_note=note,
        mean_conf_diff=float(np.nanmean(diff)) if np.isfinite(diff).any() else math.nan,
        max_conf_diff=float(np.nanmax(diff)) if np.isfinite(diff).any() else math.nan,
    )


def spread(values) -> dict[str, float]:
    """min / mean / max of finite values (NaN where there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return {"min": math.nan, "mean": math.nan, "max": math.nan}
    return {"min": float(arr.min()), "mean": float(arr.mean()), "max": float(arr.max())}
