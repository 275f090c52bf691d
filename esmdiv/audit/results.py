"""What an audit returns: each sequence's result, the whole run's, and the report dict they make.

:meth:`AuditResult.to_dict` is the report ``esmdiv check --json`` writes (the JSON Schema in
``esmdiv/report/schemas/`` describes it); writing it is :mod:`esmdiv.report.json_report`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from esmdiv import __version__
from esmdiv.input.sequences import InputReport
from esmdiv.measure.decision import Decision, Thresholds
from esmdiv.measure.metrics import HighPrecisionDistance, SequenceMetrics


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
    # (padded, packed, packed algorithm at high precision) against the high-precision run
    high_precision: tuple[HighPrecisionDistance, HighPrecisionDistance, HighPrecisionDistance] | None = None
    mlm: dict | None = None
    first_nonfinite_layer: int | None = None
    invariance: dict | None = None  # the evidence pass: pooled movement with other neighbours, each path
    # The evidence pass: the padded path's pooled distance to the high-precision run ("relative":
    # max |diff| / max |reference|, "absolute": max |diff|), the rounding every floor is made of.
    rounding: dict | None = None
    # The position probe: relative pooled movement 16,384 positions further down a pack ("moved") and
    # what a change of pack shape alone moves it ("rounding"), both at fp32.
    position: dict | None = None
    # Where the reference ran: what the cosine and MAD gates read for this sequence (the better of
    # packed vs padded and packed vs reference) and whether the reference excused it.
    gates: dict = field(default_factory=dict)
    rank: int | None = None  # torchrun: the rank that audited it

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
        if self.high_precision is not None:  # the report calls the high-precision run "reference"
            v1, v2, algorithm = self.high_precision
            out["reference"] = {
                "v1": v1.to_dict(),
                "v2": v2.to_dict(),
                "algorithm": algorithm.to_dict(),
                "label": primary.label_ref,
                "nearer": nearer(v1.rel_l2, v2.rel_l2),
            }
        if self.mlm is not None:
            out["mlm"] = self.mlm
        if self.first_nonfinite_layer is not None:
            out["first_nonfinite_layer"] = self.first_nonfinite_layer
        if self.invariance is not None:
            out["invariance"] = self.invariance
        if self.rounding is not None:
            out["rounding"] = self.rounding
        if self.position is not None:
            out["position"] = self.position
        if self.gates:
            out["gates"] = self.gates
        if self.rank is not None:
            out["rank"] = self.rank
        return out


@dataclass
class KernelResult:
    """One attention kernel's audit in a run that audits several: the same padded reference, its
    own packed outputs, metrics, predictions and decision."""

    backend: str
    provenance: dict  # esmdiv.forward.attention.kernel_provenance
    decision: Decision
    summary: dict
    sequences: list[SequenceResult]
    timings: dict  # its packed forwards: packed_s, packed_tokens_per_s
    trace: dict | None = None
    invariance: dict | None = None

    def to_dict(self) -> dict:
        out = {
            "backend": self.backend,
            "provenance": self.provenance,
            "verdict": self.decision.verdict.value,
            "exit_code": self.decision.verdict.exit_code,
            "reasons": [r.to_dict() for r in self.decision.reasons],
            "tolerances": self.decision.tolerances,
            "notes": self.decision.notes,
            "summary": self.summary,
            "timings": self.timings,
            "sequences": [s.to_dict() for s in self.sequences],
        }
        if self.trace is not None:
            out["trace"] = self.trace
        if self.invariance is not None:
            out["invariance"] = self.invariance
        return out


@dataclass
class AuditResult:
    """A whole audit. With one kernel, the report as it has always been (plus ``kernel``, its
    provenance). With several (``kernels``), the top level is the worst kernel's audit (its
    verdict, reasons, summary and sequences: the run's verdict and exit code are the worst), the
    backend names every kernel, and ``kernels`` holds each kernel's own."""

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
    evidence: dict | None = None  # what the evidence pass covered and what it could not see
    compile_reason: str = ""  # why the packed path was or was not compiled
    fc1: str = ""  # what the packed path ran fc1 and its GELU with (esmdiv.forward.mlp)

    environment: dict = field(default_factory=dict)  # esmdiv.report.fingerprint.environment(...)
    kernel: dict | None = None  # provenance of the kernel the top level shows (the worst, with several)
    kernels: list[KernelResult] = field(default_factory=list)  # several kernels: each one's audit
    distributed: dict | None = None  # torchrun: ranks, what each did, the collective timeout

    @property
    def head(self) -> str:
        return self.heads[0]

    @property
    def warnings(self) -> list[str]:
        out = list(self.inputs.warnings())
        if self.model.get("random_weights"):
            out.insert(
                0, f"model {self.model['spec']} has RANDOM weights: this audits the arithmetic, not a trained model"
            )
        if self.faults:
            out.insert(0, f"faults injected on purpose into the packed path: {', '.join(self.faults)}")
        if self.kernels:
            notes = [f"{k.backend}: {note}" for k in self.kernels for note in k.decision.notes]
        else:
            notes = self.decision.notes
        return out + notes + self.notices

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
            "compile_reason": self.compile_reason,
            "fc1": self.fc1,
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
        if self.evidence is not None:
            out["evidence"] = self.evidence
        if self.distributed is not None:
            out["distributed"] = self.distributed
        if self.kernel is not None:
            out["kernel"] = self.kernel
        if self.kernels:
            out["worst_kernel"] = self.kernel["backend"] if self.kernel else None
            out["kernels"] = [k.to_dict() for k in self.kernels]
        return out


@dataclass
class FollowerResult:
    """What a non-root rank of a distributed audit returns once its results are on rank 0: rank 0
    decides and reports, and every rank ends with rank 0's code (:func:`esmdiv.distributed.finish`)."""


def nearer(d1: float, d2: float) -> str:
    """Which path is nearer the high-precision run, from their distances to it."""
    if math.isnan(d1) or math.isnan(d2):
        return "unknown"
    return "packed" if d2 < d1 else "padded" if d1 < d2 else "tie"
