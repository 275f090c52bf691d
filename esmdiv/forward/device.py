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
    """Whether ``torch.compile`` can build the packed path here: CUDA with Triton. (``esmdiv bench``
    compiles whenever it can: it times the steady state, after its warm-up.)"""
    if device.type != "cuda":
        return False
    return importlib.util.find_spec("triton") is not None


#: An audit compiles the packed path on its own when it has at least this many tokens: compiling the
#: two dense regions costs about 30 s on a fresh machine and 13 s with a warm Inductor cache (H100,
#: 3B, commit cc8bb90: 180.4 s against 161.5 s for the 10k check; 22.9 s against 9.8 s for seed18),
#: and saves about 3 us a token (69k against 87.6k tokens/s), so it pays for itself past roughly 10M
#: tokens (4M with a warm cache). docs/benchmarks.md has the measurements.
COMPILE_MIN_TOKENS = 10_000_000
COMPILE_MIN_TOKENS_WARM = 4_000_000


def decide_compile(requested: bool | None, device: torch.device, tokens: int, key: str) -> tuple[bool, str]:
    """Whether an audit of ``tokens`` tokens compiles the packed path, and why (for the report).

    ``requested``: ``--compile``/``--no-compile``, or ``None`` to decide from the workload: compile
    only where it pays for itself (:data:`COMPILE_MIN_TOKENS`, or :data:`COMPILE_MIN_TOKENS_WARM`
    when this machine has compiled the same ``key`` before, so Inductor's cache is warm).
    """
    if requested is not None:
        return requested, "asked for (--compile)" if requested else "asked for (--no-compile)"
    if not default_compile(device):
        return False, "not on CUDA with Triton"
    warm = key in _compiled_before()
    limit = COMPILE_MIN_TOKENS_WARM if warm else COMPILE_MIN_TOKENS
    cache = "a warm compile cache" if warm else "a cold compile cache"
    if tokens >= limit:
        return True, f"{tokens:,} tokens: compiling pays for itself past {limit:,} with {cache}"
    return False, f"{tokens:,} tokens: compiling would cost more than it saves below {limit:,} with {cache}"


def note_compiled(key: str) -> None:
    """Remember that this machine compiled ``key`` (its Inductor cache now holds the kernels)."""
    import json

    path = _compile_notes()
    seen = _compiled_before()
    if key in seen:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(seen | {key})) + "\n")
    except OSError:
        pass  # a read-only home only costs a later audit its warm-cache threshold


def compile_key(device: torch.device, dtype: torch.dtype, model) -> str:
    """What a compiled packed path depends on: torch, the GPU, the dtype and the model's widths."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    attn = model.layers[0].self_attn
    return f"torch {torch.__version__}|{name}|{dtype}|{model.embed_dim}x{attn.num_heads}"


def _compile_notes():
    import os
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esmdiv" / "compiled.json"


def _compiled_before() -> set[str]:
    import json

    try:
        return set(json.loads(_compile_notes().read_text()))
    except (OSError, ValueError, TypeError):
        return set()
