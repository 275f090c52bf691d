"""Batch and packing invariance: does a sequence's embedding depend on its neighbours?

After the main pass, every sequence runs again on both paths in a shuffled order, batched
greedily in that order (other partners in each padded batch, other neighbours and offsets in
each pack). Each sequence's pooled embedding is compared with its first-pass one. A path whose
output moves with its neighbours is a finding in itself: its numbers are not a function of the
sequence alone.
"""

from __future__ import annotations

import numpy as np
import torch

from esmdiv.input.fasta import iter_fasta
from esmdiv.forward.faults import Fault
from esmdiv.input.sequences import InputReport, iter_sequences
from esmdiv.measure.metrics import mean_pool_batch
from esmdiv.forward.packing import cut_batches, encode, encoder_table, pack, pad, to_padded
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.padded import padded_forward

INVARIANCE_SEED = 1


def shuffled_batches(lengths: list[int], max_tokens: int, seed: int = INVARIANCE_SEED) -> list[list[int]]:
    """A seeded permutation cut greedily into batches of at most ``max_tokens`` padded tokens."""
    return cut_batches(np.random.default_rng(seed).permutation(len(lengths)).tolist(), lengths, max_tokens)


def run_invariance(run, config, results) -> None:
    """Second pass in another order; sets each result's ``invariance`` (its pooled embeddings'
    movement on each path). Only the sequences of ``results`` run (a rank's shard)."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    table = encoder_table(alphabet)
    mine = {r.index for r in results}
    sequences = [s for s in iter_sequences(iter_fasta(config.fasta), InputReport(str(config.fasta)), config.long_policy)
                 if s.index in mine]
    tokens = [encode(s.sequence, alphabet, table) for s in sequences]
    moved: dict[int, tuple[float, float]] = {}
    for batch in shuffled_batches([len(t) for t in tokens], run.max_tokens):
        batch_tokens = [tokens[i] for i in batch]
        lengths = torch.tensor([len(t) for t in batch_tokens], device=run.device)
        packed = pack(batch_tokens).to(run.device)
        v1 = padded_forward(model, pad(batch_tokens, alphabet.padding_idx).to(run.device)).representations[model.num_layers]
        v2 = packed_forward(model, packed, run.backend, faults=run.faults, compile=run.compile).representations[model.num_layers]
        pooled_v1 = mean_pool_batch(v1, lengths).cpu()
        # Pooled as in the main pass (a pooling fault included), so only the neighbours differ.
        pooled_v2 = mean_pool_batch(to_padded(v2, packed), lengths, include_eos=Fault.EOS_IN_POOLING in run.faults).cpu()
        for j, i in enumerate(batch):
            first_v1, first_v2 = run.pooled[sequences[i].index]
            moved[sequences[i].index] = (
                float((pooled_v1[j] - first_v1).abs().max()),
                float((pooled_v2[j] - first_v2).abs().max()),
            )
    for r in results:
        m1, m2 = moved[r.index]
        r.invariance = {"moved_v1": m1, "moved_v2": m2}


def invariance_summary(results) -> dict:
    """The run's invariance block from the per-sequence movements."""
    v1s = np.array([r.invariance["moved_v1"] for r in results])
    v2s = np.array([r.invariance["moved_v2"] for r in results])
    return {
        "seed": INVARIANCE_SEED,
        "padded": {"max_moved": float(v1s.max()), "mean_moved": float(v1s.mean()), "sequences_moved": int((v1s > 0).sum())},
        "packed": {"max_moved": float(v2s.max()), "mean_moved": float(v2s.mean()), "sequences_moved": int((v2s > 0).sum())},
        "n": len(results),
        "note": "max |pooled embedding (second pass, shuffled neighbours) - pooled embedding (first pass)| per sequence",
    }
