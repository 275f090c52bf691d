"""Prediction heads, applied in fp32 to each path's output so label agreement can be measured.

- ``proxy``: the original validation's stand-in, ``torch.manual_seed(42)`` then
  ``Linear(embed_dim, 2)`` on the mean-pooled embedding, softmax.
- ``model``: the checkpoint's own classifier, a Hugging Face ``EsmClassificationHead``
  (dense, tanh, out_proj) on the last layer's ``<cls>`` row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from esmdiv.errors import UsageError

HEAD_CHOICES = ("auto", "proxy", "model")


@dataclass
class Head:
    """A classifier over one feature per sequence: ``input`` is ``"pooled"`` or ``"cls"``."""

    name: str
    input: str
    module: nn.Module

    def to(self, device: torch.device) -> "Head":
        self.module.to(device=device, dtype=torch.float32)
        return self

    @torch.inference_mode()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` features -> ``(N, C)`` class probabilities, fp32."""
        return torch.softmax(self.module(features.float()), dim=-1)


def proxy_head(embed_dim: int, seed: int = 42) -> Head:
    """The seed's proxy classifier; draws its weights without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(embed_dim, 2)
    return Head(f"proxy (seeded random Linear({embed_dim}, 2), seed {seed})", "pooled", linear.eval())


class EsmClassificationHead(nn.Module):
    """transformers' ``EsmClassificationHead`` at inference (its dropout is inactive)."""

    def __init__(self, embed_dim: int, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, num_labels)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(cls)))


def classification_head(state: dict[str, torch.Tensor]) -> Head:
    num_labels, embed_dim = state["out_proj.weight"].shape
    module = EsmClassificationHead(embed_dim, num_labels)
    module.load_state_dict(state)
    return Head(f"model (checkpoint's EsmClassificationHead, {num_labels} classes, on <cls>)", "cls", module.eval())


def choose_head(choice: str, loaded) -> Head:
    """``auto``: the checkpoint's own head where it has one, else the proxy."""
    if choice not in HEAD_CHOICES:
        raise UsageError(f"unknown --head '{choice}' (choose {', '.join(HEAD_CHOICES)})")
    if choice == "model" and loaded.classifier is None:
        raise UsageError(f"--head model: {loaded.info.spec} has no classification head; use --head proxy")
    if choice in ("model", "auto") and loaded.classifier is not None:
        return classification_head(loaded.classifier)
    return proxy_head(loaded.info.embed_dim)


def confidence(probs: torch.Tensor, reference_labels: torch.Tensor) -> torch.Tensor:
    """Confidence per sequence: P(class 1) for a binary head, else P(reference path's label)."""
    if probs.shape[1] == 2:
        return probs[:, 1]
    return probs.gather(1, reference_labels[:, None])[:, 0]
