"""Noise floors: how far two correct computations of one function may differ, from this run's numbers.

Two correct paths differ by rounding alone, and rounding depends on the machine: BLAS and cuBLAS
choose other summation orders by CPU, thread count and matrix size, so a value that is exactly 0
on one machine is a few units of roundoff on another (an Intel Xeon with two threads, issue 12). No
gate compares a rounding-level value with 0; each compares it with :data:`FLOOR_FACTOR` times a
rounding the run measures itself, on the same kind of quantity:

- the invariance gate: the padded path's (fair-esm's own, never a fault-injected path's) largest
  pooled distance to the high-precision run;
- the position gate: how far a pooled embedding moves when only the pack's shape changes (the
  position probe runs the sample alone and as the first copy in its pack: the same positions,
  other matrix shapes), or the unit roundoff ``u`` where both shapes rounded identically.

Why 8: measured clean values sit at 0.3 to 1.3 times the rounding they are compared with, on exact
machines and on an emulated machine that rounds by shape (tests/rounding.py); the bugs the gates
exist for at 5 to 100 times the threshold (docs/findings.md, "Noise model of each gate").

:func:`margin` is how the self-test says a bug was caught by more than rounding: the gate's value
over the clean run's value of the same gate.
"""

from __future__ import annotations

import math

import torch

#: How many times the measured rounding a floor allows.
FLOOR_FACTOR = 8.0
#: A self-test catch counts only when the bug's value is at least this many times the clean run's.
REQUIRED_MARGIN = 10.0
#: Gates whose value is "higher is better" (agreement fractions, cosines): their badness is 1 - value.
HIGHER_IS_BETTER = ("agreement >= validate", "agreement > accept", "min cosine")


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u`` of a floating dtype: half its machine epsilon (2**-24 for fp32, 2**-11 for fp16)."""
    return float(torch.finfo(dtype).eps) / 2


def relative_pooled_error(pooled: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``max |pooled - truth| / max |truth|`` per row of two ``(B, D)`` tensors, in fp64: the
    statistic every pooled noise floor is made of (0 for a zero ``truth`` row equal to ``pooled``)."""
    a, b = pooled.double(), truth.double()
    scale = b.abs().amax(1).clamp(min=torch.finfo(torch.float64).tiny)
    return (a - b).abs().amax(1) / scale


def badness(gate: str, value: float | None) -> float:
    """A gate's value turned so that larger is worse and 0 is perfect (1 - agreement, 1 - cosine)."""
    if value is None or not math.isfinite(value):
        return math.inf
    return 1.0 - value if gate in HIGHER_IS_BETTER else value


def margin(gate: str, value: float | None, threshold: float | None, clean_value: float | None) -> float:
    """How many times worse than the clean run a bug left ``gate``.

    The bug's badness over the clean run's, where the clean badness is floored at a tenth of the
    threshold's: a clean value of exactly 0 (this machine happened to round identically) must not
    turn any change into an infinite margin, and a bug then counts as caught by 10x only when it is
    past the threshold itself. Infinite when even the threshold is 0 (a non-finite output).
    ``clean_value`` ``None``: the clean run did not have this gate (it only appears when failing).
    """
    bad = badness(gate, value)
    clean = 0.0 if clean_value is None else badness(gate, clean_value)
    floor = max(clean, badness(gate, threshold) / REQUIRED_MARGIN if threshold is not None else 0.0)
    if not math.isfinite(floor):  # the clean run itself failed this gate: no margin to speak of
        return 0.0
    if floor <= 0:
        return math.inf if bad > 0 else 0.0
    return bad / floor
