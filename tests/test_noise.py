"""Noise floors and self-test margins (esmdiv.measure.noise) against hand values."""

import math

import pytest
import torch

from esmdiv.measure.noise import (
    FLOOR_FACTOR,
    REQUIRED_MARGIN,
    badness,
    margin,
    relative_pooled_error,
    unit_roundoff,
)


def test_unit_roundoff_is_half_the_machine_epsilon():
    assert unit_roundoff(torch.float32) == 2.0**-24
    assert unit_roundoff(torch.float16) == 2.0**-11
    assert unit_roundoff(torch.bfloat16) == 2.0**-8
    assert unit_roundoff(torch.float64) == 2.0**-53


def test_relative_pooled_error_is_the_largest_difference_over_the_largest_magnitude_per_row():
    truth = torch.tensor([[1.0, -4.0, 2.0], [0.5, 0.25, 0.0]])
    pooled = torch.tensor([[1.5, -4.0, 2.0], [0.5, 0.0, 0.0]])
    assert relative_pooled_error(pooled, truth).tolist() == [0.5 / 4.0, 0.25 / 0.5]
    # a zero reference row equal to the path: 0, not NaN
    assert relative_pooled_error(torch.zeros(1, 3), torch.zeros(1, 3)).tolist() == [0.0]


def test_badness_turns_every_gate_so_that_larger_is_worse():
    assert badness("agreement > accept", 0.97) == pytest.approx(0.03)
    assert badness("min cosine", 0.999) == pytest.approx(1e-3)
    assert badness("max MAD", 0.02) == 0.02 and badness("position", 3e-6) == 3e-6
    assert badness("invariance", None) == math.inf and badness("max MAD", math.nan) == math.inf


def test_margin_is_the_bug_over_the_clean_run():
    # a clean value well above the floor: the plain ratio
    assert margin("position", 1.6e-5, 3.5e-6, 4e-7) == pytest.approx(40)
    # a bug 1.7x the clean run's value is a coin toss, whatever the threshold says (issue 12)
    assert margin("invariance", 2.03e-6, 0.0, 1.19e-6) == pytest.approx(2.03 / 1.19)
    assert margin("invariance", 2.03e-6, 0.0, 1.19e-6) < REQUIRED_MARGIN
    # higher-is-better gates compare 1 - value
    assert margin("min cosine", 0.9, 0.99, 0.9999) == pytest.approx(0.1 / 1e-3)
    assert margin("agreement >= validate", 17 / 18, 0.95, 1.0) == pytest.approx((1 / 18) / 0.005)


def test_margin_floors_a_clean_zero_at_a_tenth_of_the_threshold():
    # this machine rounded identically (clean 0): 10x only once the bug is past the threshold itself
    assert margin("position", 3.49e-6, 3.49e-6, 0.0) == pytest.approx(REQUIRED_MARGIN)
    assert margin("position", 1.0e-6, 3.49e-6, 0.0) < REQUIRED_MARGIN
    assert margin("position", 1.6e-5, 3.49e-6, 0.0) == pytest.approx(1.6e-5 / 3.49e-7)


def test_margin_edge_cases():
    assert margin("finite", 3.0, 0.0, 0.0) == math.inf  # any non-finite output against none
    assert margin("finite", 0.0, 0.0, 0.0) == 0.0
    assert margin("max MAD", 0.5, 0.01, math.nan) == 0.0  # the clean run failed this gate itself
    assert margin("reference finite", None, None, None) == math.inf  # clean runs never have this gate


def test_floor_factor_sits_between_clean_and_bug_values_measured_on_the_cpu():
    # docs/findings.md: clean values sit at 0.3-1.3x the rounding they are compared with
    assert 1.3 < FLOOR_FACTOR <= 10


def test_margin_without_a_threshold_or_a_clean_value():
    # no threshold: the floor is the clean run's badness alone
    assert margin("invariance", 5e-6, None, 1e-6) == pytest.approx(5.0)
    # a gate the clean run did not have: the floor is a tenth of the threshold
    assert margin("invariance", 5e-6, 1e-6, None) == pytest.approx(50.0)
    # any bad value against a floor of exactly 0 is infinitely worse, even a small one
    assert margin("position", 0.5, 0.0, 0.0) == math.inf
