"""The decision tree: thresholds, the verdict, and the reasons behind it.

    any non-finite output on either path         -> FALLBACK
    label agreement <  validate_agreement (95 %) -> FALLBACK
    label agreement <= accept_agreement (99 %)   -> VALIDATE
    min cosine <= min_cosine or max MAD >= max_mad -> VALIDATE
    otherwise                                    -> ACCEPT
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field

from esmdiv.errors import EXIT_ACCEPT, EXIT_FALLBACK, EXIT_VALIDATE, UsageError


class Verdict(str, enum.Enum):
    ACCEPT = "ACCEPT"
    VALIDATE = "VALIDATE"
    FALLBACK = "FALLBACK"

    @property
    def exit_code(self) -> int:
        return {Verdict.ACCEPT: EXIT_ACCEPT, Verdict.VALIDATE: EXIT_VALIDATE, Verdict.FALLBACK: EXIT_FALLBACK}[self]


@dataclass(frozen=True)
class Thresholds:
    accept_agreement: float = 0.99  # ACCEPT needs agreement strictly above this
    validate_agreement: float = 0.95  # below this, FALLBACK
    min_cosine: float = 0.99  # every sequence's pooled cosine must be above this
    max_mad: float = 0.01  # every sequence's pooled mean abs diff must be below this

    def __post_init__(self) -> None:
        for name in ("accept_agreement", "validate_agreement"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise UsageError(f"--{name.replace('_', '-')} {value} is out of range (a fraction from 0 to 1)")
        if self.validate_agreement > self.accept_agreement:
            raise UsageError(
                f"--validate-agreement {self.validate_agreement} is above --accept-agreement {self.accept_agreement}"
            )
        if not -1.0 <= self.min_cosine <= 1.0 or math.isnan(self.min_cosine):
            raise UsageError(f"--min-cosine {self.min_cosine} is out of range (-1 to 1)")
        if not self.max_mad > 0 or math.isinf(self.max_mad):
            raise UsageError(f"--max-mad {self.max_mad} must be a positive number")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evidence:
    """What the gates look at, summarised over every audited sequence."""

    n: int
    agreement: float
    min_cosine: float
    max_mad: float
    nonfinite: list[str] = field(default_factory=list)  # one entry per sequence and path


@dataclass
class Reason:
    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decision:
    verdict: Verdict
    reasons: list[Reason]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.value, "reasons": [r.to_dict() for r in self.reasons]}


def decide(evidence: Evidence, thresholds: Thresholds) -> Decision:
    """Map the evidence through the tree in the module docstring; every gate leaves a reason."""
    if evidence.n == 0:
        raise ValueError("no sequences were audited: nothing to decide")
    t = thresholds
    reasons = [
        Reason(
            "finite",
            not evidence.nonfinite,
            float(len(evidence.nonfinite)),
            0.0,
            "every output finite"
            if not evidence.nonfinite
            else f"non-finite output: {'; '.join(evidence.nonfinite[:5])}"
            + (f" (+{len(evidence.nonfinite) - 5} more)" if len(evidence.nonfinite) > 5 else ""),
        ),
        _gate("agreement >= validate", evidence.agreement, t.validate_agreement, evidence.agreement >= t.validate_agreement,
              "label agreement {v:.2%} {op} the FALLBACK floor {t:.2%}", ">=", "<"),
        _gate("agreement > accept", evidence.agreement, t.accept_agreement, evidence.agreement > t.accept_agreement,
              "label agreement {v:.2%} {op} the ACCEPT bar {t:.2%}", ">", "<="),
        _gate("min cosine", evidence.min_cosine, t.min_cosine, evidence.min_cosine > t.min_cosine,
              "lowest pooled cosine {v:.6f} {op} {t}", ">", "<="),
        _gate("max MAD", evidence.max_mad, t.max_mad, evidence.max_mad < t.max_mad,
              "largest pooled mean abs diff {v:.3g} {op} {t}", "<", ">="),
    ]
    failed = {r.gate for r in reasons if not r.passed}
    if "finite" in failed or "agreement >= validate" in failed:
        verdict = Verdict.FALLBACK
    elif failed:
        verdict = Verdict.VALIDATE
    else:
        verdict = Verdict.ACCEPT
    return Decision(verdict, reasons)


def _gate(name: str, value: float, threshold: float, passed: bool, template: str, op_pass: str, op_fail: str) -> Reason:
    passed = bool(passed) and not math.isnan(value)
    message = template.format(v=value, t=threshold, op=op_pass if passed else op_fail)
    return Reason(name, passed, value, threshold, message)
