"""The per-sequence gates the reports show (esmdiv/report/gates.py), read from report dicts."""

import pytest

from esmdiv.report.gates import agreement_gate_failed, failed_gates, incomplete_reason, sequence_problems

BARS = {"min_cosine": 0.99, "max_mad": 0.01}


def test_failed_gates_are_the_reasons_that_did_not_pass():
    report = {
        "reasons": [
            {"gate": "finite", "passed": True},
            {"gate": "min cosine", "passed": False},
            {"gate": "max MAD"},  # no "passed": not passed
        ]
    }
    assert failed_gates(report) == {"min cosine", "max MAD"}
    assert failed_gates({}) == set() and failed_gates({"reasons": None}) == set()


@pytest.mark.parametrize(
    "gate, failed",
    [("agreement >= validate", True), ("agreement > accept", True), ("min cosine", False)],
)
def test_only_an_agreement_gate_makes_a_flip_count(gate, failed):
    assert agreement_gate_failed({"reasons": [{"gate": gate, "passed": False}]}) is failed
    assert agreement_gate_failed({"reasons": [{"gate": gate, "passed": True}]}) is False


def test_a_clean_sequence_breaks_nothing():
    seq = {"cosine": 0.995, "mad": 0.005, "label_v1": 1, "label_v2": 1, "finite_v1": True, "finite_v2": True}
    assert sequence_problems(seq, BARS, True) == []
    assert sequence_problems({}, BARS, True) == []  # nothing read, nothing broken


def test_every_problem_of_one_sequence_in_order():
    seq = {"cosine": 0.99, "mad": 0.01, "label_v1": 0, "label_v2": 2, "finite_v1": False, "finite_v2": False}
    assert sequence_problems(seq, BARS, True) == [
        "non-finite output on v1 (padded) [finite]",
        "non-finite output on v2 (packed) [finite]",
        "pooled cosine 0.99 <= 0.99 [min cosine]",
        "pooled MAD 1.000e-02 >= 0.01 [max MAD]",
        "label flipped 0 -> 2 [label agreement]",
    ]


@pytest.mark.parametrize("key, path", [("finite_v1", "v1 (padded)"), ("finite_v2", "v2 (packed)")])
def test_each_path_is_named_when_it_went_non_finite(key, path):
    assert sequence_problems({key: False}, BARS, False) == [f"non-finite output on {path} [finite]"]


def test_the_bars_are_strict_and_a_non_number_is_not_read():
    assert sequence_problems({"cosine": 0.9900001, "mad": 0.0099999}, BARS, False) == []
    assert sequence_problems({"cosine": 0.5}, {"min_cosine": 0.4, "max_mad": 1.0}, False) == []
    assert sequence_problems({"cosine": None, "mad": "0.5"}, BARS, False) == []
    assert sequence_problems({"cosine": 0.123456789012}, BARS, False) == [
        "pooled cosine 0.123456789 <= 0.99 [min cosine]"
    ]


def test_a_flip_breaks_the_gate_only_when_an_agreement_gate_failed():
    seq = {"label_v1": 0, "label_v2": 1}
    assert sequence_problems(seq, BARS, False) == []
    assert sequence_problems(seq, BARS, True) == ["label flipped 0 -> 1 [label agreement]"]


def test_the_reference_reading_replaces_the_raw_one_and_an_excused_sequence_breaks_no_distance_gate():
    seq = {
        "cosine": 0.5,
        "mad": 0.5,
        "gates": {"min cosine": {"value": 0.995}, "max MAD": {"value": 0.001}},
    }
    assert sequence_problems(seq, BARS, False) == []
    seq["gates"] = {"min cosine": {"value": 0.98, "excused": True}, "max MAD": {"value": 0.02, "excused": True}}
    assert sequence_problems(seq, BARS, False) == []
    seq["gates"] = {"min cosine": {"value": 0.98}, "max MAD": {"value": 0.02, "excused": False}}
    assert sequence_problems(seq, BARS, False) == [
        "pooled cosine 0.98 <= 0.99 [min cosine]",
        "pooled MAD 2.000e-02 >= 0.01 [max MAD]",
    ]
    seq["gates"] = {"min cosine": {"excused": False}}  # no value: the raw reading
    assert sequence_problems(seq, BARS, False) == [
        "pooled cosine 0.5 <= 0.99 [min cosine]",
        "pooled MAD 5.000e-01 >= 0.01 [max MAD]",
    ]


def test_a_flip_to_the_reference_label_is_no_flip():
    seq = {"label_v1": 0, "label_v2": 1, "reference": {"label": 1}}
    assert sequence_problems(seq, BARS, True) == []
    seq["reference"] = {"label": 0}
    assert sequence_problems(seq, BARS, True) == ["label flipped 0 -> 1 [label agreement]"]
    seq["reference"] = None
    assert sequence_problems(seq, BARS, True) == ["label flipped 0 -> 1 [label agreement]"]


@pytest.mark.parametrize(
    "error, reason",
    [
        ({"message": "model: no such file", "exit_code": 2}, "model: no such file (exit 2)"),
        ({"message": "out of memory", "exit_code": 0}, "out of memory (exit 0)"),
        ({"message": "interrupted", "exit_code": None}, "interrupted"),
        ({"message": "", "stage": "model"}, "{'message': '', 'stage': 'model'}"),
        ("a plain string", "a plain string"),
        (None, "the report is marked incomplete and says no more"),
        ("", "the report is marked incomplete and says no more"),
    ],
)
def test_an_incomplete_report_says_why(error, reason):
    assert incomplete_reason({"complete": False, "error": error}) == reason
