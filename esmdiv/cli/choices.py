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
    """``--backend``'s words: :data:`esmdiv.forward.attention.SELECTORS` (``auto``, ``all``) then
    :data:`esmdiv.forward.attention.BACKENDS`. The option itself is a string (a comma-separated
    list audits several kernels: ``torch,fa4``), parsed by the library
    (:func:`esmdiv.forward.attention.parse_backends`); the enum lists the words for ``--help``
    (:func:`backend_metavar`) and the shell (:func:`complete_backends`)."""

    auto = "auto"
    all = "all"
    flash_attn = "flash-attn"
    fa4 = "fa4"
    torch = "torch"
    reference = "reference"


def backend_metavar(several: bool = True) -> str:
    """``--backend``'s values as ``--help`` shows them."""
    words = [member.value for member in Backend if several or member is not Backend.all]
    return "|".join(words) + ("[,...]" if several else "")


def complete_backends(incomplete: str) -> list[str]:
    """Shell completion of ``--backend``: a word, or the next backend of a comma-separated list."""
    head, _, last = incomplete.rpartition(",")
    given = set(head.split(",")) if head else set()
    words = [m.value for m in Backend if not head or m.value not in ("auto", "all", *given)]
    return [f"{head},{w}" if head else w for w in words if w.startswith(last)]


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
