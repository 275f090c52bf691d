import math
import re
from dataclasses import asdict

import pytest

from esmdiv.errors import UsageError
from esmdiv.measure.decision import (
    Evidence,
    Excused,
    HighPrecisionEvidence,
    InvarianceEvidence,
    PositionEvidence,
    Reason,
    Thresholds,
    Verdict,
    decide,
)
from esmdiv.measure.noise import FLOOR_FACTOR
from esmdiv.measure.stats import agreement_lower_bound

T = Thresholds()


def verdict(agreement=1.0, min_cosine=0.9999, max_mad=1e-4, nonfinite=()):
    return decide(Evidence(100, agreement, min_cosine, max_mad, list(nonfinite)), T).verdict


@pytest.mark.parametrize(
    "agreement, expected",
    [
        (1.0, Verdict.ACCEPT),
        (0.991, Verdict.ACCEPT),
        (0.99, Verdict.VALIDATE),
        (0.97, Verdict.VALIDATE),
        (0.95, Verdict.VALIDATE),
        (0.9499, Verdict.FALLBACK),
        (0.0, Verdict.FALLBACK),
    ],
)
def test_agreement_boundaries(agreement, expected):
    assert verdict(agreement=agreement) is expected


@pytest.mark.parametrize(
    "min_cosine, max_mad, expected",
    [
        (0.99001, 0.00999, Verdict.ACCEPT),
        (0.99, 1e-4, Verdict.VALIDATE),
        (0.5, 1e-4, Verdict.VALIDATE),
        (0.9999, 0.01, Verdict.VALIDATE),
        (0.9999, 0.5, Verdict.VALIDATE),
    ],
)
def test_embedding_gates_make_validate_not_fallback(min_cosine, max_mad, expected):
    assert verdict(min_cosine=min_cosine, max_mad=max_mad) is expected


def test_embedding_gate_with_low_agreement_is_still_fallback():
    assert verdict(agreement=0.9, min_cosine=0.5) is Verdict.FALLBACK


def test_nonfinite_is_fallback_and_named():
    decision = decide(Evidence(3, 1.0, 0.9999, 1e-4, ["seqA: v2 (packed) output not finite"]), T)
    assert decision.verdict is Verdict.FALLBACK
    assert "seqA" in next(r.message for r in decision.reasons if r.gate == "finite")


def test_nan_metric_never_passes_a_gate():
    assert verdict(min_cosine=math.nan) is Verdict.VALIDATE
    assert verdict(agreement=math.nan) is Verdict.FALLBACK


def test_reasons_carry_gate_value_and_threshold():
    decision = decide(Evidence(10, 0.97, 0.98, 0.02), T)
    failed = {r.gate: r for r in decision.reasons if not r.passed}
    assert set(failed) == {"agreement > accept", "min cosine", "max MAD"}
    assert failed["min cosine"].value == 0.98 and failed["min cosine"].threshold == 0.99
    assert "0.98" in failed["min cosine"].message


def test_thresholds_are_options_and_change_the_verdict():
    strict = Thresholds(min_cosine=0.99999)
    assert decide(Evidence(10, 1.0, 0.9999, 1e-4), strict).verdict is Verdict.VALIDATE


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(accept_agreement=1.5),
        dict(validate_agreement=-0.1),
        dict(validate_agreement=0.995),
        dict(min_cosine=2.0),
        dict(max_mad=0.0),
        dict(max_mad=math.inf),
    ],
)
def test_thresholds_out_of_range_are_usage_errors(kwargs):
    with pytest.raises(UsageError, match=r"^--[a-z-]+ "):
        Thresholds(**kwargs)


def test_exit_codes():
    assert [v.exit_code for v in Verdict] == [0, 10, 20]


# --- every option's check, by its message (issue 18: each branch deleted must fail a test) ---------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(accept_agreement=1.0001), "--accept-agreement 1.0001 is out of range (a fraction from 0 to 1)"),
        (dict(accept_agreement=math.nan), "--accept-agreement nan is out of range (a fraction from 0 to 1)"),
        (dict(validate_agreement=-0.1), "--validate-agreement -0.1 is out of range (a fraction from 0 to 1)"),
        (dict(validate_agreement=math.nan), "--validate-agreement nan is out of range (a fraction from 0 to 1)"),
        (dict(validate_agreement=0.995), "--validate-agreement 0.995 is above --accept-agreement 0.99"),
        (dict(min_cosine=1.0001), "--min-cosine 1.0001 is out of range (-1 to 1)"),
        (dict(min_cosine=-1.0001), "--min-cosine -1.0001 is out of range (-1 to 1)"),
        (dict(min_cosine=math.nan), "--min-cosine nan is out of range (-1 to 1)"),
        (dict(max_mad=0.0), "--max-mad 0.0 must be a positive number"),
        (dict(max_mad=math.nan), "--max-mad nan must be a positive number"),
        (dict(max_mad=math.inf), "--max-mad inf must be a positive number"),
        (dict(max_reference_ratio=0.999), "--max-reference-ratio 0.999 must be a number of at least 1"),
        (dict(max_reference_ratio=math.inf), "--max-reference-ratio inf must be a number of at least 1"),
        (dict(max_reference_ratio=math.nan), "--max-reference-ratio nan must be a number of at least 1"),
        (dict(max_invariance_ratio=0.5), "--max-invariance-ratio 0.5 must be a number of at least 1"),
        (dict(max_invariance_ratio=math.inf), "--max-invariance-ratio inf must be a number of at least 1"),
        (dict(max_algorithm_error=0.0), "--max-algorithm-error 0.0 must be a positive number"),
        (dict(max_algorithm_error=math.inf), "--max-algorithm-error inf must be a positive number"),
        (dict(max_algorithm_error=math.nan), "--max-algorithm-error nan must be a positive number"),
        (dict(gate="upper"), "--gate 'upper' (choose point, bound)"),
        (dict(confidence=0.0), "--confidence 0.0 must be between 0 and 1"),
        (dict(confidence=1.0), "--confidence 1.0 must be between 0 and 1"),
    ],
)
def test_each_threshold_check_says_which_option_and_why(kwargs, message):
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        Thresholds(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(accept_agreement=1.0, validate_agreement=0.0),
        dict(accept_agreement=0.0, validate_agreement=0.0),
        dict(accept_agreement=0.97, validate_agreement=0.97),
        dict(min_cosine=1.0),
        dict(min_cosine=-1.0),
        dict(max_mad=1e-300),
        dict(max_reference_ratio=1.0, max_invariance_ratio=1.0),
        dict(max_algorithm_error=1e-9),
        dict(gate="bound", confidence=0.5),
        dict(gate="point", confidence=0.999),
    ],
)
def test_thresholds_on_the_edge_of_their_range_are_accepted(kwargs):
    thresholds = Thresholds(**kwargs)
    assert {k: getattr(thresholds, k) for k in kwargs} == kwargs


def test_thresholds_report_every_field():
    assert Thresholds(gate="bound").to_dict() == {
        "accept_agreement": 0.99,
        "validate_agreement": 0.95,
        "min_cosine": 0.99,
        "max_mad": 0.01,
        "max_reference_ratio": 2.0,
        "max_invariance_ratio": 2.0,
        "max_algorithm_error": None,
        "gate": "bound",
        "confidence": 0.95,
    }


def test_no_sequences_is_an_error_not_a_verdict():
    with pytest.raises(ValueError, match="^no sequences were audited: nothing to decide$"):
        decide(Evidence(0, math.nan, math.nan, math.nan), T)


def test_the_agreeing_count_is_given_or_rounded_and_nan_counts_none():
    assert Evidence(100, 0.29, 1.0, 0.0).agreeing_count() == 29  # 0.29 * 100 is 28.999999999999996
    assert Evidence(100, 0.29, 1.0, 0.0, agreeing=3).agreeing_count() == 3
    assert Evidence(100, math.nan, 1.0, 0.0).agreeing_count() == 0


def test_the_position_threshold_is_the_floor_factor_times_the_larger_of_rounding_and_unit():
    assert PositionEvidence(0.0, 3e-7, 2**-24, 1).threshold == FLOOR_FACTOR * 3e-7
    assert PositionEvidence(0.0, 0.0, 2**-24, 1).threshold == FLOOR_FACTOR * 2**-24


# --- the reasons the reports show, word for word ----------------------------------------------------


def _every_gate_passing():
    return Evidence(
        200,
        0.995,
        0.9991,
        2.5e-3,
        high_precision=HighPrecisionEvidence(True, 1.5, algorithm_error=1e-6, algorithm_tolerance=2e-6),
        invariance=InvarianceEvidence(1e-6, 1.5e-6, 1e-7),
        position=PositionEvidence(2e-7, 1e-7, 2**-24, 16384),
    )


def test_a_clean_run_passes_every_gate_and_says_so():
    decision = decide(_every_gate_passing(), T)
    assert decision.verdict is Verdict.ACCEPT
    assert decision.reasons == [
        Reason("finite", True, 0.0, 0.0, "every output finite"),
        Reason(
            "agreement >= validate",
            True,
            0.995,
            0.95,
            "label agreement 99.50% >= the FALLBACK floor 95.00% (packed vs padded)",
        ),
        Reason(
            "agreement > accept", True, 0.995, 0.99, "label agreement 99.50% > the ACCEPT bar 99.00% (packed vs padded)"
        ),
        Reason("min cosine", True, 0.9991, 0.99, "lowest pooled cosine 0.9991000 > 0.99 (packed vs padded)"),
        Reason("max MAD", True, 2.5e-3, 0.01, "largest pooled mean abs diff 0.0025 < 0.01 (packed vs padded)"),
        Reason(
            "reference ratio",
            True,
            1.5,
            2.0,
            "packed path's distance to the reference is 1.5x the padded path's <= 2.0x",
        ),
        Reason(
            "algorithm",
            True,
            1e-6,
            2e-6,
            "packed algorithm at reference precision: rel-L2 to the reference 1e-06 <= 2e-06",
        ),
        Reason(
            "invariance",
            True,
            1.5e-6,
            2e-6,
            "packed path moved up to 1.5e-06 with other neighbours <= 2e-06 (2x the padded path's 1e-06)",
        ),
        Reason(
            "position",
            True,
            2e-7,
            FLOOR_FACTOR * 1e-7,
            "packed output moved by 2e-07 (relative) when the sequences sat 16,384 positions further down the "
            "pack <= 8e-07 (8x the 1e-07 a change of pack shape alone moved it)",
        ),
    ]
    assert decision.notes == [
        "with 200 sequences the 95% lower bound of the agreement cannot exceed 98.51% even with no "
        "disagreement; 299 sequences are needed to show more than 99%"
    ]
    assert decision.tolerances == {
        "accept_agreement": {"needed": 0.995, "passes_if": "--accept-agreement below 0.995"},
        "min_cosine": {"needed": 0.9991, "passes_if": "--min-cosine below 0.9991"},
        "max_mad": {"needed": 2.5e-3, "passes_if": "--max-mad above 0.0025"},
        "max_reference_ratio": {"needed": 1.5, "passes_if": "--max-reference-ratio at least 1.5"},
        "max_algorithm_error": {"needed": 1e-6, "passes_if": "--max-algorithm-error at least 1e-06"},
    }
    assert decision.to_dict() == {"verdict": "ACCEPT", "reasons": [asdict(r) for r in decision.reasons]}


def test_enough_sequences_leave_no_note_about_the_bound():
    evidence = Evidence(299, 1.0, 0.9999, 1e-4)
    assert decide(evidence, T).notes == []
    assert decide(Evidence(298, 1.0, 0.9999, 1e-4), T).notes != []


def test_a_failing_run_names_every_broken_gate():
    evidence = Evidence(
        10,
        0.9,
        0.98,
        0.02,
        nonfinite=[f"s{i}: v2 (packed)" for i in range(7)],
        high_precision=HighPrecisionEvidence(False, math.nan),
        excused={"min cosine": Excused(2, 0.97, 0.975), "max MAD": Excused(1, 0.03, 0.02)},
        dtype="fp16",
    )
    decision = decide(evidence, Thresholds(gate="bound"))
    assert decision.verdict is Verdict.FALLBACK
    bound = agreement_lower_bound(9, 10, 0.95)
    assert decision.reasons == [
        Reason(
            "finite",
            False,
            7.0,
            0.0,
            "non-finite output: s0: v2 (packed); s1: v2 (packed); s2: v2 (packed); s3: v2 (packed); "
            "s4: v2 (packed) (+2 more)",
        ),
        Reason(
            "reference finite",
            False,
            None,
            None,
            "the reference run went non-finite: the audit cannot vouch for either path",
        ),
        Reason(
            "agreement >= validate",
            False,
            0.9,
            0.95,
            "label agreement 90.00% < the FALLBACK floor 95.00% (packed vs padded)",
        ),
        Reason(
            "agreement > accept",
            False,
            bound,
            0.99,
            f"label agreement 95% lower bound {bound:.2%} <= the ACCEPT bar 99.00% (packed vs padded)",
        ),
        Reason(
            "min cosine",
            False,
            0.98,
            0.99,
            "lowest pooled cosine 0.9800000 <= 0.99 (packed vs padded); 2 sequence(s) past the bar (down to "
            "0.9700000) excused: the packed path is no farther from the reference than 2x the padded path's "
            "largest distance to it",
        ),
        Reason(
            "max MAD",
            False,
            0.02,
            0.01,
            "largest pooled mean abs diff 0.02 >= 0.01 (packed vs padded); 1 sequence(s) past the bar (down to "
            "0.03) excused: the packed path is no farther from the reference than 2x the padded path's largest "
            "distance to it",
        ),
    ]
    assert decision.notes == [
        "with 10 sequences the 95% lower bound of the agreement cannot exceed 74.11% even with no "
        "disagreement; 299 sequences are needed to show more than 99%",
        "fp16 is too coarse for --min-cosine 0.99 on 2 sequence(s): the padded path itself reaches 0.9750000 "
        "against the reference; they pass because the packed path is no farther from it than 2x that",
        "fp16 is too coarse for --max-mad 0.01 on 1 sequence(s): the padded path itself reaches 0.02 against "
        "the reference; they pass because the packed path is no farther from it than 2x that",
    ]
    assert decision.tolerances == {
        "accept_agreement": {"needed": bound, "passes_if": f"--accept-agreement below {bound:.6g}"},
        "min_cosine": {"needed": 0.98, "passes_if": "--min-cosine below 0.98"},
        "max_mad": {"needed": 0.02, "passes_if": "--max-mad above 0.02"},
    }


@pytest.mark.parametrize("count, more", [(5, ""), (6, " (+1 more)")])
def test_the_finite_reason_shows_five_outputs_and_counts_the_rest(count, more):
    nonfinite = [f"s{i}" for i in range(count)]
    reason = decide(Evidence(10, 1.0, 0.9999, 1e-4, nonfinite), T).reasons[0]
    assert reason == Reason("finite", False, float(count), 0.0, f"non-finite output: s0; s1; s2; s3; s4{more}")


def test_no_excused_sequences_add_nothing_to_the_reasons_or_notes():
    evidence = Evidence(
        10, 1.0, 0.9999, 1e-4, excused={"min cosine": Excused(0, 0.9, 0.9), "max MAD": Excused(0, 1, 1)}
    )
    decision = decide(evidence, T)
    assert [r.message for r in decision.reasons if r.gate in ("min cosine", "max MAD")] == [
        "lowest pooled cosine 0.9999000 > 0.99 (packed vs padded)",
        "largest pooled mean abs diff 0.0001 < 0.01 (packed vs padded)",
    ]
    assert len(decision.notes) == 1  # only the bound's


# --- the high-precision reference: the better reading, its own gates ---------------------------------


def test_the_reference_replaces_a_worse_or_nan_reading_and_names_itself():
    high = HighPrecisionEvidence(
        True, 1.0, agreeing=10, min_cosine=0.995, max_mad=5e-3, algorithm_error=0.0, algorithm_tolerance=1e-6
    )
    decision = decide(Evidence(10, 0.9, math.nan, math.nan, agreeing=9, high_precision=high), T)
    by_gate = {r.gate: r for r in decision.reasons}
    assert by_gate["agreement > accept"].value == 1.0
    assert by_gate["agreement > accept"].message.endswith("(packed vs reference)")
    assert by_gate["min cosine"].value == 0.995 and by_gate["min cosine"].message.endswith("(packed vs reference)")
    assert by_gate["max MAD"].value == 5e-3 and by_gate["max MAD"].message.endswith("(packed vs reference)")
    assert decision.verdict is Verdict.ACCEPT


def test_the_reference_never_replaces_a_reading_at_least_as_good():
    high = HighPrecisionEvidence(True, 1.0, agreeing=9, min_cosine=0.995, max_mad=5e-3, algorithm_error=0.0)
    decision = decide(Evidence(10, 0.9, 0.995, 5e-3, agreeing=9, high_precision=high), T)  # ties
    by_gate = {r.gate: r for r in decision.reasons}
    assert (by_gate["agreement > accept"].value, by_gate["min cosine"].value, by_gate["max MAD"].value) == (
        0.9,
        0.995,
        5e-3,
    )
    assert all(
        by_gate[g].message.endswith("(packed vs padded)") for g in ("agreement > accept", "min cosine", "max MAD")
    )


def test_a_non_finite_reference_is_never_read():
    high = HighPrecisionEvidence(False, 1.0, agreeing=10, min_cosine=0.995, max_mad=5e-3)
    decision = decide(Evidence(10, 0.9, 0.5, 0.5, agreeing=9, high_precision=high), T)
    by_gate = {r.gate: r for r in decision.reasons}
    assert (by_gate["agreement > accept"].value, by_gate["min cosine"].value, by_gate["max MAD"].value) == (
        0.9,
        0.5,
        0.5,
    )
    assert "reference ratio" not in by_gate and "algorithm" not in by_gate


@pytest.mark.parametrize(
    "ratio, error, thresholds, failed",
    [
        (2.0, 1e-6, Thresholds(), set()),  # the bars are inclusive
        (2.0001, 1e-6, Thresholds(), {"reference ratio"}),
        (1.0, 2e-6, Thresholds(), set()),
        (1.0, 2.0001e-6, Thresholds(), {"algorithm"}),
        (2.5, 1e-6, Thresholds(max_reference_ratio=3.0), set()),
        (1.0, 5e-6, Thresholds(max_algorithm_error=1e-5), set()),  # the option overrides the default
        (1.0, 5e-7, Thresholds(max_algorithm_error=1e-7), {"algorithm"}),
        (math.nan, 0.0, Thresholds(), {"reference ratio"}),
    ],
)
def test_the_reference_ratio_and_algorithm_gates(ratio, error, thresholds, failed):
    high = HighPrecisionEvidence(True, ratio, algorithm_error=error, algorithm_tolerance=2e-6)
    decision = decide(Evidence(1000, 1.0, 0.9999, 1e-4, high_precision=high), thresholds)
    assert {r.gate for r in decision.reasons if not r.passed} == failed
    assert decision.verdict is (Verdict.VALIDATE if failed else Verdict.ACCEPT)
    algorithm = next(r for r in decision.reasons if r.gate == "algorithm")
    assert algorithm.threshold == (thresholds.max_algorithm_error or 2e-6)
    assert algorithm.message.endswith(f"{error:.3g} {'>' if 'algorithm' in failed else '<='} {algorithm.threshold:.3g}")


# --- invariance and position: floors made of the run's own rounding -----------------------------------


@pytest.mark.parametrize(
    "invariance, thresholds, passed, allowed, basis",
    [
        ((1e-6, 2e-6), T, True, 2e-6, "2x the padded path's 1e-06"),  # a tuple: no rounding measured
        ((1e-6, 2.1e-6), T, False, 2e-6, "2x the padded path's 1e-06"),
        ((1e-6, 2.9e-6), Thresholds(max_invariance_ratio=3.0), True, 3e-6, "3x the padded path's 1e-06"),
        ((1e-6, 3.1e-6), Thresholds(max_invariance_ratio=3.0), False, 3e-6, "3x the padded path's 1e-06"),
        (
            InvarianceEvidence(0.0, 7e-7, 1e-7),
            T,
            True,
            8e-7,
            "8x the rounding 1e-07 the padded path shows against the reference",
        ),
        (
            InvarianceEvidence(0.0, 9e-7, 1e-7),
            T,
            False,
            8e-7,
            "8x the rounding 1e-07 the padded path shows against the reference",
        ),
        (InvarianceEvidence(4e-7, 8e-7, 1e-7), T, True, 8e-7, "2x the padded path's 4e-07"),  # a tie: the ratio
    ],
)
def test_invariance_allows_the_larger_of_ratio_and_rounding(invariance, thresholds, passed, allowed, basis):
    reason = next(
        r
        for r in decide(Evidence(1000, 1.0, 0.9999, 1e-4, invariance=invariance), thresholds).reasons
        if r.gate == "invariance"
    )
    packed = invariance[1] if isinstance(invariance, tuple) else invariance.packed_moved
    assert (reason.passed, reason.value) == (passed, packed)
    assert reason.threshold == pytest.approx(allowed, rel=1e-12)
    assert reason.message == (
        f"packed path moved up to {packed:.3g} with other neighbours {'<=' if passed else '>'} {allowed:.3g} ({basis})"
    )


def test_invariance_reads_the_padded_movement_not_a_constant():
    evidence = Evidence(1000, 1.0, 0.9999, 1e-4, invariance=(1e-3, 1.9e-3))
    assert decide(evidence, T).verdict is Verdict.ACCEPT
    assert decide(evidence, Thresholds(max_invariance_ratio=1.5)).verdict is Verdict.VALIDATE


@pytest.mark.parametrize(
    "moved, passed",
    [(8e-7, True), (8.01e-7, False), (math.nan, False)],
)
def test_position_passes_up_to_its_threshold_and_nan_fails(moved, passed):
    position = PositionEvidence(moved, 1e-7, 2**-24, 1234)
    reason = decide(Evidence(1000, 1.0, 0.9999, 1e-4, position=position), T).reasons[-1]
    assert reason.gate == "position" and reason.passed is passed and reason.threshold == FLOOR_FACTOR * 1e-7
    assert f"sat 1,234 positions further down the pack {'<=' if passed else '>'} 8e-07" in reason.message


def test_the_bound_reads_the_lower_bound_of_the_agreeing_count():
    evidence = Evidence(1000, 0.999, 0.9999, 1e-4)
    for confidence in (0.9, 0.99):
        reason = decide(evidence, Thresholds(gate="bound", confidence=confidence)).reasons[2]
        assert reason.value == agreement_lower_bound(999, 1000, confidence)
        assert reason.message.startswith(f"label agreement {confidence:.0%} lower bound ")


def test_one_sequence_is_enough_to_decide():
    decision = decide(Evidence(1, 1.0, 0.9999, 1e-4), T)
    assert decision.verdict is Verdict.ACCEPT
    assert decision.notes[0].startswith("with 1 sequences the 95% lower bound of the agreement cannot exceed 5.00%")


def test_the_bound_note_uses_the_confidence_and_needs_the_ceiling_strictly_above_the_bar():
    note = decide(Evidence(10, 1.0, 0.9999, 1e-4), Thresholds(gate="bound", confidence=0.9)).notes[0]
    ceiling = agreement_lower_bound(10, 10, 0.9)
    assert note == (
        f"with 10 sequences the 90% lower bound of the agreement cannot exceed {ceiling:.2%} even with no "
        "disagreement; 230 sequences are needed to show more than 99%"
    )
    # a ceiling exactly at the bar cannot clear it (ACCEPT needs strictly above)
    at_the_bar = Thresholds(accept_agreement=agreement_lower_bound(299, 299, 0.95))
    assert len(decide(Evidence(299, 1.0, 0.9999, 1e-4), at_the_bar).notes) == 1


def test_a_small_excused_mad_is_written_in_lower_case_exponents():
    evidence = Evidence(1000, 1.0, 0.9999, 5e-6, excused={"max MAD": Excused(1, 3e-5, 2e-5)}, dtype="bf16")
    decision = decide(evidence, Thresholds(max_mad=1e-5))
    mad = next(r for r in decision.reasons if r.gate == "max MAD")
    assert mad.message.endswith(
        "(down to 3e-05) excused: the packed path is no farther from the reference than 2x the padded path's "
        "largest distance to it"
    )
    assert "the padded path itself reaches 2e-05 against the reference" in decision.notes[-1]


def test_a_failed_reference_ratio_says_so():
    high = HighPrecisionEvidence(True, 2.5, algorithm_error=0.0, algorithm_tolerance=1e-6)
    reason = decide(Evidence(1000, 1.0, 0.9999, 1e-4, high_precision=high), T).reasons[5]
    assert reason == Reason(
        "reference ratio", False, 2.5, 2.0, "packed path's distance to the reference is 2.5x the padded path's > 2.0x"
    )
