"""Gates as the reports show them, read from a report dict: which sequences break a gate on their
own, and why a report has no verdict. JUnit (:mod:`esmdiv.report.junit`) and the pages for people
(:mod:`esmdiv.report.plots`, :mod:`esmdiv.report.html`, :mod:`esmdiv.report.markdown`) all ask
these questions; the gates themselves and their consequences are :mod:`esmdiv.measure.decision`'s.
"""

from __future__ import annotations

from esmdiv.measure.decision import AGREEMENT_GATES
from esmdiv.report.text import finite_number


def failed_gates(report: dict) -> set[str]:
    """The names of the gates that failed in ``report`` (empty for a report without reasons)."""
    return {r["gate"] for r in report.get("reasons") or [] if not r.get("passed")}


def agreement_gate_failed(report: dict) -> bool:
    """Whether a label-agreement gate failed: only then does a label flip break a gate."""
    return bool(failed_gates(report) & set(AGREEMENT_GATES))


def sequence_problems(seq: dict, thresholds: dict, agreement_failed: bool) -> list[str]:
    """How one sequence breaks a gate, one readable line each (empty: it breaks none). Where the
    high-precision reference ran for it, the gates read what its ``gates`` entry says (the better
    of packed vs padded and packed vs reference; an excused sequence breaks no distance gate), and a
    flipped label that equals the reference's is no flip."""
    problems = []
    for path, key in (("v1 (padded)", "finite_v1"), ("v2 (packed)", "finite_v2")):
        if not seq.get(key, True):
            problems.append(f"non-finite output on {path} [finite]")
    read = seq.get("gates") or {}
    cos_read, mad_read = read.get("min cosine") or {}, read.get("max MAD") or {}
    cosine = finite_number(cos_read.get("value", seq.get("cosine")))
    mad = finite_number(mad_read.get("value", seq.get("mad")))
    if cosine is not None and not cosine > thresholds["min_cosine"] and not cos_read.get("excused"):
        problems.append(f"pooled cosine {cosine:.10g} <= {thresholds['min_cosine']:g} [min cosine]")
    if mad is not None and not mad < thresholds["max_mad"] and not mad_read.get("excused"):
        problems.append(f"pooled MAD {mad:.3e} >= {thresholds['max_mad']:g} [max MAD]")
    reference_label = (seq.get("reference") or {}).get("label")
    flipped = seq.get("label_v1") != seq.get("label_v2") and seq.get("label_v2") != reference_label
    if agreement_failed and flipped:
        problems.append(f"label flipped {seq.get('label_v1')} -> {seq.get('label_v2')} [label agreement]")
    return problems


def incomplete_reason(report: dict) -> str:
    """Why a report with ``complete: false`` has no verdict: its error message and exit code."""
    error = report.get("error")
    if isinstance(error, dict):
        text = error.get("message") or str(error)
        if error.get("exit_code") is not None:
            text += f" (exit {error['exit_code']})"
        return text
    return str(error) if error else "the report is marked incomplete and says no more"
