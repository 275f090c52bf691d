"""Shared test helpers: run both paths on a model and compare per sequence."""

import random

import pytest
import torch

from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import encode, pack, pad
from esmdiv.forward.padded import padded_forward
from esmdiv.measure.metrics import mean_pool

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def random_sequences(lengths, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(AMINO) for _ in range(n)) for n in lengths]


def both_paths(loaded, sequences, backend="reference", faults=frozenset(), device="cpu"):
    """Per-sequence ``(L+2, D)`` fp32 representations from the padded and packed paths."""
    model, alphabet = loaded.model, loaded.alphabet
    tokens = [encode(s, alphabet) for s in sequences]
    last = model.num_layers
    v1 = padded_forward(model, pad(tokens, alphabet.padding_idx).to(device)).representations[last]
    packed = pack(tokens)
    v2 = packed_forward(model, packed.to(device), backend, faults=faults).representations[last]
    lengths = [len(t) for t in tokens]
    return [v1[i, :n].float().cpu() for i, n in enumerate(lengths)], [r.float().cpu() for r in torch.split(v2, lengths)]


def max_residue_diff(reps_v1, reps_v2):
    return max(float((a - b).abs().max()) for a, b in zip(reps_v1, reps_v2))


def max_pooled_mad(reps_v1, reps_v2, include_eos=False):
    return max(
        float((mean_pool(a) - mean_pool(b, include_eos=include_eos)).abs().mean()) for a, b in zip(reps_v1, reps_v2)
    )


def rows_whose_self_cosine_exceeds_one() -> torch.Tensor:
    """Up to 64 random fp32 rows whose cosine_similarity with themselves rounds above 1 (by up to
    4e-7 on some CPUs); skips the test where this CPU never rounds so."""
    rows = torch.randn(3000, 320, generator=torch.Generator().manual_seed(3))
    rows = rows[torch.nn.functional.cosine_similarity(rows, rows, dim=-1, eps=1e-30) > 1][:64]
    if not len(rows):
        pytest.skip("this CPU's fp32 cosine_similarity never rounds above 1")
    return rows
