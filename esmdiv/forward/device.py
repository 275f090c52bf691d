"""Where and how the forwards run, resolved once from the options: the device and what follows
from it (dtype, attention backend, token budget, whether to compile), for every driver alike.

:func:`resolve_run` is what ``esmdiv check`` and ``esmdiv bench`` call; ``esmdiv env`` and the
self-test use :func:`resolve_device` and :func:`resolve_dtype` alone (they time or audit nothing
themselves).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.forward.attention import resolve_backends

#: The dtypes a run may ask for (``--dtype``), by name.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Token budget per batch, padded, when ``--max-tokens`` is not given.
DEFAULT_MAX_TOKENS = {"cuda": 16384, "cpu": 4096}
MIN_TOKENS = 3  # BOS, one residue, EOS


@dataclass(frozen=True)
class RunPlacement:
    """The device, precision, attention backends and token budget one run uses."""

    device: torch.device
    dtype_name: str  # "fp16" | "bf16" | "fp32"
    dtype: torch.dtype
    backends: tuple[str, ...]  # the backends that will run, each audited (never "auto" or "all")
    max_tokens: int

    @property
    def backend(self) -> str:
        """The backends as reports name them: one name, or several joined by commas."""
        return ",".join(self.backends)


def resolve_run(
    device: str, dtype: str | None, backend: str, max_tokens: int | None, local_rank: int | None = None
) -> RunPlacement:
    """Resolve the options in order (device, dtype, backends, budget); the first bad one raises.

    ``local_rank``: a torchrun rank's local index; a bare ``cuda`` device becomes ``cuda:local_rank``
    (one GPU per local rank). ``max_tokens`` ``None``: :data:`DEFAULT_MAX_TOKENS` of the device.
    """
    resolved = resolve_device(device)
    if local_rank is not None and resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    dtype_name, torch_dtype = resolve_dtype(dtype, resolved)
    chosen = resolve_backends(backend, resolved, torch_dtype)
    budget = DEFAULT_MAX_TOKENS[resolved.type] if max_tokens is None else max_tokens
    if budget < MIN_TOKENS:
        raise UsageError(f"--max-tokens {budget} is too small (a sequence needs at least {MIN_TOKENS} tokens)")
    return RunPlacement(resolved, dtype_name, torch_dtype, chosen, budget)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; asking for CUDA without it is an environment error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device '{name}' is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentUnavailable(
                f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EnvironmentUnavailable(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise UsageError(f"--device '{name}': esmdiv runs on cpu or cuda")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> tuple[str, torch.dtype]:
    """Default fp16 on CUDA (what fast paths ship), fp32 on CPU."""
    if name is None or name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise UsageError(f"--dtype '{name}' (choose fp16, bf16, fp32)")
    return name, DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"fp16"``; a dtype without a ``--dtype`` name -> torch's name (``float64``)."""
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).replace("torch.", ""))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_compile(device: torch.device) -> bool:
    """torch.compile the packed path by default on CUDA (where Triton builds its kernels), never on CPU."""
    if device.type != "cuda":
        return False
    return importlib.util.find_spec("triton") is not None
