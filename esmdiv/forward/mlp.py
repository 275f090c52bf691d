"""The MLP's first GEMM and its erf GELU, and the one place that picks how they run (issue 14).

- ``torch``: ``F.linear`` (cuBLAS on CUDA) then ``F.gelu`` with erf; inside the packed path's
  compiled region the GELU is one Inductor kernel that reads and writes the ``(T, 4C)`` activation.
- ``quack``: one GEMM of the ``quack-kernels`` package (CUTLASS DSL) with the bias and the exact erf
  GELU in its epilogue: the pre-activation is never written. Hopper (compute capability 9.0), fp16
  or bf16. On an H100 (run 23, ``benchmarks/results/2026-11-26-h100-run23-NOTES.md``) fc1 and its
  GELU run 15 % faster, the compiled random:3B packed path 7 % faster with :data:`QUACK_TILE`;
  outputs move at rounding level.

The compiled packed path uses ``quack`` where it can run and ``torch`` elsewhere
(:func:`fc1_kernel`); ``ESMDIV_FC1_KERNEL=torch`` keeps torch's, ``=quack`` requires quack where
the path is compiled (exit 3 where it cannot run). The uncompiled path, and the known tanh-GELU bug
injected on purpose, always run torch's, and never import quack (its import takes seconds).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from functools import cache

import torch
import torch.nn.functional as F

from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.forward.attention import FirstCallChecked

FC1_KERNELS = ("torch", "quack")
#: What reports say of fc1 where the packed path is not compiled.
UNCOMPILED_FC1 = "torch: F.linear, then erf GELU (the packed path is not compiled)"
#: The environment variable that overrides :func:`fc1_kernel`'s choice: auto, torch or quack.
FC1_KERNEL_VARIABLE = "ESMDIV_FC1_KERNEL"
#: quack's tile for fc1 on Hopper (the only GPU :func:`quack_problem` lets it run on): what its
#: autotuner chose at five of six pack lengths of the random:3B bench (run 23); given to it, no
#: tuning (which costs minutes per machine), +7.1 %.
QUACK_TILE = dict(
    tile_m=128,
    tile_n=208,
    pingpong=True,
    is_dynamic_persistent=False,
    cluster_m=2,
    cluster_n=1,
    swap_ab=True,
    device_capacity=9,
)


def fc1_gelu(h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, kernel: str, approximate: str = "none"):
    """``gelu(h @ w1.T + b1)``: ``h`` ``(T, C)``, ``w1`` ``(4C, C)``, ``b1`` ``(4C,)`` -> ``(T, 4C)``.

    ``kernel``: one of :data:`FC1_KERNELS` (:func:`fc1_kernel`); ``approximate``: ``F.gelu``'s
    (``"tanh"`` only for the known bug, which always runs through torch).
    """
    if kernel == "quack" and approximate == "none":
        return _quack_fc1_gelu(h, w1, b1)
    return F.gelu(F.linear(h, w1, b1), approximate=approximate)


@torch.compiler.disable  # called between two compiled graphs: quack launches its own kernel
def _quack_fc1_gelu(h, w1, b1):
    return _quack_call()(h, w1, b1)


@cache
def _quack_call() -> FirstCallChecked:
    # A quack that imports but cannot run here (its first call fails) is the environment's: exit 3.
    gemm_act = importlib.import_module("quack.gemm_interface").gemm_act
    config = importlib.import_module("quack.gemm_config").GemmConfig(**QUACK_TILE)  # once, not per layer

    def run(h, w1, b1):
        return gemm_act(h, w1.T, bias=b1, activation="gelu_erf", store_preact=False, config=config)[1]

    return FirstCallChecked("fc1 kernel 'quack'", run, hint=f"{FC1_KERNEL_VARIABLE}=torch runs torch's")


def requested_fc1_kernel() -> str:
    """:data:`FC1_KERNEL_VARIABLE`'s value (``auto`` when unset), checked; imports nothing."""
    asked = os.environ.get(FC1_KERNEL_VARIABLE, "").strip().lower() or "auto"
    if asked not in ("auto", *FC1_KERNELS):
        raise UsageError(f"{FC1_KERNEL_VARIABLE}={asked!r}: expected auto, {' or '.join(FC1_KERNELS)}")
    return asked


def fc1_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel the compiled packed path runs fc1 and its GELU with on ``device`` in ``dtype``:
    ``quack`` where it can run, else ``torch``; :data:`FC1_KERNEL_VARIABLE` overrides. Imports
    quack (seconds: the CUTLASS DSL) where the device and dtype fit, so only a compiled run asks."""
    asked = requested_fc1_kernel()
    if asked == "torch":
        return "torch"
    why_not = quack_problem(device, dtype)
    if asked == "quack" and why_not:
        raise EnvironmentUnavailable(f"{FC1_KERNEL_VARIABLE}=quack: {why_not}")
    return "torch" if why_not else "quack"


def quack_problem(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why quack's fused fc1 cannot run on ``device`` in ``dtype`` (``None``: it can)."""
    if device.type != "cuda":
        return "needs a CUDA device"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"takes fp16 or bf16, not {str(dtype).replace('torch.', '')}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) != (9, 0):
        return f"its tile is for compute capability 9.0 (Hopper); this GPU has {major}.{minor}"
    return _quack_import_problem()


@cache
def _quack_import_problem() -> str | None:
    # Once per process: a broken CUTLASS DSL makes quack unavailable with the reason, never a crash.
    try:
        importlib.import_module("quack.gemm_interface")
        importlib.import_module("quack.gemm_config")
    except ImportError as error:
        return f"quack-kernels is not installed or does not import ({error})"
    except Exception as error:  # noqa: BLE001 - a broken install is an unavailable kernel, with why
        return f"quack-kernels does not import: {type(error).__name__}: {error}"
    return None


def fc1_description(device: torch.device, dtype: torch.dtype, compiled: bool = True) -> str:
    """What the packed path (compiled or not) runs fc1 and its GELU with here, for reports."""
    if not compiled:
        return UNCOMPILED_FC1
    if fc1_kernel(device, dtype) == "quack":
        try:
            version = importlib.metadata.version("quack-kernels")
        except importlib.metadata.PackageNotFoundError:
            version = "(version unknown)"
        return f"quack-kernels {version}: one GEMM, bias and erf GELU in its epilogue"
    asked = requested_fc1_kernel() == "torch"  # torch's: asked for, or quack cannot run here
    why = f"{FC1_KERNEL_VARIABLE}=torch" if asked else f"quack: {quack_problem(device, dtype)}"
    return f"torch: F.linear, then erf GELU ({why})"
