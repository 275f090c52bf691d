"""One batch of an audit: both forwards, then every per-sequence measure.

:func:`compare_batch` goes through the stages a batch records, in order: the padded path once and
each audited kernel's packed path, their pooled comparison, the per-layer trace, the MLM metrics,
the prediction heads (per kernel); after the main pass, :func:`perplexity_pass` scores the
masked-perplexity sample. :class:`AuditRun` holds what every batch needs and what the
batches accumulate (per kernel: :class:`KernelRun`), including what the evidence pass
(:mod:`esmdiv.audit.evidence`) needs afterwards: the pooled embeddings of the sequences it reruns.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

import torch

from esmdiv.audit.results import Prediction, SequenceResult
from esmdiv.forward.device import synchronize
from esmdiv.forward.faults import Fault
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import Packed, batches_by_tokens, encode, encoder_table, pack, pad, to_padded
from esmdiv.forward.padded import ForwardOutput, padded_forward
from esmdiv.input.sequences import AuditSequence
from esmdiv.measure.metrics import BatchComparison, compare_embeddings, residue_mask
from esmdiv.measure.mlm import PerplexitySums, masked_copy, masked_nll, token_agreement
from esmdiv.measure.trace import TraceAccumulator
from esmdiv.model.heads import Head, confidence
from esmdiv.model.loading import LoadedModel


class Progress(Protocol):
    """Told of each path's work as it happens: ``start(total_tokens)`` once, then ``advance``."""

    def start(self, total_tokens: int) -> None: ...

    def advance(self, path: str, tokens: int, seconds: float) -> None: ...


@dataclass
class KernelRun:
    """One attention kernel's packed path within an audit, and what it accumulates."""

    backend: str
    trace: TraceAccumulator | None = None
    perplexity: PerplexitySums = field(default_factory=PerplexitySums)
    seconds: float = 0.0  # its packed forwards in the main pass
    finished: list[SequenceResult] = field(default_factory=list)  # grows batch by batch


@dataclass
class AuditRun:
    """What every batch of one audit needs, and what it accumulates.

    ``backends``: the attention kernels audited (one, or several compared with the same padded
    reference: the padded forward runs once per batch, each kernel's packed forward on the same
    batch); each has its :class:`KernelRun` in ``kernels``, in the same order.
    """

    loaded: LoadedModel
    device: torch.device
    backends: tuple[str, ...] | str
    heads: list[Head]
    faults: AbstractSet[Fault]
    progress: Progress | None = None
    high_precision: torch.nn.Module | None = None  # the fp32/fp64 copy of the model (the evidence pass)
    trace: bool = False  # --trace: a per-layer accumulator per kernel
    mlm: bool = False
    mlm_sample: int = 0
    compile: bool = False
    compile_reason: str = ""
    fc1: str = ""  # what the packed path runs fc1 and its GELU with (esmdiv.forward.mlp)
    max_tokens: int = 0  # the token budget the main pass ended with (the evidence pass reuses it)
    # For the evidence pass: which sequences broke a per-sequence gate on any kernel (``flag``),
    # whose pooled embeddings to keep (``keep(result, flagged)``), and how many flagged tokens it
    # may take.
    flag: Callable[[SequenceResult], bool] | None = None
    keep: Callable[[SequenceResult, bool], bool] | None = None
    flag_budget: int = 0
    flagged: list[int] = field(default_factory=list)
    flagged_tokens: int = 0
    # record index -> (padded pooled embedding, each kernel's packed pooled embedding)
    pooled: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = field(default_factory=dict)
    seconds: dict = field(
        default_factory=lambda: {"padded": 0.0, "packed": 0.0, "high_precision": 0.0, "evidence": 0.0, "mlm": 0.0}
    )
    kernels: list[KernelRun] = field(init=False)

    def __post_init__(self) -> None:
        self.backends = (self.backends,) if isinstance(self.backends, str) else tuple(self.backends)
        layers = self.loaded.info.num_layers
        self.kernels = [KernelRun(b, TraceAccumulator(layers) if self.trace else None) for b in self.backends]

    def timed(self, path: str, tokens: int, fn, kernel: KernelRun | None = None):
        """Run ``fn`` and add its seconds to ``path`` (and to ``kernel``'s, for a packed forward);
        the progress bar follows the padded path and the first kernel."""
        start = time.perf_counter()
        out = fn()
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.seconds[path] += elapsed
        if kernel is not None:
            kernel.seconds += elapsed
        if self.progress and (kernel is None or kernel is self.kernels[0]):
            self.progress.advance(path, tokens, elapsed)
        return out


def warm_up(run: AuditRun) -> None:
    """Tiny batches through the padded path and every kernel, untimed: kernel loading (a kernel
    compiled at run time, FlashAttention-4, compiling its first shape; and, when the packed path is
    compiled, both of its compilations: the first shape, then the dynamic-shape graph that the
    second shape makes) stays out of the forwards' timings, and a kernel that cannot run here fails
    now, before any sequence is audited."""
    alphabet = run.loaded.alphabet
    for residues in ("MKTAYIAKVL", "MKTAYIAKVLGLFDIV")[: 2 if run.compile else 1]:
        tokens = [encode(residues, alphabet)]
        padded_forward(run.loaded.model, pad(tokens, alphabet.padding_idx).to(run.device))
        for kernel in run.kernels:
            packed_forward(run.loaded.model, pack(tokens).to(run.device), kernel.backend, compile=run.compile)
    synchronize(run.device)


@dataclass
class _Side:
    """One kernel's packed output on a batch and its last-layer comparison with the padded path."""

    out_v2: ForwardOutput
    v2: torch.Tensor  # (B, L, C) last layer, packed path laid out padded
    comparison: BatchComparison


@dataclass
class _Batch:
    """The padded output on one batch, each kernel's packed output, and their comparisons."""

    padded: torch.Tensor  # (B, L) tokens
    packed: Packed
    n_tokens: int
    layers: list[int]  # the layers whose hidden states were kept (all with --trace)
    out_v1: ForwardOutput
    v1: torch.Tensor  # (B, L, C) last layer, padded path
    lengths: torch.Tensor  # (B,) tokens per sequence
    mask: torch.Tensor  # (B, L) residue rows
    sides: list[_Side]  # one per kernel, in run.kernels order
    eos_bug: bool  # the EOS-in-pooling fault is on: the packed side pools as the bug would

    @property
    def size(self) -> int:
        return len(self.lengths)


def compare_batch(
    run: AuditRun, sequences: list[AuditSequence], tokens: list[torch.Tensor]
) -> list[list[SequenceResult]]:
    """The padded path once and every kernel's packed path over one batch, then every
    per-sequence measurement: one list of results per kernel (in ``run.kernels`` order)."""
    batch = _forwards(run, tokens)
    record_index = torch.tensor([s.index for s in sequences], device=run.device)
    none = [None] * batch.size
    per_kernel = []
    for kernel, side in zip(run.kernels, batch.sides):
        first_bad = _trace(run, kernel, batch, side) if kernel.trace else none
        mlm = run.timed("mlm", 0, functools.partial(_token_metrics, batch, side)) if run.mlm else none
        predictions = [_predict(head, batch, side, record_index) for head in run.heads]
        per_kernel.append(
            [
                SequenceResult(
                    id=s.id,
                    index=s.index,
                    length=len(s.sequence),
                    original_length=s.original_length,
                    metrics=side.comparison.metrics[j],
                    predictions=[p[j] for p in predictions],
                    mlm=mlm[j],
                    first_nonfinite_layer=first_bad[j],
                )
                for j, s in enumerate(sequences)
            ]
        )
    _keep_for_evidence(run, batch, per_kernel)
    return per_kernel


def _keep_for_evidence(run: AuditRun, batch: _Batch, per_kernel: list[list[SequenceResult]]) -> None:
    """Note the sequences that broke a gate on any kernel (while the flagged budget lasts) and keep
    the pooled embeddings the evidence pass will compare its own with."""
    for j in range(batch.size):
        results = [rows[j] for rows in per_kernel]
        result = results[0]
        flagged = False
        if run.flag is not None and any(map(run.flag, results)):
            if run.flagged_tokens + result.length + 2 <= run.flag_budget:
                flagged = True
                run.flagged.append(result.index)
                run.flagged_tokens += result.length + 2
        if run.keep is not None and run.keep(result, flagged):
            run.pooled[result.index] = (
                batch.sides[0].comparison.pooled_v1[j].cpu(),
                tuple(side.comparison.pooled_v2[j].cpu() for side in batch.sides),
            )


def _forwards(run: AuditRun, tokens: list[torch.Tensor]) -> _Batch:
    """The padded forward, then each kernel's packed forward, timed, and their pooled and residue
    comparisons."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    last = model.num_layers
    layers = list(range(last + 1)) if run.trace else [last]
    n_tokens = sum(len(t) for t in tokens)
    padded = pad(tokens, alphabet.padding_idx).to(run.device)
    packed = pack(tokens).to(run.device)
    out_v1 = run.timed("padded", n_tokens, lambda: padded_forward(model, padded, layers, need_logits=run.mlm))
    outputs = [
        run.timed(
            "packed",
            n_tokens,
            lambda kernel=kernel: packed_forward(
                model, packed, kernel.backend, layers, need_logits=run.mlm, faults=run.faults, compile=run.compile
            ),
            kernel,
        )
        for kernel in run.kernels
    ]
    v1 = out_v1.representations[last]
    lengths = torch.tensor([len(t) for t in tokens], device=run.device)
    mask = residue_mask(lengths, v1.shape[1])
    eos_bug = Fault.EOS_IN_POOLING in run.faults
    sides = []
    for out_v2 in outputs:
        v2 = to_padded(out_v2.representations[last], packed)
        sides.append(_Side(out_v2, v2, compare_embeddings(v1, v2, lengths, include_eos_v2=eos_bug)))
    return _Batch(padded, packed, n_tokens, layers, out_v1, v1, lengths, mask, sides, eos_bug)


def _trace(run: AuditRun, kernel: KernelRun, batch: _Batch, side: _Side) -> list[int | None]:
    """Add every layer to the kernel's trace; each sequence's first layer with a non-finite output."""
    first_bad: list[int | None] = [None] * batch.size
    last = run.loaded.model.num_layers
    for layer in batch.layers:
        v2_layer = side.v2 if layer == last else to_padded(side.out_v2.representations[layer], batch.packed)
        bad = kernel.trace.add(layer, batch.out_v1.representations[layer], v2_layer, batch.mask)
        for j in torch.nonzero(bad).flatten().tolist():
            first_bad[j] = layer if first_bad[j] is None else first_bad[j]
    return first_bad


def _token_metrics(batch: _Batch, side: _Side) -> list[dict | None]:
    """Top-1 agreement and JS divergence of the token distributions."""
    top1, js = token_agreement(batch.out_v1.logits, to_padded(side.out_v2.logits, batch.packed), batch.mask)
    return [{"top1_agreement": a, "js": d} for a, d in zip(top1.tolist(), js.tolist())]


def _predict(head: Head, batch: _Batch, side: _Side, record_index: torch.Tensor) -> list[Prediction]:
    """One head over both paths: a Prediction per sequence."""
    comparison = side.comparison
    if head.input == "pooled":
        features = [comparison.pooled_v1, comparison.pooled_v2]
    else:
        features = [batch.v1[:, 0], side.v2[:, 0]]
    probs = [head.probabilities(f.float(), record_index) for f in features]
    labels = [p.argmax(1) for p in probs]
    conf_v1, conf_v2 = confidence(probs[0], labels[0]).tolist(), confidence(probs[1], labels[0]).tolist()
    label_v1, label_v2 = labels[0].tolist(), labels[1].tolist()
    return [Prediction(label_v1[j], label_v2[j], conf_v1[j], conf_v2[j]) for j in range(len(conf_v1))]


def perplexity_pass(run: AuditRun, sequences: list[AuditSequence]) -> None:
    """The masked-perplexity sample: 15 % of the residues of ``sequences`` (the sample's, in this
    process) masked, and the true tokens scored on the padded path and every kernel, in batches of
    the run's token budget. A pass of its own after the main one: its sequences are the first in
    the file, spread over the main pass's length-sorted batches, where they cost a small extra
    forward in each."""
    if not sequences:
        return
    alphabet = run.loaded.alphabet
    table = encoder_table(alphabet)
    tokens = [encode(s.sequence, alphabet, table) for s in sequences]
    for batch in batches_by_tokens([len(t) for t in tokens], run.max_tokens):
        chosen, chosen_tokens = [sequences[i] for i in batch], [tokens[i] for i in batch]
        run.timed("mlm", 0, functools.partial(_perplexity_batch, run, chosen, chosen_tokens))


def _perplexity_batch(run: AuditRun, sequences: list[AuditSequence], tokens: list[torch.Tensor]) -> None:
    """One batch of :func:`perplexity_pass`: every forward first, then each sequence's sums."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    masked = [masked_copy(t, s.index, alphabet.mask_idx) for s, t in zip(sequences, tokens)]
    batch = [m for m, _ in masked]
    logits_v1 = padded_forward(model, pad(batch, alphabet.padding_idx).to(run.device), need_logits=True).logits
    packed = pack(batch).to(run.device)
    logits_v2 = [
        to_padded(
            packed_forward(
                model, packed, kernel.backend, need_logits=True, faults=run.faults, compile=run.compile
            ).logits,
            packed,
        )
        for kernel in run.kernels
    ]
    for kernel, logits in zip(run.kernels, logits_v2):
        for k, (positions, target) in enumerate(zip((p for _, p in masked), tokens)):
            positions, target = positions.to(run.device), target.to(run.device)
            nll_v1, count = masked_nll(logits_v1[k], target, positions)
            nll_v2, _ = masked_nll(logits[k], target, positions)
            kernel.perplexity.add(nll_v1, nll_v2, count)
