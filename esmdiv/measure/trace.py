"""Per-layer trace: where along the network do the two paths start to differ?

Layer 0 is the embedding (after token-dropout scaling), layers 1..N the transformer blocks; the
last carries the final layer norm, as in fair-esm. Statistics are over valid residue positions
of every audited sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

DEFAULT_TRACE_THRESHOLD = 1e-2  # rel-L2 at which a layer is named as "where it crossed"


@dataclass
class _LayerSums:
    max_abs_diff: float = 0.0
    sq_diff: float = 0.0
    sq_ref: float = 0.0
    cos_sum: float = 0.0
    cos_min: float = math.inf
    rows: int = 0
    nonfinite: bool = False


@dataclass
class TraceAccumulator:
    num_layers: int
    sums: list[_LayerSums] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sums = [_LayerSums() for _ in range(self.num_layers + 1)]

    def add(self, layer: int, v1: torch.Tensor, v2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fold one batch's layer in. ``v1``, ``v2``: ``(B, L, C)``; ``mask``: ``(B, L)`` residue rows.

        Returns ``(B,)`` bool: which sequences are non-finite at this layer on either path.
        """
        m = mask[..., None]
        a, b = v1.float(), v2.float()
        bad = ~((torch.isfinite(a) & torch.isfinite(b)) | ~m).flatten(1).all(1)
        ok = m & ~bad[:, None, None]
        diff = torch.where(ok, a - b, 0.0)
        # clamped: fp32 rounding can put the cosine of near-equal rows just past 1
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-30).clamp(-1.0, 1.0)
        row_ok = mask & ~bad[:, None]
        stats = (
            torch.stack(
                [
                    diff.abs().amax().double()
                    if diff.numel()
                    else torch.zeros((), dtype=torch.float64, device=a.device),
                    diff.double().pow(2).sum(),
                    torch.where(ok, a, 0.0).double().pow(2).sum(),
                    torch.where(row_ok, cos, 0.0).double().sum(),
                    torch.where(row_ok, cos, math.inf).amin().double(),
                    row_ok.sum().double(),
                ]
            )
            .cpu()
            .tolist()
        )
        s = self.sums[layer]
        s.max_abs_diff = max(s.max_abs_diff, stats[0])
        s.sq_diff += stats[1]
        s.sq_ref += stats[2]
        s.cos_sum += stats[3]
        s.cos_min = min(s.cos_min, stats[4])
        s.rows += int(stats[5])
        s.nonfinite |= bool(bad.any())
        return bad

    def merge(self, other: TraceAccumulator) -> None:
        """Fold in another rank's sums (distributed audits)."""
        for mine, theirs in zip(self.sums, other.sums):
            mine.max_abs_diff = max(mine.max_abs_diff, theirs.max_abs_diff)
            mine.sq_diff += theirs.sq_diff
            mine.sq_ref += theirs.sq_ref
            mine.cos_sum += theirs.cos_sum
            mine.cos_min = min(mine.cos_min, theirs.cos_min)
            mine.rows += theirs.rows
            mine.nonfinite |= theirs.nonfinite

    def result(self, threshold: float = DEFAULT_TRACE_THRESHOLD) -> dict:
        """The curve, the first layer whose rel-L2 exceeds ``threshold`` and the largest jump."""
        layers = []
        for index, s in enumerate(self.sums):
            rel = math.sqrt(s.sq_diff / s.sq_ref) if s.sq_ref > 0 else 0.0
            layers.append(
                {
                    "layer": index,
                    "max_abs_diff": s.max_abs_diff,
                    "rel_l2": rel,
                    "cosine": s.cos_sum / s.rows if s.rows else math.nan,
                    "cosine_min": s.cos_min if s.rows else math.nan,
                    "nonfinite": s.nonfinite,
                }
            )
        first = next((t["layer"] for t in layers if t["nonfinite"] or t["rel_l2"] > threshold), None)
        differing = next((t["layer"] for t in layers if t["rel_l2"] > 0 or t["nonfinite"]), None)
        # Growth from one layer to the next, where the layer before already differed (a jump
        # from exactly 0 is the first differing layer, reported on its own).
        jumps = [
            (layers[i]["rel_l2"] / layers[i - 1]["rel_l2"], i)
            for i in range(1, len(layers))
            if layers[i - 1]["rel_l2"] > 0
        ]
        jump_ratio, jump_layer = max(jumps) if jumps else (math.nan, None)
        return {
            "threshold": threshold,
            "first_layer_over": first,
            "first_differing_layer": differing,
            "largest_jump_layer": jump_layer,
            "largest_jump_ratio": jump_ratio,
            "layers": layers,
        }
