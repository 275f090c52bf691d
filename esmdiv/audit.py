"""One audit, end to end: sequences -> both paths -> metrics -> decision.

:func:`run_audit` is what ``esmdiv check`` calls and what tests call directly. It returns an
:class:`AuditResult`; rendering and exit codes belong to the CLI.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Iterable, Iterator, Protocol

import torch

from esmdiv import __version__
from esmdiv.attention import resolve_backend
from esmdiv.decision import Decision, Evidence, Thresholds, decide
from esmdiv.errors import EnvironmentUnavailable, InputError, UsageError
from esmdiv.fasta import iter_fasta
from esmdiv.faults import Fault
from esmdiv.heads import Head, choose_head, confidence
from esmdiv.inputs import AuditSequence, InputReport, iter_sequences
from esmdiv.metrics import SequenceMetrics, compare_embeddings, prediction_summary, spread
from esmdiv.models import LoadedModel, load_model
from esmdiv.packing import batches_by_tokens, encode, encoder_table, pack, pad, to_padded
from esmdiv.partial import PartialRun
from esmdiv.paths import packed_forward, padded_forward
from esmdiv.runtime import resolve_device, resolve_dtype, synchronize

DEFAULT_MAX_TOKENS = {"cuda": 16384, "cpu": 4096}
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
    head: str = "auto"
    long_policy: str = "truncate"
    max_tokens: int | None = None  # None: by device
    thresholds: Thresholds = field(default_factory=Thresholds)
    faults: AbstractSet[Fault] = frozenset()


@dataclass
class SequenceResult:
    id: str
    length: int  # residues audited
    original_length: int
    metrics: SequenceMetrics
    label_v1: int
    label_v2: int
    confidence_v1: float
    confidence_v2: float

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "length": self.length,
            "original_length": self.original_length,
            "truncated": self.length < self.original_length,
            **self.metrics.to_dict(),
            "label_v1": self.label_v1,
            "label_v2": self.label_v2,
            "confidence_v1": self.confidence_v1,
            "confidence_v2": self.confidence_v2,
        }


@dataclass
class AuditResult:
    model: dict
    device: str
    dtype: str
    backend: str
    head: str
    max_tokens: int
    inputs: InputReport
    sequences: list[SequenceResult]
    summary: dict
    thresholds: Thresholds
    decision: Decision
    timings: dict
    faults: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the run did on its own (e.g. OOM retries)

    @property
    def warnings(self) -> list[str]:
        out = list(self.inputs.warnings())
        if self.model.get("random_weights"):
            out.insert(0, f"model {self.model['spec']} has RANDOM weights: this audits the arithmetic, not a trained model")
        if self.faults:
            out.insert(0, f"faults injected on purpose into the packed path: {', '.join(self.faults)}")
        return out + self.notices

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "complete": True,
            "esmdiv_version": __version__,
            "verdict": self.decision.verdict.value,
            "reasons": [r.to_dict() for r in self.decision.reasons],
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "backend": self.backend,
            "head": self.head,
            "max_tokens": self.max_tokens,
            "faults": self.faults,
            "input": self.inputs.to_dict(),
            "warnings": self.warnings,
            "thresholds": self.thresholds.to_dict(),
            "summary": self.summary,
            "timings": self.timings,
            "sequences": [s.to_dict() for s in self.sequences],
        }


class Progress(Protocol):
    """Told of each path's work as it happens: ``start(total_tokens)`` once, then ``advance``."""

    def start(self, total_tokens: int) -> None: ...

    def advance(self, path: str, tokens: int, seconds: float) -> None: ...


@dataclass
class _Run:
    """What every batch of one audit needs."""

    loaded: LoadedModel
    device: torch.device
    backend: str
    head: Head
    faults: AbstractSet[Fault]
    progress: Progress | None = None
    seconds: dict = field(default_factory=lambda: {"padded": 0.0, "packed": 0.0})
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
    (see :mod:`esmdiv.partial`).
    """
    partial = PartialRun({}) if partial is None else partial
    device = resolve_device(config.device)
    dtype_name, dtype = resolve_dtype(config.dtype, device)
    backend = resolve_backend(config.backend, device, dtype)
    max_tokens = DEFAULT_MAX_TOKENS[device.type] if config.max_tokens is None else config.max_tokens
    if max_tokens < 3:
        raise UsageError(f"--max-tokens {max_tokens} is too small (a sequence needs at least 3 tokens)")
    partial.resolved = {"device": str(device), "dtype": dtype_name, "backend": backend, "max_tokens": max_tokens}
    # A first pass validates the whole file before any model loads: bad input fails in seconds.
    partial.stage = "input"
    input_report = partial.inputs = InputReport(str(config.fasta))
    total_tokens = sum(len(s.sequence) + 2 for s in iter_sequences(iter_fasta(config.fasta), input_report, config.long_policy))
    if input_report.records == len(input_report.skipped):
        raise InputError(f"{config.fasta}: no sequence left to audit ({len(input_report.skipped)} skipped as too long)")

    partial.stage = "model"
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(config.model, device, dtype)
    load_seconds = time.perf_counter() - t0
    partial.model = model_dict(loaded)
    run = _Run(loaded, device, backend, choose_head(config.head, loaded).to(device), config.faults, progress)
    partial.finished = run.finished
    partial.stage = "audit"
    _warm_up(run)
    if progress:
        progress.start(total_tokens)
    sequences = iter_sequences(iter_fasta(config.fasta), InputReport(str(config.fasta)), config.long_policy)
    results, notices, budget = _audit_stream(run, sequences, max_tokens)
    partial.stage = "decision"

    timings = {"model_load_s": load_seconds, "tokens": total_tokens}
    for path in ("padded", "packed"):
        s = run.seconds[path]
        timings[f"{path}_s"] = s
        timings[f"{path}_tokens_per_s"] = total_tokens / s if s > 0 else None
    summary, evidence = summarise(results)
    return AuditResult(
        model=model_dict(loaded),
        device=str(device),
        dtype=dtype_name,
        backend=backend,
        head=run.head.name,
        max_tokens=budget,
        inputs=input_report,
        sequences=results,
        summary=summary,
        thresholds=config.thresholds,
        decision=decide(evidence, config.thresholds),
        timings=timings,
        faults=sorted(f.value for f in config.faults),
        notices=notices,
    )


def model_dict(loaded: LoadedModel) -> dict:
    """The report's ``model`` block."""
    info = loaded.info
    return {
        "spec": info.spec,
        "source": info.source,
        "path": info.path,
        "num_layers": info.num_layers,
        "embed_dim": info.embed_dim,
        "attention_heads": info.attention_heads,
        "random_weights": info.random_weights,
        "has_lm_head": info.has_lm_head,
        "notes": info.notes,
    }


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
    packed_forward(run.loaded.model, pack(tokens).to(run.device), run.backend)
    synchronize(run.device)


def compare_batch(run: _Run, sequences: list[AuditSequence], tokens: list[torch.Tensor]) -> list[SequenceResult]:
    """Both paths over one batch, then every per-sequence metric and prediction."""
    model, alphabet = run.loaded.model, run.loaded.alphabet
    last = model.num_layers
    n_tokens = sum(len(t) for t in tokens)
    padded = pad(tokens, alphabet.padding_idx).to(run.device)
    packed = pack(tokens).to(run.device)
    v1 = run.timed("padded", n_tokens, lambda: padded_forward(model, padded).representations[last])
    flat = run.timed("packed", n_tokens, lambda: packed_forward(model, packed, run.backend, faults=run.faults).representations[last])
    v2 = to_padded(flat, packed)
    lengths = torch.tensor([len(t) for t in tokens], device=run.device)
    comparison = compare_embeddings(v1, v2, lengths, include_eos_v2=Fault.EOS_IN_POOLING in run.faults)

    if run.head.input == "pooled":
        features_v1, features_v2 = comparison.pooled_v1, comparison.pooled_v2
    else:
        features_v1, features_v2 = v1[:, 0].float(), v2[:, 0].float()
    probs_v1, probs_v2 = run.head.probabilities(features_v1), run.head.probabilities(features_v2)
    labels_v1, labels_v2 = probs_v1.argmax(1), probs_v2.argmax(1)
    conf_v1, conf_v2 = confidence(probs_v1, labels_v1).tolist(), confidence(probs_v2, labels_v1).tolist()
    labels_v1, labels_v2 = labels_v1.tolist(), labels_v2.tolist()
    return [
        SequenceResult(
            id=s.id,
            length=len(s.sequence),
            original_length=s.original_length,
            metrics=comparison.metrics[j],
            label_v1=labels_v1[j],
            label_v2=labels_v2[j],
            confidence_v1=conf_v1[j],
            confidence_v2=conf_v2[j],
        )
        for j, s in enumerate(sequences)
    ]


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


def summarise(results: list[SequenceResult]) -> tuple[dict, Evidence]:
    """The summary block of the report and the evidence the decision tree reads."""
    prediction = prediction_summary(
        [r.label_v1 for r in results], [r.label_v2 for r in results],
        [r.confidence_v1 for r in results], [r.confidence_v2 for r in results],
    )
    cosines = [r.metrics.cosine for r in results]
    mads = [r.metrics.mad for r in results]
    nonfinite = [
        f"{r.id}: {path} output not finite"
        for r in results
        for path, ok in (("v1 (padded)", r.metrics.finite_v1), ("v2 (packed)", r.metrics.finite_v2))
        if not ok
    ]
    nonfinite += _nonfinite_outside_residues(results)
    cos_spread, mad_spread = spread(cosines), spread(mads)
    summary = {
        "n": len(results),
        "prediction": prediction.to_dict(),
        "cosine": cos_spread,
        "mad": mad_spread,
        "max_abs_diff": spread([r.metrics.max_abs_diff for r in results])["max"],
        "nonfinite": nonfinite,
    }
    evidence = Evidence(
        n=len(results),
        agreement=prediction.agreement,
        min_cosine=cos_spread["min"],
        max_mad=mad_spread["max"],
        nonfinite=nonfinite,
    )
    return summary, evidence
