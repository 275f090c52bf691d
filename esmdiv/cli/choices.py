"""The fixed sets of values options take, as enums: ``--help`` lists them and shells complete them.

The values are the library's own (``tests/test_cli_unix.py`` checks each enum against the tuple
its module validates with, so a value added there and not here fails a test). They are declared
here, free of torch, because the command line must start without importing torch. Commands hand
the library plain strings (:func:`plain`): an enum member never leaves ``esmdiv/cli/``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Choice(str, Enum):
    """An option's value; prints as the value itself."""

    def __str__(self) -> str:
        return str(self.value)


class Backend(Choice):
    """``--backend``: ``auto`` then :data:`esmdiv.forward.attention.BACKENDS`."""

    auto = "auto"
    flash_attn = "flash-attn"
    torch = "torch"
    reference = "reference"


class Dtype(Choice):
    """``--dtype``: :data:`esmdiv.forward.device.DTYPES`."""

    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


class LongPolicy(Choice):
    """``--long``: :data:`esmdiv.input.sequences.LONG_POLICIES`."""

    truncate = "truncate"
    skip = "skip"
    error = "error"
    full = "full"


class HeadActivation(Choice):
    """``--head-activation``: :data:`esmdiv.model.heads.ACTIVATIONS`."""

    relu = "relu"
    gelu = "gelu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    none = "none"


class Gate(Choice):
    """``--gate``: :data:`esmdiv.measure.decision.GATE_MODES`."""

    point = "point"
    bound = "bound"


class Reference(Choice):
    """``--reference``: :data:`esmdiv.forward.high_precision.HIGH_PRECISION_CHOICES`."""

    fp32 = "fp32"
    none = "none"


class Evidence(Choice):
    """``--evidence``: :data:`esmdiv.audit.evidence.EVIDENCE_MODES`."""

    sample = "sample"
    all = "all"
    off = "off"


class Workload(Choice):
    """``bench --workload``: :data:`esmdiv.bench.WORKLOADS`."""

    lognormal = "lognormal"
    fasta = "fasta"


def plain(value: Any) -> Any:
    """An option's value as the library takes it: an enum member becomes its string."""
    return value.value if isinstance(value, Enum) else value
