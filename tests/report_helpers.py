"""Helpers for the report tests: schema validation and synthetic failing reports."""

from __future__ import annotations

import copy
import math
import random

from esmdiv.measure.decision import Evidence, Thresholds, decide
from esmdiv.report.schemas import validation_errors


def assert_valid(report: dict) -> None:
    errors = validation_errors(report)
    assert not errors, "report breaks the schema:\n" + "\n".join(errors[:20])


def synthetic_trace(layers: int = 6, seed: int = 0) -> list[dict]:
    """A per-layer curve of the shape the lead's trace writes: divergence growing with depth."""
    rng = random.Random(seed)
    out = []
    for layer in range(layers + 1):
        rel = 1e-4 * (1.6**layer) * (1 + 0.2 * rng.random())
        out.append({"layer": layer, "max_abs_diff": rel * 40, "rel_l2": rel, "cosine": 1 - rel * rel / 2})
    return out


def _read(seq: dict, gate: str, value: float) -> None:
    """What the gate reads for a degraded sequence where the report has per-sequence readings: the
    new value, not excused (the reference did not run on the degraded numbers)."""
    if "gates" in seq:
        seq["gates"][gate] = {"value": value, "source": "packed vs padded", "excused": False}


def degraded(report: dict, low_cosine=(), high_mad=(), flips=(), nonfinite=(), trace: bool = False) -> dict:
    """A copy of a real report with chosen sequences (by index) pushed past the gates, and its
    summary, reasons and verdict recomputed as the auditor would."""
    r = copy.deepcopy(report)
    seqs = r["sequences"]
    for i in low_cosine:
        seqs[i]["cosine"] = 0.985 - 0.001 * i
        _read(seqs[i], "min cosine", seqs[i]["cosine"])
    for i in high_mad:
        seqs[i]["mad"] = 0.012 + 0.001 * i
        _read(seqs[i], "max MAD", seqs[i]["mad"])
    for i in flips:
        seqs[i]["label_v2"] = 1 - seqs[i]["label_v1"]
        seqs[i]["confidence_v2"] = 1 - seqs[i]["confidence_v1"]
    for i in nonfinite:
        seqs[i].update(cosine=None, mad=None, max_abs_diff=None, finite_v2=False)
        seqs[i].pop("gates", None)
    if trace:
        r["trace"] = synthetic_trace(r["model"]["num_layers"])
    n = len(seqs)
    agree = sum(s["label_v1"] == s["label_v2"] for s in seqs)
    finite = [s for s in seqs if s["cosine"] is not None]
    bad = [f"{s['id']}: v2 (packed) output not finite" for s in seqs if not s["finite_v2"]]
    p = r["summary"]["prediction"]
    p.update(agreement=agree / n, disagreements=n - agree)
    cos = [s["cosine"] for s in finite]
    mad = [s["mad"] for s in finite]
    r["summary"]["cosine"] = {"min": min(cos), "mean": sum(cos) / len(cos), "max": max(cos)}
    r["summary"]["mad"] = {"min": min(mad), "mean": sum(mad) / len(mad), "max": max(mad)}
    r["summary"]["nonfinite"] = bad
    decision = decide(Evidence(n, agree / n, min(cos), max(mad), bad), Thresholds(**r["thresholds"]))
    r["verdict"] = decision.verdict.value
    r["reasons"] = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in reason.to_dict().items()}
        for reason in decision.reasons
    ]
    return r
