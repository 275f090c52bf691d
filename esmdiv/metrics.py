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


def mean_pool(rep: torch.Tensor, include_eos: bool = False) -> torch.Tensor:
    """Mean over residue rows of a ``(L+2, D)`` representation -> ``(D,)`` fp32.

    ``include_eos`` reproduces the known pooling bug (EOS averaged in).
    """
    end = rep.shape[0] if include_eos else rep.shape[0] - 1
    return rep[1:end].double().mean(0).float()


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


def embedding_metrics(rep_v1: torch.Tensor, rep_v2: torch.Tensor, pooled_v1: torch.Tensor, pooled_v2: torch.Tensor) -> SequenceMetrics:
    """Compare one sequence. ``rep_*``: ``(L+2, D)``; ``pooled_*``: ``(D,)``."""
    residues_v1, residues_v2 = rep_v1[1:-1].float(), rep_v2[1:-1].float()
    finite_v1 = bool(torch.isfinite(residues_v1).all())
    finite_v2 = bool(torch.isfinite(residues_v2).all())
    if not (finite_v1 and finite_v2):
        return SequenceMetrics(math.nan, math.nan, math.nan, finite_v1, finite_v2)
    return SequenceMetrics(
        cosine=cosine(pooled_v1, pooled_v2),
        mad=float((pooled_v1.double() - pooled_v2.double()).abs().mean()),
        max_abs_diff=float((residues_v1 - residues_v2).abs().max()) if len(residues_v1) else 0.0,
        finite_v1=finite_v1,
        finite_v2=finite_v2,
    )


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity in fp64; 1.0 for two zero vectors, 0.0 if only one is zero."""
    a, b = a.double(), b.double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(torch.clamp((a @ b) / (na * nb), -1.0, 1.0))


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
