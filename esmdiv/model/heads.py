"""Prediction heads, applied in fp32 to each path's output so label agreement can be measured.

- ``proxy``: the original validation's stand-in, ``torch.manual_seed(seed)`` then
  ``Linear(embed_dim, 2)`` on the mean-pooled embedding, softmax; several seeds
  (``--proxy-seeds 42,43,44``) so no one lucky random head decides.
- ``model``: the checkpoint's own classifier, a Hugging Face ``EsmClassificationHead``
  (dense, tanh, out_proj) on the last layer's ``<cls>`` row.
- a file: a user's classifier, the state dict of a ``Linear`` or of an MLP (a chain of Linears
  whose sizes are read from the weights; ``--head-activation`` between them) on the pooled
  embedding, optionally with extra per-sequence features (``--extra-features``) concatenated
  in front of it, as a real downstream model is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esmdiv.errors import CheckpointError, InputError, UsageError

HEAD_CHOICES = ("auto", "proxy", "model")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


@dataclass
class Head:
    """A classifier over one feature vector per sequence.

    ``input``: ``"pooled"`` (mean-pooled residues) or ``"cls"`` (the ``<cls>`` row).
    ``extra_features``: ``(n_records, k)`` array concatenated before the embedding, or None.
    """

    name: str
    input: str
    module: nn.Module
    extra_features: torch.Tensor | None = None

    def to(self, device: torch.device) -> Head:
        self.module.to(device=device, dtype=torch.float32)
        if self.extra_features is not None:
            self.extra_features = self.extra_features.to(device)
        return self

    @torch.inference_mode()
    def probabilities(self, features: torch.Tensor, record_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, D)`` features (rows of records ``record_index``) -> ``(N, C)`` class probabilities."""
        x = features.float()
        if self.extra_features is not None:
            x = torch.cat([self.extra_features[record_index], x], dim=1)
        out = self.module(x)
        if out.shape[1] == 1:  # a single logit: binary with a sigmoid
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(out, dim=-1)


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


def file_head(path: Path, embed_dim: int, activation: str = "relu", extra: np.ndarray | None = None) -> Head:
    """A Linear or MLP from a ``.pt`` / ``.safetensors`` state dict, sizes read from its weights."""
    from esmdiv.model.loading import load_state_file

    if activation not in ACTIVATIONS:
        raise UsageError(f"--head-activation '{activation}' (choose {', '.join(ACTIVATIONS)})")
    state = load_state_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    weights = [k for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    if path.suffix == ".safetensors":  # stored sorted as text ('10.weight' before '2.weight'): index order
        weights.sort(key=lambda k: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", k)])
    used = set(weights) | {k[: -len("weight")] + "bias" for k in weights}
    if not weights or set(tensors) - used:
        extra_keys = sorted(set(tensors) - used)
        raise CheckpointError(
            f"{path}: not a Linear or MLP state dict"
            + (f" (unsupported keys: {', '.join(extra_keys[:4])})" if extra_keys else " (no 2-D weights)")
        )
    layers: list[nn.Module] = []
    width = embed_dim + (0 if extra is None else extra.shape[1])
    for i, key in enumerate(weights):
        weight = tensors[key].float()
        if weight.shape[1] != width:
            expected = f"{embed_dim} embedding dims" + ("" if extra is None else f" + {extra.shape[1]} extra features")
            raise CheckpointError(
                f"{path}: layer '{key}' takes {weight.shape[1]} inputs where {width} arrive ({expected})"
                if i == 0
                else f"{path}: layer '{key}' takes {weight.shape[1]} inputs, the layer before gives {width}"
            )
        bias = tensors.get(key[: -len("weight")] + "bias")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias.float())
        if layers:
            layers.append(ACTIVATIONS[activation]())
        layers.append(linear)
        width = weight.shape[0]
    sizes = " -> ".join([str(tensors[weights[0]].shape[1])] + [str(tensors[k].shape[0]) for k in weights])
    features = None if extra is None else torch.from_numpy(np.ascontiguousarray(extra, dtype=np.float32))
    label = (
        f"file {path.name} (MLP {sizes}, {activation}"
        + (f", {extra.shape[1]} extra features first" if extra is not None else "")
        + ")"
    )
    return Head(label, "pooled", nn.Sequential(*layers).eval(), features)


def load_extra_features(path: Path, n_records: int) -> np.ndarray:
    """A ``(n_records, k)`` float array from a ``.npy`` file, one row per FASTA record in file order."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if array.ndim != 2 or array.shape[0] != n_records:
        raise InputError(
            f"{path}: shape {array.shape}; expected ({n_records}, k): one row per FASTA record, in file order"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise InputError(f"{path}: extra features must be finite numbers")
    return array


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--proxy-seeds "42,43,44"`` -> ``(42, 43, 44)``; checked before any model loads."""
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--proxy-seeds '{text}': expected comma-separated integers such as 42,43,44") from None
    if not seeds:
        raise UsageError("--proxy-seeds needs at least one seed")
    return seeds


def build_heads(
    choice: str,
    loaded,
    proxy_seeds: tuple[int, ...] = (42,),
    activation: str = "relu",
    extra: np.ndarray | None = None,
) -> list[Head]:
    """The heads of a run. ``auto``: the checkpoint's own head where it has one, else the proxies."""
    if extra is not None and choice in HEAD_CHOICES:
        raise UsageError("--extra-features needs a head file (--head PATH) that takes them")
    if choice not in HEAD_CHOICES:
        path = Path(choice)
        if not path.is_file():
            raise UsageError(f"--head '{choice}': not auto, proxy, model or an existing head file")
        return [file_head(path, loaded.info.embed_dim, activation, extra)]
    if choice == "model" and loaded.classifier is None:
        raise UsageError(f"--head model: {loaded.info.spec} has no classification head; use --head proxy")
    if choice in ("model", "auto") and loaded.classifier is not None:
        return [classification_head(loaded.classifier)]
    if not proxy_seeds:
        raise UsageError("--proxy-seeds needs at least one seed")
    return [proxy_head(loaded.info.embed_dim, seed) for seed in proxy_seeds]


def confidence(probs: torch.Tensor, reference_labels: torch.Tensor) -> torch.Tensor:
    """Confidence per sequence: P(class 1) for a binary head, else P(reference path's label)."""
    if probs.shape[1] == 2:
        return probs[:, 1]
    return probs.gather(1, reference_labels[:, None])[:, 0]
