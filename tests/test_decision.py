import math

import pytest

from esmdiv.errors import UsageError
from esmdiv.measure.decision import Evidence, Thresholds, Verdict, decide

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
    with pytest.raises(UsageError):
        Thresholds(**kwargs)


def test_exit_codes():
    assert [v.exit_code for v in Verdict] == [0, 10, 20]
