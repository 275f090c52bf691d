"""One audit, end to end: sequences -> both paths -> metrics -> decision.

:func:`run_audit` is what ``esmdiv check`` calls and what tests call directly. It returns an
:class:`AuditResult`; rendering and exit codes belong to the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Callable

import torch

from esmdiv import __version__
from esmdiv.attention import resolve_backend
from esmdiv.decision import Decision, Evidence, Thresholds, decide
from esmdiv.errors import InputError
from esmdiv.faults import Fault
from esmdiv.heads import Head, choose_head, confidence
from esmdiv.inputs import AuditSequence, InputReport, load_sequences
from esmdiv.metrics import SequenceMetrics, embedding_metrics, mean_pool, prediction_summary, spread
from esmdiv.models import LoadedModel, load_model
from esmdiv.packing import batches_by_tokens, encode, encoder_table, pack, pad
from esmdiv.paths import packed_forward, padded_forward
from esmdiv.runtime import resolve_device, resolve_dtype, synchronize

DEFAULT_MAX_TOKENS = {"cuda": 16384, "cpu": 4096}


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

    @property
    def warnings(self) -> list[str]:
        out = list(self.inputs.warnings())
        if self.model.get("random_weights"):
            out.insert(0, f"model {self.model['spec']} has RANDOM weights: this audits the arithmetic, not a trained model")
        if self.faults:
            out.insert(0, f"faults injected on purpose into the packed path: {', '.join(self.faults)}")
        return out

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


Progress = Callable[[int, int], None]  # (sequences done, total)


def run_audit(config: AuditConfig, loaded: LoadedModel | None = None, progress: Progress | None = None) -> AuditResult:
    """Run both paths over the FASTA and decide. ``loaded`` reuses a model already on its device."""
    device = resolve_device(config.device)
    dtype_name, dtype = resolve_dtype(config.dtype, device)
    backend = resolve_backend(config.backend, device, dtype)
    max_tokens = config.max_tokens or DEFAULT_MAX_TOKENS[device.type]
    if max_tokens < 3:
        raise InputError(f"--max-tokens {max_tokens} is too small (a sequence needs at least 3 tokens)")
    sequences, input_report = load_sequences(config.fasta, config.long_policy)
    if not sequences:
        raise InputError(f"{config.fasta}: no sequence left to audit ({len(input_report.skipped)} skipped as too long)")
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(config.model, device, dtype)
    load_seconds = time.perf_counter() - t0
    head = choose_head(config.head, loaded).to(device)

    results, timings = _run_paths(loaded, sequences, device, backend, head, max_tokens, config.faults, progress)
    timings["model_load_s"] = load_seconds
    summary, evidence = summarise(results)
    return AuditResult(
        model={
            "spec": loaded.info.spec,
            "source": loaded.info.source,
            "path": loaded.info.path,
            "num_layers": loaded.info.num_layers,
            "embed_dim": loaded.info.embed_dim,
            "attention_heads": loaded.info.attention_heads,
            "random_weights": loaded.info.random_weights,
            "has_lm_head": loaded.info.has_lm_head,
            "notes": loaded.info.notes,
        },
        device=str(device),
        dtype=dtype_name,
        backend=backend,
        head=head.name,
        max_tokens=max_tokens,
        inputs=input_report,
        sequences=results,
        summary=summary,
        thresholds=config.thresholds,
        decision=decide(evidence, config.thresholds),
        timings=timings,
        faults=sorted(f.value for f in config.faults),
    )


def _run_paths(
    loaded: LoadedModel,
    sequences: list[AuditSequence],
    device: torch.device,
    backend: str,
    head: Head,
    max_tokens: int,
    faults: AbstractSet[Fault],
    progress: Progress | None,
) -> tuple[list[SequenceResult], dict]:
    model, alphabet = loaded.model, loaded.alphabet
    last = model.num_layers
    table = encoder_table(alphabet)
    tokens = [encode(s.sequence, alphabet, table) for s in sequences]
    results: list[SequenceResult | None] = [None] * len(sequences)
    seconds = {"padded_s": 0.0, "packed_s": 0.0}
    done = 0
    for batch in batches_by_tokens([len(t) for t in tokens], max_tokens):
        batch_tokens = [tokens[i] for i in batch]
        lengths = [len(t) for t in batch_tokens]

        start = time.perf_counter()
        v1 = padded_forward(model, pad(batch_tokens, alphabet.padding_idx).to(device)).representations[last]
        synchronize(device)
        seconds["padded_s"] += time.perf_counter() - start

        packed = pack(batch_tokens)
        start = time.perf_counter()
        flat = packed_forward(model, packed.to(device), backend, faults=faults).representations[last]
        synchronize(device)
        seconds["packed_s"] += time.perf_counter() - start

        v2 = torch.split(flat, lengths)
        reps = [(v1[j, :n], v2[j]) for j, n in enumerate(lengths)]
        pooled_v1 = torch.stack([mean_pool(a) for a, _ in reps])
        pooled_v2 = torch.stack([mean_pool(b, include_eos=Fault.EOS_IN_POOLING in faults) for _, b in reps])
        if head.input == "pooled":
            features_v1, features_v2 = pooled_v1, pooled_v2
        else:
            features_v1 = torch.stack([a[0] for a, _ in reps]).float()
            features_v2 = torch.stack([b[0] for _, b in reps]).float()
        probs_v1, probs_v2 = head.probabilities(features_v1), head.probabilities(features_v2)
        labels_v1, labels_v2 = probs_v1.argmax(1), probs_v2.argmax(1)
        conf_v1, conf_v2 = confidence(probs_v1, labels_v1).tolist(), confidence(probs_v2, labels_v1).tolist()
        labels_v1, labels_v2 = labels_v1.tolist(), labels_v2.tolist()
        for j, index in enumerate(batch):
            a, b = reps[j]
            results[index] = SequenceResult(
                id=sequences[index].id,
                length=len(sequences[index].sequence),
                original_length=sequences[index].original_length,
                metrics=embedding_metrics(a, b, pooled_v1[j], pooled_v2[j]),
                label_v1=labels_v1[j],
                label_v2=labels_v2[j],
                confidence_v1=conf_v1[j],
                confidence_v2=conf_v2[j],
            )
        done += len(batch)
        if progress:
            progress(done, len(sequences))
    n_tokens = sum(len(t) for t in tokens)
    seconds["tokens"] = n_tokens
    for path in ("padded", "packed"):
        s = seconds[f"{path}_s"]
        seconds[f"{path}_tokens_per_s"] = n_tokens / s if s > 0 else None
    return [r for r in results if r is not None], seconds


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
