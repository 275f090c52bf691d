"""A machine that rounds differently: GEMM results that depend on the matrix's shape.

BLAS and cuBLAS pick summation orders by CPU, thread count and matrix size, so the same row of a
linear layer can come out one unit of roundoff apart when the batch around it changes. This
machine (an AMD EPYC with MKL) happens to be exact under those changes; an Intel Xeon with two
threads is not (issue 12). :func:`shape_dependent_rounding` makes every machine behave like the
second kind: each ``F.linear`` result is multiplied by ``1 + r * u`` with ``r`` uniform in
``[-1, 1]`` drawn from a generator seeded by the result's shape, ``u`` its dtype's unit roundoff.
The same shape always rounds the same way (the run stays deterministic); another shape does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def shape_dependent_rounding(units: float = 1.0) -> Iterator[None]:
    """Within the block, every ``torch.nn.functional.linear`` rounds by shape (``units`` roundoffs)."""
    real = F.linear

    def linear(x, weight, bias=None):
        y = real(x, weight, bias)
        if not y.is_floating_point():
            return y
        rows = y.numel() // y.shape[-1]
        generator = torch.Generator(device="cpu").manual_seed(rows * 1_000_003 + y.shape[-1])
        r = torch.rand(y.shape, generator=generator, dtype=torch.float64).mul_(2).sub_(1).to(y.device)
        u = float(torch.finfo(y.dtype).eps) / 2
        return (y.double() * (1 + units * u * r)).to(y.dtype)

    torch.nn.functional.linear = linear
    try:
        yield
    finally:
        torch.nn.functional.linear = real
