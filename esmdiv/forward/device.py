"""Where and in what precision a run happens: device and dtype resolution."""

from __future__ import annotations

import torch

from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.model.loading import DTYPES


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
            raise EnvironmentUnavailable(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_compile(device: torch.device) -> bool:
    """torch.compile the packed path by default on CUDA (where Triton builds its kernels), never on CPU."""
    if device.type != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("triton") is not None
