"""Batch and packing invariance: does a sequence's embedding depend on its neighbours?

After the main pass, every sequence runs again on both paths in a shuffled order, batched
greedily in that order (other partners in each padded batch, other neighbours and offsets in
each pack). Each sequence's pooled embedding is compared with its first-pass one. A path whose
output moves with its neighbours is a finding in itself: its numbers are not a function of the
sequence alone.

This module chooses the second order and summarises the movements; the second pass itself runs
in :func:`esmdiv.audit.batch.invariance_pass`.
"""

from __future__ import annotations

import numpy as np

from esmdiv.forward.packing import cut_batches

INVARIANCE_SEED = 1


def shuffled_batches(lengths: list[int], max_tokens: int, seed: int = INVARIANCE_SEED) -> list[list[int]]:
    """A seeded permutation cut greedily into batches of at most ``max_tokens`` padded tokens."""
    return cut_batches(np.random.default_rng(seed).permutation(len(lengths)).tolist(), lengths, max_tokens)


def invariance_summary(results) -> dict:
    """The run's invariance block from the per-sequence movements."""
    v1s = np.array([r.invariance["moved_v1"] for r in results])
    v2s = np.array([r.invariance["moved_v2"] for r in results])
    return {
        "seed": INVARIANCE_SEED,
        "padded": {
            "max_moved": float(v1s.max()),
            "mean_moved": float(v1s.mean()),
            "sequences_moved": int((v1s > 0).sum()),
        },
        "packed": {
            "max_moved": float(v2s.max()),
            "mean_moved": float(v2s.mean()),
            "sequences_moved": int((v2s > 0).sum()),
        },
        "n": len(results),
        "note": "max |pooled embedding (second pass, shuffled neighbours) - pooled embedding (first pass)| "
        "per sequence",
    }
