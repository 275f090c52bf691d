"""The summary of an audit: what the report's ``summary`` and ``timings`` hold, and the
:class:`~esmdiv.measure.decision.Evidence` the decision reads, from every sequence's result."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from esmdiv.audit.batch import AuditRun, KernelRun
from esmdiv.audit.results import SequenceResult, nearer
from esmdiv.forward.device import dtype_name
from esmdiv.forward.high_precision import algorithm_tolerance
from esmdiv.measure.decision import (
    Evidence,
    Excused,
    HighPrecisionEvidence,
    InvarianceEvidence,
    PositionEvidence,
    Thresholds,
)
from esmdiv.measure.invariance import invariance_summary
from esmdiv.measure.metrics import HighPrecisionDistance, prediction_summary, spread
from esmdiv.measure.noise import unit_roundoff
from esmdiv.measure.stats import agreement_lower_bound

#: The report's name for each timed path (the high-precision run is "reference" in reports).
TIMED_PATHS = {"padded": "padded", "packed": "packed", "high_precision": "reference"}


#: How the report says the first call of each kernel stays out of the timings.
WARM_UP = (
    "one small batch through the padded path and every kernel before the timed passes: kernel "
    "loading and FlashAttention-4's first compile stay out of them (a kernel shape first met later "
    "is timed with its compile)"
)


def timings(seconds: dict[str, float], total_tokens: int, load_seconds: float, kernels: int = 1) -> dict:
    """The report's ``timings``: model load, then seconds and tokens/s of each path. With several
    ``kernels``, ``packed_s`` is their total and ``packed_tokens_per_s`` is null (each kernel's
    own are in its ``kernels`` entry: :func:`kernel_timings`)."""
    out = {"model_load_s": load_seconds, "tokens": total_tokens}
    for path, name in TIMED_PATHS.items():
        spent = seconds[path]
        out[f"{name}_s"] = spent
        out[f"{name}_tokens_per_s"] = total_tokens / spent if spent > 0 else None
    if kernels > 1:
        out["packed_tokens_per_s"] = None
    out["warm_up"] = WARM_UP
    return out


def kernel_timings(seconds: float, total_tokens: int) -> dict:
    """One kernel's packed forwards in the main pass: seconds and tokens/s."""
    return {"packed_s": seconds, "packed_tokens_per_s": total_tokens / seconds if seconds > 0 else None}


def _nonfinite_outside_residues(results: list[SequenceResult]) -> list[str]:
    """Non-finite values the residue-row check cannot see: a NaN in a BOS or EOS row reaches the
    pooled embedding and a ``<cls>`` head, so a non-finite cosine, MAD or confidence of a sequence
    whose residue rows were finite is a non-finite output too (it must never pass as ACCEPT)."""
    out = []
    for r in results:
        if not (r.metrics.finite_v1 and r.metrics.finite_v2):
            continue  # already named by the residue check
        values = {
            "pooled cosine": r.metrics.cosine,
            "pooled MAD": r.metrics.mad,
            "confidence v1 (padded)": r.confidence_v1,
            "confidence v2 (packed)": r.confidence_v2,
        }
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            out.append(f"{r.id}: {', '.join(bad)} not finite")
    return out


def summarise(
    results: list[SequenceResult],
    head_names: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    high_dtype: torch.dtype = torch.float64,
    thresholds: Thresholds | None = None,
    probe_offset: int = 0,
) -> tuple[dict, Evidence]:
    """The summary block of the report and the evidence the decision tree reads.

    Sequences the evidence pass reran carry their distances to the high-precision run: for them a
    label may agree with the reference instead of the padded path, and a cosine or MAD past its bar
    may be excused (:func:`distance_readings`). ``probe_offset``: how far the position probe moved
    the sample (0: no probe ran).
    """
    thresholds = thresholds or Thresholds()
    head_names = head_names or ["head"]
    per_head = []
    for h, name in enumerate(head_names):
        p = [r.predictions[h] for r in results]
        summary = prediction_summary(
            [x.label_v1 for x in p], [x.label_v2 for x in p], [x.confidence_v1 for x in p], [x.confidence_v2 for x in p]
        ).to_dict()
        per_head.append({"head": name, **summary})
    m = [r.metrics for r in results]
    nonfinite = _nonfinite(results)
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
    agreeing, agreement_source = _agreement(results, len(head_names))
    cosine, mad = distance_readings(results, thresholds)
    evidence = Evidence(
        n=len(results),
        agreement=agreeing / len(results) if results else math.nan,
        min_cosine=cosine.value,
        max_mad=mad.value,
        nonfinite=nonfinite,
        agreeing=agreeing,
        agreement_source=agreement_source,
        cosine_source=cosine.source,
        mad_source=mad.source,
        excused={gate: r.excused for gate, r in (("min cosine", cosine), ("max MAD", mad)) if r.excused.count},
        dtype=dtype_name(dtype),
    )
    checked = [r for r in results if r.high_precision is not None]
    if checked:  # the report's "reference" block
        summary["reference"], evidence.high_precision = _high_precision_summary(checked, dtype, high_dtype)
    moved = [r for r in results if r.invariance is not None]
    if moved:
        summary["invariance"] = invariance_summary(moved)
        evidence.invariance = InvarianceEvidence(
            summary["invariance"]["padded"]["max_moved"],
            summary["invariance"]["packed"]["max_moved"],
            max(r.rounding["absolute"] for r in moved if r.rounding is not None),
        )
    probed = [r.position for r in results if r.position is not None]
    if probed and probe_offset:
        moved, rounding = [p["moved"] for p in probed], [p["rounding"] for p in probed]
        evidence.position = PositionEvidence(
            max(moved) if all(map(math.isfinite, moved)) else math.nan,
            max(rounding) if all(map(math.isfinite, rounding)) else math.inf,
            unit_roundoff(torch.float32),
            probe_offset,
        )
        summary["position"] = {
            "offset": probe_offset,
            "sequences": len(probed),
            "max_moved": evidence.position.moved,
            "rounding": evidence.position.rounding,
            "threshold": evidence.position.threshold,
            "dtype": "float32",
        }
    return summary, evidence


def _agreement(results: list[SequenceResult], n_heads: int) -> tuple[int, str]:
    """Per head, the sequences whose packed label equals the padded path's or, where the reference
    ran, the reference's; the lowest count over the heads, and what it was read against."""
    best = None
    for h in range(n_heads):
        padded = sum(r.predictions[h].label_v2 == r.predictions[h].label_v1 for r in results)
        rescued = sum(
            r.predictions[h].label_v2 != r.predictions[h].label_v1
            and r.predictions[h].label_ref is not None
            and r.predictions[h].label_v2 == r.predictions[h].label_ref
            for r in results
        )
        if best is None or padded + rescued < best[0]:
            best = (padded + rescued, rescued)
    count, rescued = best if best is not None else (0, 0)
    if not rescued:
        return count, "packed vs padded"
    return count, f"packed vs padded; {rescued} label(s) where packed agrees with the reference"


@dataclass
class DistanceReading:
    """What the cosine or the MAD gate reads over every sequence."""

    value: float  # the worst effective value among sequences not excused
    source: str
    excused: Excused


def distance_readings(results: list[SequenceResult], t: Thresholds) -> tuple[DistanceReading, DistanceReading]:
    """The cosine and the MAD gates' readings, sequence by sequence.

    A sequence's effective cosine (MAD) is the better of packed vs padded and, where the reference
    ran, packed vs reference. One still past the bar is excused when the packed path's distance to
    the reference is at most ``max_reference_ratio`` times the padded path's largest distance to it
    on the run: the packed path is then as far from the truth as the dtype's rounding takes the
    padded path, and the dtype, not the packed path, misses the bar.
    """
    cos = _reading(results, t, cosine=True)
    mad = _reading(results, t, cosine=False)
    return cos, mad


def _reading(results: list[SequenceResult], t: Thresholds, cosine: bool) -> DistanceReading:
    worst, worst_source = (math.inf if cosine else -math.inf), "packed vs padded"
    better = max if cosine else min
    worse = min if cosine else max
    gate = "min cosine" if cosine else "max MAD"
    # The dtype's rounding on these sequences: the padded path's largest distance to the reference
    # on this run. One sequence's own padded distance is one draw of that rounding, and the ratio
    # of two draws strays past any bar on some sequence of a large run (bf16 peptides: 2.2).
    padded_values = [_measure(r.high_precision[0], cosine) for r in results if r.high_precision is not None]
    nan = not padded_values or any(math.isnan(v) for v in padded_values)
    padded_worst = math.nan if nan else worse(padded_values)  # NaN excuses nothing
    padded_distance = (1 - padded_worst) if cosine else padded_worst
    excused = Excused(0, math.inf if cosine else -math.inf, padded_worst)
    for r in results:
        direct = r.metrics.cosine if cosine else r.metrics.mad
        value, source = direct, "packed vs padded"
        if r.high_precision is not None:
            to_ref = _measure(r.high_precision[1], cosine)
            if math.isfinite(to_ref) and (math.isnan(value) or better(to_ref, value) == to_ref and to_ref != value):
                value, source = to_ref, "packed vs reference"
            passes = value > t.min_cosine if cosine else value < t.max_mad
            if not passes and math.isfinite(to_ref):
                distance = (1 - to_ref) if cosine else to_ref
                if distance <= t.max_reference_ratio * padded_distance:
                    excused = Excused(excused.count + 1, worse(excused.worst, value), padded_worst)
                    r.gates[gate] = {"value": value, "source": source, "excused": True}
                    continue
            r.gates[gate] = {"value": value, "source": source, "excused": False}
        if math.isnan(value) or worse(value, worst) == value and value != worst:
            worst, worst_source = value, source
    if math.isinf(worst):  # every sequence excused (or none): nothing the gate can fail on
        worst = 1.0 if cosine else 0.0
    return DistanceReading(worst, worst_source, excused)


def _measure(distance, cosine: bool) -> float:
    return distance.cosine if cosine else distance.mad


def _nonfinite(results: list[SequenceResult]) -> list[str]:
    """One line per sequence and path whose output was not finite."""
    residue_rows = [
        f"{r.id}: {path} output not finite"
        + (f" (first at layer {r.first_nonfinite_layer})" if r.first_nonfinite_layer is not None else "")
        for r in results
        for path, ok in (("v1 (padded)", r.metrics.finite_v1), ("v2 (packed)", r.metrics.finite_v2))
        if not ok
    ]
    return residue_rows + _nonfinite_outside_residues(results)


def _high_precision_summary(
    results: list[SequenceResult], dtype: torch.dtype, high_dtype: torch.dtype
) -> tuple[dict, HighPrecisionEvidence]:
    """The report's ``reference`` summary (over the sequences the evidence pass reran) and the
    evidence its gates read."""
    d1 = [r.high_precision[0] for r in results]
    d2 = [r.high_precision[1] for r in results]
    da = [r.high_precision[2] for r in results]
    finite = all(math.isfinite(d.rel_l2) for d in d1 + d2 + da)
    nearer_paths = [nearer(a.rel_l2, b.rel_l2) for a, b in zip(d1, d2)]
    # Distances at the run precision's rounding floor count as equal, so a ratio of two
    # vanishing numbers cannot fail the gate.
    floor = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    mean_v1 = float(np.mean([d.rel_l2 for d in d1])) if finite else math.nan
    mean_v2 = float(np.mean([d.rel_l2 for d in d2])) if finite else math.nan
    ratio = (mean_v2 + floor) / (mean_v1 + floor) if finite else math.nan
    summary = {
        "n": len(results),
        "finite": finite,
        "v1": _distance_spread(d1),
        "v2": _distance_spread(d2),
        "algorithm": _distance_spread(da),
        "ratio": ratio,
        "packed_nearer": nearer_paths.count("packed"),
        "padded_nearer": nearer_paths.count("padded"),
        "nearer": "packed" if mean_v2 < mean_v1 else "padded" if mean_v1 < mean_v2 else "tie",
        "agreement_v1": sum(r.predictions[0].label_v1 == r.predictions[0].label_ref for r in results) / len(results),
        "agreement_v2": sum(r.predictions[0].label_v2 == r.predictions[0].label_ref for r in results) / len(results),
        "dtype": str(high_dtype).replace("torch.", ""),
    }
    evidence = HighPrecisionEvidence(
        finite=finite,
        ratio=ratio,
        # the residue rows and the pooled embedding: pooling is part of the packed pipeline (EOS in
        # the mean changes no residue row, and in bf16 hides under the MAD bar's rounding)
        algorithm_error=_worst_finite(
            summary["algorithm"]["rel_l2"]["max"], summary["algorithm"]["pooled_rel_l2"]["max"]
        ),
        algorithm_tolerance=algorithm_tolerance(high_dtype),
    )
    return summary, evidence


def _worst_finite(*values: float) -> float:
    """The largest of ``values``; NaN if any is NaN (a gate reading it then fails)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _distance_spread(distances: list[HighPrecisionDistance]) -> dict:
    """One path's distances to the high-precision run, summarised (a row of the reference block)."""
    return {
        "cosine_min": spread([d.cosine for d in distances])["min"],
        "mad": spread([d.mad for d in distances]),
        "rel_l2": spread([d.rel_l2 for d in distances]),
        "pooled_rel_l2": spread([d.pooled_rel_l2 for d in distances]),
    }


def mlm_summary(run: AuditRun, results: list[SequenceResult], kernel: KernelRun | None = None) -> dict:
    """The report's ``summary.mlm`` for ``kernel`` (default: the run's first): token agreement, JS
    divergence and perplexity, or why skipped."""
    kernel = kernel or run.kernels[0]
    if not run.mlm:
        why = (
            "the checkpoint has no language-model head" if not run.loaded.info.has_lm_head else "turned off (--no-mlm)"
        )
        return {"skipped": why}
    top1 = [r.mlm["top1_agreement"] for r in results if r.mlm]
    js = [r.mlm["js"] for r in results if r.mlm]
    return {"top1_agreement": spread(top1), "js": spread(js), "perplexity": kernel.perplexity.to_dict()}


def bound_summary(evidence: Evidence, thresholds: Thresholds) -> dict:
    """The report's ``summary.bound``: the agreement's lower bound, whatever ``--gate`` says."""
    agreeing = evidence.agreeing_count()
    return {  # the bound is reported whatever --gate says
        "confidence": thresholds.confidence,
        "agreeing": agreeing,
        "n": evidence.n,
        "lower_bound": agreement_lower_bound(agreeing, evidence.n, thresholds.confidence),
        "gate": thresholds.gate,
    }
