"""The evidence pass: what tells a wrong packed path from rounding, on a bounded sample by default.

The main pass compares the two paths in the run's dtype; some known bugs (tanh GELU, fp16 rotary
tables, positions that run on across a pack) change the output by no more than that dtype rounds,
so no v1/v2 threshold can see them. After the main pass, the sequences of the *evidence set* run
again:

1. **Other neighbours.** Both paths in the run's dtype (the packed path once per audited kernel),
   in seeded shuffled batches: how far each sequence's pooled embedding moves with its neighbours
   (the invariance gate).
2. **The high-precision run** (fp32 on CUDA, fp64 on CPU) of the same weights: each path's distance
   to it (the reference-ratio gate, and what excuses a cosine or MAD that the dtype alone explains),
   its labels, and the padded path's own rounding, from which every floor is made
   (:mod:`esmdiv.measure.noise`).
3. **The packed algorithm at high precision** (exact attention): its distance to the high-precision
   run is a difference of function, not of rounding (the algorithm gate). It is the same for every
   kernel, as are the high-precision run and the position probe: with several kernels they run once.
4. **The position probe**, on the sample only: one fp32 pack holds the sample twice, at its
   start and again :data:`PROBE_OFFSET` tokens later (filler between them), where positions reach
   the values a full production pack gives them. A correct path's output does not depend on where
   in a pack a sequence sits (rotary attention is relative within each sequence); one whose
   positions run on across the pack rounds its rotary angles at large positions in fp32 and moves.
   The two copies go through the same matrices; a second pack, the sample alone, measures what this
   machine's rounding moves a pooled embedding when the shapes change: the gate's floor, measured,
   not assumed. (One pack with both copies costs half the fp32 tokens of two packs with the
   filler in front and behind.)

The evidence set is, by ``--evidence``: ``sample`` (default) a deterministic sample of about
``--evidence-tokens`` tokens (the shortest and the longest sequences and lengths spread between)
plus every sequence that broke a per-sequence gate in the main pass on any kernel (up to
:data:`FLAGGED_FACTOR` times the sample's tokens); ``all`` every sequence; ``off`` none (then the
gates above do not run, and the report says which known bugs the run cannot see).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Set

import numpy as np
import torch

from esmdiv.audit.batch import AuditRun
from esmdiv.audit.results import SequenceResult
from esmdiv.forward.faults import Fault
from esmdiv.forward.high_precision import high_precision_forward
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import encode, encoder_table, pack, pad, to_padded
from esmdiv.forward.padded import padded_forward
from esmdiv.input.sequences import AuditSequence
from esmdiv.measure.decision import Thresholds
from esmdiv.measure.invariance import shuffled_batches
from esmdiv.measure.metrics import distances_to_high_precision, mean_pool_batch
from esmdiv.measure.noise import relative_pooled_error

EVIDENCE_MODES = ("sample", "all", "off")
DEFAULT_EVIDENCE_TOKENS = 4096
#: Filler tokens in front of the sample in the position probe: a default CUDA pack's worth, so the
#: probe's positions reach what production packs reach.
PROBE_OFFSET = 16384
FILLER_TOKENS = 256  # one filler sequence: BOS, 254 residues, EOS
FILLER_SEED = 0
#: Sequences flagged by the main pass may add at most this many times the sample's tokens.
FLAGGED_FACTOR = 4
_AMINO = "ACDEFGHIKLMNPQRSTVWY"


def choose_sample(lengths: dict[int, int], budget: int) -> set[int]:
    """A deterministic sample of about ``budget`` tokens: the shortest and the longest sequence
    always, then lengths spread evenly between them (ranks 1/2, 1/4, 3/4, 1/8, ... of the sorted
    lengths) while they fit in the budget. ``lengths``: record index -> tokens."""
    order = sorted(lengths, key=lambda i: (lengths[i], i))
    if not order:
        return set()
    chosen = {order[0], order[-1]}
    used = sum(lengths[i] for i in chosen)
    shortest = lengths[order[0]]
    denominator = 2
    while budget - used >= shortest and denominator < 2 * len(order):
        for numerator in range(1, denominator, 2):
            index = order[(numerator * (len(order) - 1)) // denominator]
            if index not in chosen and used + lengths[index] <= budget:
                chosen.add(index)
                used += lengths[index]
        denominator *= 2
    return chosen


def breaks_a_gate(thresholds: Thresholds) -> Callable[[SequenceResult], bool]:
    """Whether a sequence of the main pass broke a per-sequence gate on its own: a pooled cosine or
    MAD past its bar, or a label that differs between the paths on any head. (Non-finite output is
    FALLBACK whatever the high-precision run says: it is not sent to the evidence pass.)"""

    def broke(result: SequenceResult) -> bool:
        m = result.metrics
        if not (m.finite_v1 and m.finite_v2):
            return False
        flipped = any(p.label_v1 != p.label_v2 for p in result.predictions)
        return flipped or not m.cosine > thresholds.min_cosine or not m.mad < thresholds.max_mad

    return broke


def evidence_pass(run: AuditRun, sequences: list[AuditSequence], results: list[list[SequenceResult]]) -> None:
    """Steps 1 to 3 of the module docstring over ``sequences`` (the evidence set of this rank, in
    file order); fills each result's ``high_precision``, ``invariance``, ``rounding`` and its
    predictions' ``label_ref``. ``results``: one list per kernel (``run.kernels`` order). The padded
    rerun, the high-precision run and the packed algorithm at its precision (exact attention: the
    same for every kernel) run once; each kernel's packed path reruns with the same neighbours.
    Needs the main pass's pooled embeddings in ``run.pooled``."""
    by_index = [{r.index: r for r in rows} for rows in results]
    table = encoder_table(run.loaded.alphabet)
    tokens = [encode(s.sequence, run.loaded.alphabet, table) for s in sequences]
    for batch in shuffled_batches([len(t) for t in tokens], run.max_tokens):
        indices = [sequences[i].index for i in batch]
        _rerun(run, [tokens[i] for i in batch], [[rows[i] for i in indices] for rows in by_index])


def _rerun(run: AuditRun, tokens: list[torch.Tensor], results: list[list[SequenceResult]]) -> None:
    """One batch of the evidence pass: both paths with these neighbours (the packed path once per
    kernel), the high-precision run and the packed algorithm at its precision; each measure into
    its sequence's result of every kernel."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    last = model.num_layers
    n_tokens = sum(len(t) for t in tokens)
    eos_bug = Fault.EOS_IN_POOLING in run.faults
    lengths = torch.tensor([len(t) for t in tokens], device=run.device)
    padded = pad(tokens, alphabet.padding_idx).to(run.device)
    packed = pack(tokens).to(run.device)

    def both_paths():
        v1 = padded_forward(model, padded).representations[last]
        outs = [
            packed_forward(model, packed, kernel.backend, faults=run.faults, compile=run.compile)
            for kernel in run.kernels
        ]
        return v1, [to_padded(out.representations[last], packed) for out in outs]

    def high_precision():
        high = high_precision_forward(run.high_precision, padded)
        out = packed_forward(run.high_precision, packed, "reference", faults=run.faults)
        return high, to_padded(out.representations[last], packed)

    v1, v2s = run.timed("evidence", n_tokens, both_paths)
    high, algorithm = run.timed("high_precision", n_tokens, high_precision)
    pooled_v1 = mean_pool_batch(v1, lengths)
    pooled_high = mean_pool_batch(high, lengths)
    rounding_rel = relative_pooled_error(pooled_v1, pooled_high).tolist()
    rounding_abs = (pooled_v1.double() - pooled_high.double()).abs().amax(1).tolist()
    to_high_v1 = distances_to_high_precision(v1, high, lengths)
    to_high_algorithm = distances_to_high_precision(algorithm, high, lengths, eos_bug)
    record_index = torch.tensor([r.index for r in results[0]], device=run.device)
    labels_ref = [
        head.probabilities((pooled_high if head.input == "pooled" else high[:, 0]).float(), record_index)
        .argmax(1)
        .tolist()
        for head in run.heads
    ]
    pooled_v1 = pooled_v1.cpu()
    for k, (v2, rows) in enumerate(zip(v2s, results)):
        # Pooled as in the main pass (a pooling fault included), so only the neighbours differ.
        pooled_v2 = mean_pool_batch(v2, lengths, include_eos=eos_bug).cpu()
        to_high_v2 = distances_to_high_precision(v2, high, lengths, eos_bug)
        for j, result in enumerate(rows):
            first_v1, first_v2 = run.pooled[result.index]
            result.invariance = {
                "moved_v1": float((pooled_v1[j] - first_v1).abs().max()),
                "moved_v2": float((pooled_v2[j] - first_v2[k]).abs().max()),
            }
            result.high_precision = (to_high_v1[j], to_high_v2[j], to_high_algorithm[j])
            result.rounding = {"relative": rounding_rel[j], "absolute": rounding_abs[j]}
            for prediction, labels in zip(result.predictions, labels_ref):
                prediction.label_ref = labels[j]


def position_probe(
    run: AuditRun, model: torch.nn.Module, sequences: list[AuditSequence], results: list[list[SequenceResult]]
) -> None:
    """Step 4 of the module docstring over ``sequences`` (this rank's share of the sample): sets each
    result's ``position`` (:func:`_probe`), in every kernel's results (``results``: one list per
    kernel): the probe runs the packed algorithm with exact attention at fp32, the same for every
    kernel. ``model``: the fp32 model."""
    by_index = [{r.index: r for r in rows} for rows in results]
    table = encoder_table(run.loaded.alphabet)
    tokens = [encode(s.sequence, run.loaded.alphabet, table) for s in sequences]
    # at most half the offset a chunk: its second copy starts at the offset (a longer sequence alone
    # starts it further)
    for chunk in _chunks([len(t) for t in tokens], min(run.max_tokens, PROBE_OFFSET // 2)):
        for i, position in zip(chunk, _probe(run, model, [tokens[i] for i in chunk])):
            for rows in by_index:
                rows[sequences[i].index].position = dict(position)


def _probe(run: AuditRun, model: torch.nn.Module, tokens: list[torch.Tensor]) -> list:
    """Two packs of ``tokens`` at fp32: alone; and twice, at the start and again :data:`PROBE_OFFSET`
    positions later (further when ``tokens`` hold more than half of that), filler between. Per
    sequence, ``moved``: the relative pooled movement from its first copy to its second (the same
    matrices, further down); ``rounding``: from the pack alone to the first copy (other shapes, the
    same positions), what this machine's rounding alone moves a pooled embedding when a pack
    changes."""
    last = model.num_layers
    n = sum(len(t) for t in tokens)
    later = max(PROBE_OFFSET, n + FILLER_TOKENS)  # where the second copy starts
    eos_bug = Fault.EOS_IN_POOLING in run.faults
    lengths = torch.tensor([len(t) for t in tokens], device=run.device)
    alone = pack(tokens).to(run.device)
    twice = pack(tokens + filler_tokens(run.loaded.alphabet, later - n) + tokens).to(run.device)

    def forwards():
        by_alone, by_twice = (
            packed_forward(model, p, "reference", faults=run.faults).representations[last] for p in (alone, twice)
        )
        return by_alone, by_twice[:n], by_twice[later : later + n]

    outputs = run.timed("evidence", len(alone.input_ids) + len(twice.input_ids), forwards)
    alone_out, first, second = (mean_pool_batch(to_padded(o, alone), lengths, include_eos=eos_bug) for o in outputs)
    moved = relative_pooled_error(second, first).tolist()
    rounding = relative_pooled_error(first, alone_out).tolist()
    return [{"moved": m, "rounding": r} for m, r in zip(moved, rounding)]


def filler_tokens(alphabet, total: int) -> list[torch.Tensor]:
    """Seeded random protein sequences of ``total`` tokens in all: as few as hold them at
    :data:`FILLER_TOKENS` tokens at most each, their lengths as even as can be (for ``total`` of 3
    or more, none shorter than BOS, a residue, EOS)."""
    rng = random.Random(FILLER_SEED)
    table = encoder_table(alphabet)
    count = -(-total // FILLER_TOKENS)
    sizes = [total // count + (k < total % count) for k in range(count)] if count > 0 else []
    return [encode("".join(rng.choice(_AMINO) for _ in range(n - 2)), alphabet, table) for n in sizes]


def _chunks(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Consecutive indices grouped into chunks of at most ``max_tokens`` tokens (one at least)."""
    chunks: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if chunks[-1] and used + n > max_tokens:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += n
    return [c for c in chunks if c]


def probe_model(run: AuditRun) -> torch.nn.Module:
    """The model at fp32, the precision of the packed path's rotary tables: the run's own model
    when the run is fp32, the high-precision copy when that is fp32 (CUDA), else an fp32 copy."""
    model = run.loaded.model
    if model.embed_tokens.weight.dtype == torch.float32:
        return model
    if run.high_precision is not None and run.high_precision.embed_tokens.weight.dtype == torch.float32:
        return run.high_precision
    cached = getattr(run.loaded, "_fp32_copy", None)
    if cached is None:
        import copy

        cached = copy.deepcopy(model).float().eval()
        run.loaded._fp32_copy = cached  # type: ignore[attr-defined]
    return cached


def keep_for_evidence(sample: Set[int] | None) -> Callable[[SequenceResult, bool], bool]:
    """Which main-pass results keep their pooled embeddings for the evidence pass: the sample's
    (``None``: every sequence, ``--evidence all``) and the flagged ones."""
    return lambda result, flagged: flagged or sample is None or result.index in sample


def sample_summary(lengths: dict[int, int], chosen: Set[int]) -> dict:
    """The sample's size in sequences and tokens, and its shortest and longest length (residues)."""
    sizes = np.array([lengths[i] for i in chosen]) if chosen else np.array([0])
    return {
        "sequences": len(chosen),
        "tokens": int(sizes.sum()),
        "shortest_residues": int(sizes.min()) - 2 if chosen else None,
        "longest_residues": int(sizes.max()) - 2 if chosen else None,
    }
