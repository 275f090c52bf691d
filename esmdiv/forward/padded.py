"""v1, the padded path: fair-esm's own forward on a right-padded batch (bmm attention with a key
padding mask). It is the baseline the packed path is audited against, and :class:`ForwardOutput` is
what both paths return.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ForwardOutput:
    """``representations[layer]``: padded ``(B, L, C)`` or packed ``(T, C)``; layer ``num_layers``
    carries the final layer norm, as in fair-esm. ``logits`` (same leading shape, vocab last)
    when asked for."""

    representations: dict[int, torch.Tensor]
    logits: torch.Tensor | None = None


@torch.inference_mode()
def padded_forward(model, tokens: torch.Tensor, repr_layers=None, need_logits: bool = False) -> ForwardOutput:
    """fair-esm's forward. ``tokens``: ``(B, L)`` int64, right-padded with ``padding_idx``."""
    layers = [model.num_layers] if repr_layers is None else list(repr_layers)
    result = model(tokens, repr_layers=layers)
    return ForwardOutput(result["representations"], result["logits"] if need_logits else None)
