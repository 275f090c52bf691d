"""One audit, end to end: sequences -> both paths (and a reference) -> metrics -> decision.

:func:`run_audit` is what ``esmdiv check`` calls and what tests call directly. It returns an
:class:`AuditResult`; rendering and exit codes belong to the CLI.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Iterable, Iterator, Protocol

import numpy as np
import torch

from esmdiv import __version__
from esmdiv.measure.decision import Decision, Evidence, ReferenceEvidence, Thresholds, decide
from esmdiv.distributed import RankFailed, broadcast_code, current_world, error_payload, gather_to_root, shard_by_tokens
from esmdiv.distributed import init as init_distributed
from esmdiv.errors import EnvironmentUnavailable, InputError, UsageError
from esmdiv.input.fasta import iter_fasta
from esmdiv.forward.faults import Fault
from esmdiv.report.fingerprint import environment
from esmdiv.model.heads import Head, build_heads, confidence, load_extra_features
from esmdiv.input.sequences import AuditSequence, InputReport, iter_sequences
from esmdiv.measure.metrics import SequenceMetrics, compare_embeddings, mean_pool_batch, prediction_summary, residue_mask, spread
from esmdiv.measure.mlm import PerplexitySums, masked_copy, masked_nll, token_agreement
from esmdiv.model.loading import LoadedModel, load_model
from esmdiv.forward.packing import batches_by_tokens, encode, encoder_table, pack, pad, to_padded
from esmdiv.report.partial import PartialRun
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.padded import padded_forward
from esmdiv.forward.high_precision import (
    ReferenceDistance,
    algorithm_tolerance,
    build_reference,
    check_choice,
    distances_to_reference,
    reference_dtype,
    reference_forward,
)
from esmdiv.forward.device import default_compile, resolve_run, synchronize
from esmdiv.measure.stats import agreement_lower_bound
from esmdiv.measure.trace import DEFAULT_TRACE_THRESHOLD, TraceAccumulator

# Sequences are sorted by length within windows of this many batches' worth of tokens: batches
# stay nearly padding-free while memory stays bounded by the window, not by the file.
WINDOW_BATCHES = 64


@dataclass
class AuditConfig:
    fasta: Path
    model: str = "random:8M"
    device: str = "auto"
    dtype: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    backend: str = "auto"
    head: str = "auto"  # auto | proxy | model | a head file
    long_policy: str = "truncate"
    max_tokens: int | None = None  # None: by device
    thresholds: Thresholds = field(default_factory=Thresholds)
    faults: AbstractSet[Fault] = frozenset()
    proxy_seeds: tuple[int, ...] = (42,)
    head_activation: str = "relu"
    extra_features: Path | None = None
    reference: str = "none"  # "fp32": a third run at high precision (fp64 on CPU)
    trace: bool = False
    trace_threshold: float = DEFAULT_TRACE_THRESHOLD
    mlm: bool | None = None  # None: when the model has an LM head
    mlm_sample: int = 64  # sequences (the first in the file) in the masked-perplexity sample
    invariance: bool = False
    compile: bool | None = None  # torch.compile the packed path; None: on CUDA


@dataclass
class Prediction:
    """One head's output on one sequence: labels and confidences of each path."""

    label_v1: int
    label_v2: int
    confidence_v1: float
    confidence_v2: float
    label_ref: int | None = None


@dataclass
class SequenceResult:
    id: str
    index: int  # the record's position in the FASTA file (0-based)
    length: int  # residues audited
    original_length: int
    metrics: SequenceMetrics
    predictions: list[Prediction]  # one per head, the first is the primary head
    # (padded, packed, packed algorithm at reference precision) against the reference
    reference: tuple[ReferenceDistance, ReferenceDistance, ReferenceDistance] | None = None
    mlm: dict | None = None
    first_nonfinite_layer: int | None = None
    invariance: dict | None = None

    # The primary head's prediction, the one tables and plots show.
    label_v1 = property(lambda self: self.predictions[0].label_v1)
    label_v2 = property(lambda self: self.predictions[0].label_v2)
    confidence_v1 = property(lambda self: self.predictions[0].confidence_v1)
    confidence_v2 = property(lambda self: self.predictions[0].confidence_v2)

    def to_dict(self) -> dict:
        primary = self.predictions[0]
        out = {
            "id": self.id,
            "index": self.index,
            "length": self.length,
            "original_length": self.original_length,
            "truncated": self.length < self.original_length,
            **self.metrics.to_dict(),
            "label_v1": primary.label_v1,
            "label_v2": primary.label_v2,
            "confidence_v1": primary.confidence_v1,
            "confidence_v2": primary.confidence_v2,
        }
        if len(self.predictions) > 1:
            out["predictions"] = [vars(p) for p in self.predictions]
        if self.reference is not None:
            v1, v2, algorithm = self.reference
            out["reference"] = {"v1": v1.to_dict(), "v2": v2.to_dict(), "algorithm": algorithm.to_dict(),
                                "label": primary.label_ref, "nearer": _nearer(v1.rel_l2, v2.rel_l2)}
        if self.mlm is not None:
            out["mlm"] = self.mlm
        if self.first_nonfinite_layer is not None:
            out["first_nonfinite_layer"] = self.first_nonfinite_layer
        if self.invariance is not None:
            out["invariance"] = self.invariance
        return out


def _nearer(d1: float, d2: float) -> str:
    if math.isnan(d1) or math.isnan(d2):
        return "unknown"
    return "packed" if d2 < d1 else "padded" if d1 < d2 else "tie"


@dataclass
class AuditResult:
    model: dict
    device: str
    dtype: str
    backend: str
    compiled: bool
    heads: list[str]
    max_tokens: int
    inputs: InputReport
    sequences: list[SequenceResult]
    summary: dict
    thresholds: Thresholds
    decision: Decision
    timings: dict
    faults: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the run did on its own (e.g. OOM retries)
    trace: dict | None = None
    invariance: dict | None = None

    environment: dict = field(default_factory=dict)  # esmdiv.report.fingerprint.environment(...)

    @property
    def head(self) -> str:
        return self.heads[0]

    @property
    def warnings(self) -> list[str]:
        out = list(self.inputs.warnings())
        if self.model.get("random_weights"):
            out.insert(0, f"model {self.model['spec']} has RANDOM weights: this audits the arithmetic, not a trained model")
        if self.faults:
            out.insert(0, f"faults injected on purpose into the packed path: {', '.join(self.faults)}")
        return out + self.decision.notes + self.notices

    def to_dict(self) -> dict:
        out = {
            "schema_version": 1,
            "complete": True,
            "esmdiv_version": __version__,
            "verdict": self.decision.verdict.value,
            "reasons": [r.to_dict() for r in self.decision.reasons],
            "tolerances": self.decision.tolerances,
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "backend": self.backend,
            "compiled": self.compiled,
            "head": self.head,
            "heads": self.heads,
            "max_tokens": self.max_tokens,
            "faults": self.faults,
            "input": self.inputs.to_dict(),
            "warnings": self.warnings,
            "thresholds": self.thresholds.to_dict(),
            "summary": self.summary,
            "timings": self.timings,
            "environment": self.environment,
            "sequences": [s.to_dict() for s in self.sequences],
        }
        if self.trace is not None:
            out["trace"] = self.trace
        if self.invariance is not None:
            out["invariance"] = self.invariance
        return out


class Progress(Protocol):
    """Told of each path's work as it happens: ``start(total_tokens)`` once, then ``advance``."""

    def start(self, total_tokens: int) -> None: ...

    def advance(self, path: str, tokens: int, seconds: float) -> None: ...


@dataclass
class _Run:
    """What every batch of one audit needs, and what it accumulates."""

    loaded: LoadedModel
    device: torch.device
    backend: str
    heads: list[Head]
    faults: AbstractSet[Fault]
    progress: Progress | None = None
    reference: torch.nn.Module | None = None
    trace: TraceAccumulator | None = None
    mlm: bool = False
    mlm_sample: int = 0
    perplexity: PerplexitySums = field(default_factory=PerplexitySums)
    compile: bool = False
    max_tokens: int = 0  # the token budget the main pass ended with (the invariance pass reuses it)
    keep_pooled: bool = False  # for the invariance pass
    pooled: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    seconds: dict = field(default_factory=lambda: {"padded": 0.0, "packed": 0.0, "reference": 0.0})
    finished: list[SequenceResult] = field(default_factory=list)  # grows batch by batch

    def timed(self, path: str, tokens: int, fn):
        start = time.perf_counter()
        out = fn()
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.seconds[path] += elapsed
        if self.progress:
            self.progress.advance(path, tokens, elapsed)
        return out


def run_audit(
    config: AuditConfig, loaded: LoadedModel | None = None, progress: Progress | None = None,
    partial: PartialRun | None = None,
) -> AuditResult:
    """Run both paths over the FASTA and decide. ``loaded`` reuses a model already on its device.

    ``partial``, when given, is filled as the run goes, so a run that fails still leaves evidence
    (see :mod:`esmdiv.report.partial`).
    """
    partial = PartialRun({}) if partial is None else partial
    world = current_world()
    # torchrun: one GPU per local rank
    placement = resolve_run(config.device, config.dtype, config.backend, config.max_tokens,
                            world.local_rank if world is not None else None)
    device, dtype_name, dtype, backend = placement.device, placement.dtype_name, placement.dtype, placement.backend
    max_tokens = placement.max_tokens
    check_choice(config.reference)
    partial.resolved = {"device": str(device), "dtype": dtype_name, "backend": backend, "max_tokens": max_tokens}
    # A first pass validates the whole file before any model loads: bad input fails in seconds.
    partial.stage = "input"
    input_report = partial.inputs = InputReport(str(config.fasta))
    lengths = {s.index: len(s.sequence) + 2 for s in iter_sequences(iter_fasta(config.fasta), input_report, config.long_policy)}
    total_tokens = sum(lengths.values())
    if input_report.records == len(input_report.skipped):
        raise InputError(f"{config.fasta}: no sequence left to audit ({len(input_report.skipped)} skipped as too long)")
    extra = load_extra_features(config.extra_features, input_report.records) if config.extra_features else None
    mine = None
    if world is not None:
        init_distributed(world, device)
        mine = shard_by_tokens(lengths, world.size)[world.rank]

    partial.stage = "model"
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(config.model, device, dtype)
    load_seconds = time.perf_counter() - t0
    partial.model = loaded.info.to_dict()
    heads = [h.to(device) for h in build_heads(config.head, loaded, config.proxy_seeds, config.head_activation, extra)]
    mlm = loaded.info.has_lm_head if config.mlm is None else config.mlm
    if mlm and not loaded.info.has_lm_head:
        raise UsageError(f"--mlm: {loaded.info.spec} has no language-model head")
    run = _Run(
        loaded, device, backend, heads, config.faults, progress if world is None or world.is_root else None,
        reference=_cached_reference(loaded, device) if config.reference == "fp32" else None,
        trace=TraceAccumulator(loaded.info.num_layers) if config.trace else None,
        mlm=mlm, mlm_sample=config.mlm_sample if mlm else 0, keep_pooled=config.invariance,
        compile=default_compile(device) if config.compile is None else config.compile,
    )
    partial.finished = run.finished
    partial.stage = "audit"
    _warm_up(run)
    if run.progress:
        run.progress.start(total_tokens if mine is None else sum(lengths[i] for i in mine))
    sequences = iter_sequences(iter_fasta(config.fasta), InputReport(str(config.fasta)), config.long_policy)
    if mine is not None:
        sequences = (s for s in sequences if s.index in mine)
    try:
        results, notices, budget = _audit_stream(run, sequences, max_tokens)
        run.max_tokens = budget
        if config.invariance:
            from esmdiv.measure.invariance import run_invariance

            run_invariance(run, config, results)
    except Exception as err:
        if world is None:
            raise
        gather_to_root(error_payload(err), world)  # the others must not wait for this rank forever
        raise
    if world is not None:
        gathered = gather_to_root({"results": results, "notices": notices, "budget": budget, "seconds": run.seconds,
                                   "trace": run.trace, "perplexity": run.perplexity}, world)
        if not world.is_root:
            return FollowerResult(broadcast_code(0, world))
        results, notices, budget = _merge_ranks(run, gathered)
    results.sort(key=lambda r: r.index)
    invariance = None
    if config.invariance:
        from esmdiv.measure.invariance import invariance_summary

        invariance = invariance_summary(results)
    partial.stage = "decision"

    timings = {"model_load_s": load_seconds, "tokens": total_tokens}
    for path in ("padded", "packed", "reference"):
        seconds = run.seconds[path]
        timings[f"{path}_s"] = seconds
        timings[f"{path}_tokens_per_s"] = total_tokens / seconds if seconds > 0 else None
    summary, evidence = summarise(results, [h.name for h in heads], dtype, reference_dtype(device))
    if run.reference is not None:
        summary["reference"]["dtype"] = str(reference_dtype(device)).replace("torch.", "")
    summary["mlm"] = _mlm_summary(run, results, loaded)
    trace = run.trace.result(config.trace_threshold) if run.trace else None
    if invariance is not None:
        evidence.invariance = (invariance["padded"]["max_moved"], invariance["packed"]["max_moved"])
    decision = decide(evidence, config.thresholds)
    summary["bound"] = _bound_summary(evidence, config.thresholds)
    t1 = time.perf_counter()
    fingerprint = environment(device, dtype, backend, loaded, config.fasta, input_report.records)
    timings["fingerprint_s"] = time.perf_counter() - t1
    if world is not None:
        timings["ranks"] = world.size
        broadcast_code(decision.verdict.exit_code, world)
    return AuditResult(
        model=loaded.info.to_dict(),
        device=str(device),
        dtype=dtype_name,
        backend=backend,
        compiled=run.compile,
        heads=[h.name for h in heads],
        max_tokens=budget,
        inputs=input_report,
        sequences=results,
        summary=summary,
        thresholds=config.thresholds,
        decision=decision,
        timings=timings,
        faults=sorted(f.value for f in config.faults),
        notices=notices,
        trace=trace,
        invariance=invariance,
        environment=fingerprint,
    )


@dataclass
class FollowerResult:
    """What a non-root rank of a distributed audit returns: rank 0 reports, all exit alike."""

    exit_code: int


def _merge_ranks(run: _Run, gathered: list[dict]) -> tuple[list[SequenceResult], list[str], int]:
    """Rank 0: every rank's results and accumulators into one run; a failed rank fails it all."""
    for rank, payload in enumerate(gathered):
        if "error" in payload:
            raise RankFailed(rank, payload["error"], payload["exit_code"])
    results = [r for payload in gathered for r in payload["results"]]
    notices = [f"rank {rank}: {n}" for rank, payload in enumerate(gathered) for n in payload["notices"]]
    for path in run.seconds:  # the job takes as long as its slowest rank
        run.seconds[path] = max(payload["seconds"][path] for payload in gathered)
    for payload in gathered[1:]:
        if run.trace is not None:
            run.trace.merge(payload["trace"])
        run.perplexity.merge(payload["perplexity"])
    return results, notices, min(payload["budget"] for payload in gathered)


def _cached_reference(loaded: LoadedModel, device: torch.device) -> torch.nn.Module:
    """The high-precision copy is built once per loaded model (selftest runs many audits)."""
    ref = getattr(loaded, "_reference", None)
    if ref is None:
        ref = build_reference(loaded.model, device)
        loaded._reference = ref  # type: ignore[attr-defined]
    return ref


def _audit_stream(run: _Run, sequences: Iterable[AuditSequence], max_tokens: int) -> tuple[list[SequenceResult], list[str], int]:
    """Sort and batch window by window (memory: one window of sequences plus the results).

    CUDA out of memory halves the token budget and retries the batch, saying so; a single
    sequence that cannot fit is an environment error naming it.
    """
    table = encoder_table(run.loaded.alphabet)
    results: list[SequenceResult] = run.finished  # shared: a run that fails still reports what finished
    notices: list[str] = []
    budget = max_tokens
    for window in _windows(sequences, WINDOW_BATCHES * max_tokens):
        tokens = [encode(s.sequence, run.loaded.alphabet, table) for s in window]
        lengths = [len(t) for t in tokens]
        pending = batches_by_tokens(lengths, budget)
        while pending:
            batch = pending.pop(0)
            try:
                results.extend(compare_batch(run, [window[i] for i in batch], [tokens[i] for i in batch]))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if len(batch) == 1:
                    s = window[batch[0]]
                    raise EnvironmentUnavailable(
                        f"{s.id} (line {s.line}, {len(s.sequence)} residues) does not fit in GPU memory even alone; "
                        "use --long truncate or a smaller model"
                    ) from None
                budget = max(3, budget // 2)
                notices.append(f"CUDA out of memory on a batch of {len(batch)} sequences: token budget halved to {budget}")
                sub_lengths = [lengths[i] for i in batch]
                pending = [[batch[j] for j in sub] for sub in batches_by_tokens(sub_lengths, budget)] + pending
    return results, notices, budget


def _windows(sequences: Iterable[AuditSequence], window_tokens: int) -> Iterator[list[AuditSequence]]:
    window: list[AuditSequence] = []
    tokens = 0
    for s in sequences:
        window.append(s)
        tokens += len(s.sequence) + 2
        if tokens >= window_tokens:
            yield window
            window, tokens = [], 0
    if window:
        yield window


def _warm_up(run: _Run) -> None:
    """One tiny batch through both paths, untimed: kernel loading stays out of the timings."""
    alphabet = run.loaded.alphabet
    tokens = [encode("MKTAYIAKVL", alphabet)]
    padded_forward(run.loaded.model, pad(tokens, alphabet.padding_idx).to(run.device))
    packed_forward(run.loaded.model, pack(tokens).to(run.device), run.backend, compile=run.compile)
    synchronize(run.device)


def compare_batch(run: _Run, sequences: list[AuditSequence], tokens: list[torch.Tensor]) -> list[SequenceResult]:
    """Both paths (and the reference) over one batch, then every per-sequence measurement."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    last = model.num_layers
    layers = list(range(last + 1)) if run.trace else [last]
    n_tokens = sum(len(t) for t in tokens)
    padded = pad(tokens, alphabet.padding_idx).to(run.device)
    packed = pack(tokens).to(run.device)
    out_v1 = run.timed("padded", n_tokens, lambda: padded_forward(model, padded, layers, need_logits=run.mlm))
    out_v2 = run.timed("packed", n_tokens, lambda: packed_forward(
        model, packed, run.backend, layers, need_logits=run.mlm, faults=run.faults, compile=run.compile))
    v1, v2 = out_v1.representations[last], to_padded(out_v2.representations[last], packed)
    lengths = torch.tensor([len(t) for t in tokens], device=run.device)
    mask = residue_mask(lengths, v1.shape[1])
    eos_bug = Fault.EOS_IN_POOLING in run.faults
    comparison = compare_embeddings(v1, v2, lengths, include_eos_v2=eos_bug)
    b = len(tokens)

    first_bad: list[int | None] = [None] * b
    if run.trace:
        for layer in layers:
            v2_layer = v2 if layer == last else to_padded(out_v2.representations[layer], packed)
            bad = run.trace.add(layer, out_v1.representations[layer], v2_layer, mask)
            for j in torch.nonzero(bad).flatten().tolist():
                first_bad[j] = layer if first_bad[j] is None else first_bad[j]

    mlm: list[dict | None] = [None] * b
    if run.mlm:
        top1, js = token_agreement(out_v1.logits, to_padded(out_v2.logits, packed), mask)
        mlm = [{"top1_agreement": a, "js": d} for a, d in zip(top1.tolist(), js.tolist())]
        _perplexity_sample(run, sequences, tokens)

    reference: list[tuple[ReferenceDistance, ...] | None] = [None] * b
    ref = None
    if run.reference is not None:
        ref = run.timed("reference", n_tokens, lambda: reference_forward(run.reference, padded))
        # The packed algorithm itself at the reference's precision (exact attention): what is
        # left of its distance to the reference is a difference of function, not of rounding.
        algorithm = run.timed("reference", n_tokens, lambda: to_padded(packed_forward(
            run.reference, packed, "reference", faults=run.faults).representations[last], packed))
        reference = list(zip(
            distances_to_reference(v1, ref, lengths),
            distances_to_reference(v2, ref, lengths, eos_bug),
            distances_to_reference(algorithm, ref, lengths, eos_bug),
        ))

    record_index = torch.tensor([s.index for s in sequences], device=run.device)
    predictions = [_predict(head, comparison, v1, v2, ref, lengths, record_index) for head in run.heads]
    if run.keep_pooled:
        for j, s in enumerate(sequences):
            run.pooled[s.index] = (comparison.pooled_v1[j].cpu(), comparison.pooled_v2[j].cpu())
    return [
        SequenceResult(
            id=s.id,
            index=s.index,
            length=len(s.sequence),
            original_length=s.original_length,
            metrics=comparison.metrics[j],
            predictions=[p[j] for p in predictions],
            reference=reference[j],
            mlm=mlm[j],
            first_nonfinite_layer=first_bad[j],
        )
        for j, s in enumerate(sequences)
    ]


def _predict(head: Head, comparison, v1, v2, ref, lengths, record_index) -> list[Prediction]:
    """One head over both paths (and the reference): a Prediction per sequence."""
    if head.input == "pooled":
        features = [comparison.pooled_v1, comparison.pooled_v2]
        if ref is not None:
            features.append(mean_pool_batch(ref, lengths))
    else:
        features = [v1[:, 0], v2[:, 0]] + ([ref[:, 0]] if ref is not None else [])
    probs = [head.probabilities(f.float(), record_index) for f in features]
    labels = [p.argmax(1) for p in probs]
    conf_v1, conf_v2 = confidence(probs[0], labels[0]).tolist(), confidence(probs[1], labels[0]).tolist()
    label_lists = [l.tolist() for l in labels]
    label_ref = label_lists[2] if ref is not None else [None] * len(conf_v1)
    return [
        Prediction(label_lists[0][j], label_lists[1][j], conf_v1[j], conf_v2[j], label_ref[j])
        for j in range(len(conf_v1))
    ]


def _perplexity_sample(run: _Run, sequences: list[AuditSequence], tokens: list[torch.Tensor]) -> None:
    """Mask 15 % of the residues of the sampled sequences and score the true tokens on both paths."""
    chosen = [j for j, s in enumerate(sequences) if s.index < run.mlm_sample]
    if not chosen:
        return
    model, alphabet = run.loaded.model, run.loaded.alphabet
    masked = [masked_copy(tokens[j], sequences[j].index, alphabet.mask_idx) for j in chosen]
    batch = [m for m, _ in masked]
    logits_v1 = padded_forward(model, pad(batch, alphabet.padding_idx).to(run.device), need_logits=True).logits
    packed = pack(batch).to(run.device)
    logits_v2 = to_padded(packed_forward(model, packed, run.backend, need_logits=True, faults=run.faults, compile=run.compile).logits, packed)
    for k, j in enumerate(chosen):
        positions = masked[k][1].to(run.device)
        target = tokens[j].to(run.device)
        nll_v1, count = masked_nll(logits_v1[k], target, positions)
        nll_v2, _ = masked_nll(logits_v2[k], target, positions)
        run.perplexity.add(nll_v1, nll_v2, count)


def _nonfinite_outside_residues(results: list[SequenceResult]) -> list[str]:
    """Non-finite values the residue-row check cannot see: a NaN in a BOS or EOS row reaches the
    pooled embedding and a ``<cls>`` head, so a non-finite cosine, MAD or confidence of a sequence
    whose residue rows were finite is a non-finite output too (it must never pass as ACCEPT)."""
    out = []
    for r in results:
        if not (r.metrics.finite_v1 and r.metrics.finite_v2):
            continue  # already named by the residue check
        values = {"pooled cosine": r.metrics.cosine, "pooled MAD": r.metrics.mad,
                  "confidence v1 (padded)": r.confidence_v1, "confidence v2 (packed)": r.confidence_v2}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            out.append(f"{r.id}: {', '.join(bad)} not finite")
    return out


def summarise(
    results: list[SequenceResult],
    head_names: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    ref_dtype: torch.dtype = torch.float64,
) -> tuple[dict, Evidence]:
    """The summary block of the report and the evidence the decision tree reads."""
    head_names = head_names or ["head"]
    per_head = []
    for h, name in enumerate(head_names):
        p = [r.predictions[h] for r in results]
        summary = prediction_summary([x.label_v1 for x in p], [x.label_v2 for x in p],
                                     [x.confidence_v1 for x in p], [x.confidence_v2 for x in p]).to_dict()
        per_head.append({"head": name, **summary})
    worst = min(range(len(per_head)), key=lambda h: per_head[h]["agreement"])
    m = [r.metrics for r in results]
    nonfinite = [
        f"{r.id}: {path} output not finite"
        + (f" (first at layer {r.first_nonfinite_layer})" if r.first_nonfinite_layer is not None else "")
        for r in results
        for path, ok in (("v1 (padded)", r.metrics.finite_v1), ("v2 (packed)", r.metrics.finite_v2))
        if not ok
    ]
    nonfinite += _nonfinite_outside_residues(results)
    cos_spread, mad_spread = spread([x.cosine for x in m]), spread([x.mad for x in m])
    summary = {
        "n": len(results),
        "prediction": per_head[0],
        "heads": per_head,
        "cosine": cos_spread,
        "mad": mad_spread,
        "max_abs_diff": spread([x.max_abs_diff for x in m])["max"],
        "residue": {
            "cosine_min": spread([x.residue_cosine_min for x in m])["min"],
            "cosine_mean": spread([x.residue_cosine_mean for x in m])["mean"],
            "rel_l2": spread([x.rel_l2 for x in m]),
            "p999_abs_diff": spread([x.p999_abs_diff for x in m]),
            "allclose_1e3": spread([x.allclose_1e3 for x in m])["mean"],
            "allclose_1e2": spread([x.allclose_1e2 for x in m])["mean"],
        },
        "nonfinite": nonfinite,
    }
    evidence = Evidence(
        n=len(results),
        agreement=per_head[worst]["agreement"],
        min_cosine=cos_spread["min"],
        max_mad=mad_spread["max"],
        nonfinite=nonfinite,
        agreeing=per_head[worst]["n"] - per_head[worst]["disagreements"],
    )
    if results and results[0].reference is not None:
        summary["reference"], evidence.reference = _reference_summary(results, len(head_names), dtype, ref_dtype)
    return summary, evidence


def _reference_summary(
    results: list[SequenceResult], n_heads: int, dtype: torch.dtype, ref_dtype: torch.dtype
) -> tuple[dict, ReferenceEvidence]:
    d1 = [r.reference[0] for r in results]
    d2 = [r.reference[1] for r in results]
    da = [r.reference[2] for r in results]
    finite = all(math.isfinite(d.rel_l2) for d in d1 + d2 + da)
    nearer = [_nearer(a.rel_l2, b.rel_l2) for a, b in zip(d1, d2)]
    # Distances at the run precision's rounding floor count as equal, so a ratio of two
    # vanishing numbers cannot fail the gate.
    floor = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    mean_v1 = float(np.mean([d.rel_l2 for d in d1])) if finite else math.nan
    mean_v2 = float(np.mean([d.rel_l2 for d in d2])) if finite else math.nan
    ratio = (mean_v2 + floor) / (mean_v1 + floor) if finite else math.nan
    agreeing = min(
        sum(r.predictions[h].label_v2 == r.predictions[h].label_ref for r in results) for h in range(n_heads)
    )
    side = lambda ds: {  # noqa: E731 - a table row builder
        "cosine_min": spread([d.cosine for d in ds])["min"],
        "mad": spread([d.mad for d in ds]),
        "rel_l2": spread([d.rel_l2 for d in ds]),
    }
    summary = {
        "finite": finite,
        "v1": side(d1),
        "v2": side(d2),
        "algorithm": side(da),
        "ratio": ratio,
        "packed_nearer": nearer.count("packed"),
        "padded_nearer": nearer.count("padded"),
        "nearer": "packed" if mean_v2 < mean_v1 else "padded" if mean_v1 < mean_v2 else "tie",
        "agreement_v1": sum(r.predictions[0].label_v1 == r.predictions[0].label_ref for r in results) / len(results),
        "agreement_v2": sum(r.predictions[0].label_v2 == r.predictions[0].label_ref for r in results) / len(results),
    }
    evidence = ReferenceEvidence(
        finite=finite,
        ratio=ratio,
        agreeing=agreeing,
        min_cosine=summary["v2"]["cosine_min"],
        max_mad=summary["v2"]["mad"]["max"],
        algorithm_error=summary["algorithm"]["rel_l2"]["max"],
        algorithm_tolerance=algorithm_tolerance(ref_dtype),
    )
    return summary, evidence


def _mlm_summary(run: _Run, results: list[SequenceResult], loaded: LoadedModel) -> dict:
    if not run.mlm:
        why = "the checkpoint has no language-model head" if not loaded.info.has_lm_head else "turned off (--no-mlm)"
        return {"skipped": why}
    top1 = [r.mlm["top1_agreement"] for r in results if r.mlm]
    js = [r.mlm["js"] for r in results if r.mlm]
    return {"top1_agreement": spread(top1), "js": spread(js), "perplexity": run.perplexity.to_dict()}


def _bound_summary(evidence: Evidence, thresholds: Thresholds) -> dict:
    agreeing = evidence.agreeing_count()
    return {  # the bound is reported whatever --gate says
        "confidence": thresholds.confidence,
        "agreeing": agreeing,
        "n": evidence.n,
        "lower_bound": agreement_lower_bound(agreeing, evidence.n, thresholds.confidence),
        "gate": thresholds.gate,
    }
