"""The decision tree: thresholds, the verdict, and the reasons behind it.

    any non-finite output on either path (or on the reference)  -> FALLBACK
    label agreement <  validate_agreement (95 %)                -> FALLBACK
    label agreement <= accept_agreement (99 %)                  -> VALIDATE
    min cosine <= min_cosine or max MAD >= max_mad              -> VALIDATE
    packed farther from the reference than max_reference_ratio
      times the padded path (the evidence pass)                 -> VALIDATE
    the packed algorithm, run at the reference's precision,
      differs from the reference by more than max_algorithm_error -> VALIDATE
    packed moved with its neighbours more than
      max_invariance_ratio times the padded path, and more than
      rounding does (the evidence pass)                         -> VALIDATE
    packed moved when its positions in the pack moved
      by 16,384, more than rounding does (the position probe)   -> VALIDATE
    otherwise                                                   -> ACCEPT

ACCEPT means "no worse than fair-esm's padded path". Where the high-precision reference ran, the
packed path is not punished for being nearer the truth than the padded one, nor for a dtype too
coarse for the thresholds: per sequence, a label counts as agreeing when it equals the padded
path's or the reference's, a cosine or MAD reads the better of "packed vs padded" and "packed vs
reference", and a sequence still past the cosine or MAD bar is excused when the packed path is no
farther from the reference than ``max_reference_ratio`` times the padded path's largest distance to
it on the run, the dtype's rounding on these sequences (the decision's notes then say the dtype is
too coarse for the bar). Gates whose clean value is rounding compare with a
floor made from the run's own numbers, never with 0 (:mod:`esmdiv.measure.noise`). With
``gate="bound"`` the ACCEPT bar reads the one-sided Clopper-Pearson lower bound of the agreement
instead of the point estimate; the FALLBACK floor keeps the point estimate (too few sequences is a
reason to look, not evidence against the packed path).
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field

from esmdiv.errors import EXIT_ACCEPT, EXIT_FALLBACK, EXIT_VALIDATE, UsageError
from esmdiv.measure.noise import FLOOR_FACTOR
from esmdiv.measure.stats import agreement_lower_bound, sequences_needed

GATE_MODES = ("point", "bound")
#: Gates whose failure alone makes the verdict FALLBACK; any other failed gate makes it VALIDATE.
FALLBACK_GATES = ("finite", "reference finite", "agreement >= validate")
#: The gates that read label agreement (a label flip breaks a gate only when one of them fails).
AGREEMENT_GATES = ("agreement >= validate", "agreement > accept")


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
    max_reference_ratio: float = 2.0  # packed's distance to the reference / padded's, at most
    max_invariance_ratio: float = 2.0  # packed's movement with its neighbours / padded's, at most
    max_algorithm_error: float | None = None  # None: high_precision.algorithm_tolerance
    gate: str = "point"  # agreement gates on the point estimate or on its lower bound
    confidence: float = 0.95  # of that lower bound

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
        for name in ("max_reference_ratio", "max_invariance_ratio"):
            value = getattr(self, name)
            if not value >= 1 or math.isinf(value):
                raise UsageError(f"--{name.replace('_', '-')} {value} must be a number of at least 1")
        if self.max_algorithm_error is not None and not (0 < self.max_algorithm_error < math.inf):
            raise UsageError(f"--max-algorithm-error {self.max_algorithm_error} must be a positive number")
        if self.gate not in GATE_MODES:
            raise UsageError(f"--gate '{self.gate}' (choose {', '.join(GATE_MODES)})")
        if not 0 < self.confidence < 1:
            raise UsageError(f"--confidence {self.confidence} must be between 0 and 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HighPrecisionEvidence:
    """The packed path measured against the high-precision run (the evidence pass)."""

    finite: bool  # the reference itself stayed finite
    ratio: float  # mean rel-L2 (packed, ref) / mean rel-L2 (padded, ref), residue level
    # Summary-level readings of packed vs the reference, for callers that have no per-sequence
    # readings (the audit passes per-sequence ones in Evidence and leaves these None).
    agreeing: int | None = None  # sequences whose packed label equals the reference label
    min_cosine: float | None = None  # packed vs reference, lowest pooled cosine
    max_mad: float | None = None  # packed vs reference, largest pooled MAD
    algorithm_error: float = math.nan  # the packed algorithm at reference precision: largest rel-L2, residues or pooled
    algorithm_tolerance: float = math.nan  # its default limit (esmdiv.forward.high_precision.algorithm_tolerance)


@dataclass
class Excused:
    """Sequences past a cosine or MAD bar whose packed path is no farther from the reference than
    ``max_reference_ratio`` times the padded path's largest distance to it on the run: the dtype,
    not the packed path, is too coarse."""

    count: int
    worst: float  # their worst value of the gate's measure (lowest cosine, largest MAD)
    padded_worst: float  # the padded path's own worst value of that measure against the reference, on the run


@dataclass
class InvarianceEvidence:
    """Largest pooled movement with other neighbours, each path; and the rounding it is measured
    against: the padded path's largest pooled distance to the reference (absolute)."""

    padded_moved: float
    packed_moved: float
    rounding: float = 0.0


@dataclass
class PositionEvidence:
    """The position probe: the largest relative pooled movement when the sample moved ``offset``
    positions down a pack of the same shape, and the largest that a change of pack shape alone
    caused (``rounding``), both at the precision whose unit roundoff is ``unit``."""

    moved: float
    rounding: float
    unit: float
    offset: int

    @property
    def threshold(self) -> float:
        """:data:`FLOOR_FACTOR` times the measured rounding, or times ``unit`` on a machine that
        happened to round both shapes identically."""
        return FLOOR_FACTOR * max(self.rounding, self.unit)


@dataclass
class Evidence:
    """What the gates look at, summarised over every audited sequence."""

    n: int
    agreement: float  # per sequence, packed agrees with padded (or the reference); lowest over all heads
    min_cosine: float  # lowest pooled cosine the gate reads (excused sequences left out)
    max_mad: float  # largest pooled MAD the gate reads (excused sequences left out)
    nonfinite: list[str] = field(default_factory=list)  # one entry per sequence and path
    agreeing: int | None = None  # count behind ``agreement`` (for the bound); derived when None
    high_precision: HighPrecisionEvidence | None = None
    invariance: InvarianceEvidence | tuple[float, float] | None = None
    position: PositionEvidence | None = None
    agreement_source: str = "packed vs padded"
    cosine_source: str = "packed vs padded"
    mad_source: str = "packed vs padded"
    excused: dict[str, Excused] = field(default_factory=dict)  # by gate: "min cosine", "max MAD"
    dtype: str = "the run's dtype"  # named in the note when the dtype is too coarse for a bar

    def agreeing_count(self) -> int:
        """``agreeing``, or the count behind ``agreement`` (0 for NaN: unknown counts as none)."""
        if self.agreeing is not None:
            return self.agreeing
        return 0 if math.isnan(self.agreement) else round(self.agreement * self.n)


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
    tolerances: dict = field(default_factory=dict)  # the loosest value each gate actually needed
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.value, "reasons": [r.to_dict() for r in self.reasons]}


def decide(evidence: Evidence, thresholds: Thresholds) -> Decision:
    """Map the evidence through the tree in the module docstring; every gate leaves a reason."""
    if evidence.n == 0:
        raise ValueError("no sequences were audited: nothing to decide")
    readings = _readings(evidence)
    gated, label = _accept_bar(evidence, thresholds, readings)
    reasons = [
        *_finite_reasons(evidence),
        *_agreement_and_distance_reasons(thresholds, readings, gated, label, evidence.excused),
        *_high_precision_reasons(evidence, thresholds),
        *_invariance_reasons(evidence, thresholds),
        *_position_reasons(evidence),
    ]
    notes = _notes(evidence, thresholds) + _coarse_dtype_notes(evidence, thresholds)
    return Decision(_verdict(reasons), reasons, _tolerances(evidence, readings, gated), notes)


@dataclass
class _Readings:
    """What the agreement, cosine and MAD gates read, and against which path (the better of
    packed vs padded and packed vs the high-precision run)."""

    agreeing: int
    agreement: float
    agreement_source: str
    min_cosine: float
    cosine_source: str
    max_mad: float
    mad_source: str


def _readings(evidence: Evidence) -> _Readings:
    """What the evidence says, and, where a caller gave only summary-level readings of a finite
    high-precision run, the better of those and packed vs padded."""
    r = _Readings(
        evidence.agreeing_count(),
        evidence.agreement,
        evidence.agreement_source,
        evidence.min_cosine,
        evidence.cosine_source,
        evidence.max_mad,
        evidence.mad_source,
    )
    high = evidence.high_precision
    if high is None or not high.finite:
        return r
    source = "packed vs reference"
    if high.agreeing is not None and high.agreeing > r.agreeing:
        r.agreeing, r.agreement, r.agreement_source = high.agreeing, high.agreeing / evidence.n, source
    if high.min_cosine is not None and (high.min_cosine > r.min_cosine or math.isnan(r.min_cosine)):
        r.min_cosine, r.cosine_source = high.min_cosine, source
    if high.max_mad is not None and (high.max_mad < r.max_mad or math.isnan(r.max_mad)):
        r.max_mad, r.mad_source = high.max_mad, source
    return r


def _accept_bar(evidence: Evidence, t: Thresholds, readings: _Readings) -> tuple[float, str]:
    """The value the ACCEPT bar reads (the agreement, or its lower bound with ``gate="bound"``)
    and how the reason names it."""
    if t.gate == "bound":
        bound = agreement_lower_bound(readings.agreeing, evidence.n, t.confidence) if evidence.n else 0.0
        return bound, f"label agreement {t.confidence:.0%} lower bound"
    return readings.agreement, "label agreement"


def _notes(evidence: Evidence, t: Thresholds) -> list[str]:
    """Say when there are too few sequences for the bound to clear the ACCEPT bar at all."""
    ceiling = agreement_lower_bound(evidence.n, evidence.n, t.confidence)
    if ceiling > t.accept_agreement:
        return []
    return [
        f"with {evidence.n} sequences the {t.confidence:.0%} lower bound of the agreement cannot exceed "
        f"{ceiling:.2%} even with no disagreement; {sequences_needed(t.accept_agreement, t.confidence)} "
        f"sequences are needed to show more than {t.accept_agreement:.0%}"
    ]


def _finite_reasons(evidence: Evidence) -> list[Reason]:
    reasons = [_finite_reason(evidence)]
    high = evidence.high_precision
    if high is not None and not high.finite:
        reasons.append(
            Reason(
                "reference finite",
                False,
                None,
                None,
                "the reference run went non-finite: the audit cannot vouch for either path",
            )
        )
    return reasons


def _agreement_and_distance_reasons(
    t: Thresholds, r: _Readings, gated: float, label: str, excused: dict[str, Excused]
) -> list[Reason]:
    def also(gate: str, worst: str) -> str:
        e = excused.get(gate)
        if e is None or not e.count:
            return ""
        return (
            f"; {e.count} sequence(s) past the bar (down to {worst.format(e.worst)}) excused: the packed path is no "
            f"farther from the reference than {t.max_reference_ratio:g}x the padded path's largest distance to it"
        )

    return [
        _gate(
            "agreement >= validate",
            r.agreement,
            t.validate_agreement,
            r.agreement >= t.validate_agreement,
            f"label agreement {{v:.2%}} {{op}} the FALLBACK floor {{t:.2%}} ({r.agreement_source})",
            ">=",
            "<",
        ),
        _gate(
            "agreement > accept",
            gated,
            t.accept_agreement,
            gated > t.accept_agreement,
            f"{label} {{v:.2%}} {{op}} the ACCEPT bar {{t:.2%}} ({r.agreement_source})",
            ">",
            "<=",
        ),
        _gate(
            "min cosine",
            r.min_cosine,
            t.min_cosine,
            r.min_cosine > t.min_cosine,
            f"lowest pooled cosine {{v:.7f}} {{op}} {{t}} ({r.cosine_source}){also('min cosine', '{:.7f}')}",
            ">",
            "<=",
        ),
        _gate(
            "max MAD",
            r.max_mad,
            t.max_mad,
            r.max_mad < t.max_mad,
            f"largest pooled mean abs diff {{v:.3g}} {{op}} {{t}} ({r.mad_source}){also('max MAD', '{:.3g}')}",
            "<",
            ">=",
        ),
    ]


def _high_precision_reasons(evidence: Evidence, t: Thresholds) -> list[Reason]:
    high = evidence.high_precision
    if high is None or not high.finite:
        return []
    algorithm_limit = t.max_algorithm_error or high.algorithm_tolerance
    return [
        _gate(
            "reference ratio",
            high.ratio,
            t.max_reference_ratio,
            high.ratio <= t.max_reference_ratio,
            "packed path's distance to the reference is {v:.3g}x the padded path's {op} {t}x",
            "<=",
            ">",
        ),
        _gate(
            "algorithm",
            high.algorithm_error,
            algorithm_limit,
            high.algorithm_error <= algorithm_limit,
            "packed algorithm at reference precision: rel-L2 to the reference {v:.3g} {op} {t:.3g}",
            "<=",
            ">",
        ),
    ]


def _invariance_reasons(evidence: Evidence, t: Thresholds) -> list[Reason]:
    """The packed path may move with its neighbours as much as the padded path does (times the
    ratio), or as much as rounding moves a pooled embedding (:data:`FLOOR_FACTOR` times the padded
    path's own distance to the reference): never "not at all", which only some machines manage."""
    inv = evidence.invariance
    if inv is None:
        return []
    if not isinstance(inv, InvarianceEvidence):
        inv = InvarianceEvidence(*inv)
    by_ratio, by_rounding = t.max_invariance_ratio * inv.padded_moved, FLOOR_FACTOR * inv.rounding
    allowed = max(by_ratio, by_rounding)
    passed = inv.packed_moved <= allowed
    basis = (
        f"{t.max_invariance_ratio:g}x the padded path's {inv.padded_moved:.3g}"
        if by_ratio >= by_rounding
        else f"{FLOOR_FACTOR:g}x the rounding {inv.rounding:.3g} the padded path shows against the reference"
    )
    return [
        Reason(
            "invariance",
            passed,
            inv.packed_moved,
            allowed,
            f"packed path moved up to {inv.packed_moved:.3g} with other neighbours {'<=' if passed else '>'} "
            f"{allowed:.3g} ({basis})",
        )
    ]


def _position_reasons(evidence: Evidence) -> list[Reason]:
    """A sequence's packed output must not depend on where in the pack it sits."""
    pos = evidence.position
    if pos is None:
        return []
    passed = pos.moved <= pos.threshold  # NaN fails
    return [
        Reason(
            "position",
            bool(passed),
            pos.moved,
            pos.threshold,
            f"packed output moved by {pos.moved:.3g} (relative) when the sequences sat {pos.offset:,} positions "
            f"further down the pack {'<=' if passed else '>'} {pos.threshold:.3g} ({FLOOR_FACTOR:g}x the "
            f"{max(pos.rounding, pos.unit):.3g} a change of pack shape alone moved it)",
        )
    ]


def _coarse_dtype_notes(evidence: Evidence, t: Thresholds) -> list[str]:
    """Say when sequences passed a cosine or MAD bar only because the dtype itself misses it."""
    notes = []
    for gate, option, fmt in (("min cosine", "--min-cosine", ".7f"), ("max MAD", "--max-mad", ".3g")):
        e = evidence.excused.get(gate)
        if e is not None and e.count:
            threshold = t.min_cosine if gate == "min cosine" else t.max_mad
            notes.append(
                f"{evidence.dtype} is too coarse for {option} {threshold:g} on {e.count} sequence(s): the padded "
                f"path itself reaches {format(e.padded_worst, fmt)} against the reference; they pass because the "
                f"packed path is no farther from it than {t.max_reference_ratio:g}x that"
            )
    return notes


def _verdict(reasons: list[Reason]) -> Verdict:
    failed = {r.gate for r in reasons if not r.passed}
    if failed & set(FALLBACK_GATES):
        return Verdict.FALLBACK
    return Verdict.VALIDATE if failed else Verdict.ACCEPT


def _tolerances(evidence: Evidence, r: _Readings, gated: float) -> dict:
    """For each gate, the loosest threshold this run needed to pass it."""
    tolerances = {
        "accept_agreement": {"needed": gated, "passes_if": f"--accept-agreement below {gated:.6g}"},
        "min_cosine": {"needed": r.min_cosine, "passes_if": f"--min-cosine below {r.min_cosine:.12g}"},
        "max_mad": {"needed": r.max_mad, "passes_if": f"--max-mad above {r.max_mad:.4g}"},
    }
    high = evidence.high_precision
    if high is not None and high.finite:
        tolerances["max_reference_ratio"] = {
            "needed": high.ratio,
            "passes_if": f"--max-reference-ratio at least {high.ratio:.4g}",
        }
        tolerances["max_algorithm_error"] = {
            "needed": high.algorithm_error,
            "passes_if": f"--max-algorithm-error at least {high.algorithm_error:.4g}",
        }
    return tolerances


def _finite_reason(evidence: Evidence) -> Reason:
    if not evidence.nonfinite:
        return Reason("finite", True, 0.0, 0.0, "every output finite")
    shown = "; ".join(evidence.nonfinite[:5])
    more = f" (+{len(evidence.nonfinite) - 5} more)" if len(evidence.nonfinite) > 5 else ""
    return Reason("finite", False, float(len(evidence.nonfinite)), 0.0, f"non-finite output: {shown}{more}")


def _gate(name: str, value: float, threshold: float, passed: bool, template: str, op_pass: str, op_fail: str) -> Reason:
    passed = bool(passed) and not math.isnan(value)
    message = template.format(v=value, t=threshold, op=op_pass if passed else op_fail)
    return Reason(name, passed, value, threshold, message)
