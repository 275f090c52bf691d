"""Variable-length (packed) self-attention backends, and the one place that picks among them.

Each backend is named for what runs. In the order ``auto`` tries them on CUDA:

- ``flash-attn``: FlashAttention 2 (or 3), ``flash_attn.flash_attn_varlen_func``; compute
  capability 8.0 or later.
- ``fa4``: FlashAttention-4, ``flash_attn.cute.flash_attn_varlen_func`` (CuTe DSL: compiled at
  run time for the GPU it runs on, on the first call of each kernel shape, in seconds); compute
  capability 9.0 (Hopper) or 10.x (Blackwell).
- ``torch``: ``torch.nn.attention.varlen.varlen_attn``, FlashAttention-2 inside PyTorch.
- ``reference``: exact attention computed per sequence in fp32 (fp64 for fp64 inputs) with plain
  matmuls; any device. ``auto`` picks it on CPU, where it stands in for the kernels.

The kernels take fp16 and bf16 on CUDA only. A kernel is available when its function imports (and
the device and dtype fit): the import is tried once per process, and a package that is absent, or
present but broken (a CUTLASS DSL that fails to load), makes the backend unavailable with the
reason, never a crash. FlashAttention-4 installs ``flash_attn/cute/`` only: the ``flash_attn`` it
leaves is a namespace package without ``flash_attn_varlen_func``, so ``flash-attn`` is then
unavailable, saying so, while ``fa4`` runs. ``auto`` never picks a backend that cannot run; a
kernel that fails on its first call is an environment error naming it and why (exit 3), never an
internal error.

The softmax scale is passed to the kernel (``head_dim ** -0.5`` for ESM-2) rather than folded
into the queries: one elementwise pass fewer, the same function (rotary is linear).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from functools import cache, partial

import torch

from esmdiv import __version__
from esmdiv.errors import EnvironmentUnavailable, EsmdivError, UsageError

BACKENDS = ("flash-attn", "fa4", "torch", "reference")
#: The CUDA kernels among :data:`BACKENDS`, in ``auto``'s order of preference.
KERNELS = ("flash-attn", "fa4", "torch")
#: What ``--backend`` takes besides backend names: ``auto`` (one backend, the best that runs
#: here) and ``all`` (every backend that runs here).
SELECTORS = ("auto", "all")
_KERNEL_DTYPES = (torch.float16, torch.bfloat16)

#: Where each kernel's function lives: (module, function).
FUNCTIONS = {
    "flash-attn": ("flash_attn", "flash_attn_varlen_func"),
    "fa4": ("flash_attn.cute", "flash_attn_varlen_func"),
    "torch": ("torch.nn.attention.varlen", "varlen_attn"),
}
#: The distributions that install each kernel, in the order their version is looked up.
DISTRIBUTIONS = {
    "flash-attn": ("flash-attn",),
    "fa4": ("flash-attn-4", "flash-attn-cute", "fa4"),
    "torch": ("torch",),
}
#: What FlashAttention-4 compiles with, recorded beside its version.
FA4_DEPENDENCIES = ("nvidia-cutlass-dsl", "quack-kernels", "apache-tvm-ffi", "torch-c-dlpack-ext")
_NOT_INSTALLED = {
    "flash-attn": "the flash-attn package is not installed",
    "fa4": "FlashAttention-4 (flash_attn.cute, the flash-attn-4 package) is not installed",
}


# --- availability ------------------------------------------------------------------------------------


def backend_availability(device: torch.device, dtype: torch.dtype = torch.float16) -> dict[str, str | None]:
    """For each backend, ``None`` when it can run on ``device`` in ``dtype``, else every reason why not."""
    return {name: availability(name, device, dtype) for name in BACKENDS}


def availability(backend: str, device: torch.device, dtype: torch.dtype = torch.float16) -> str | None:
    """``None`` when ``backend`` can run on ``device`` in ``dtype``, else every reason why not ("; ")."""
    problems = backend_problems(backend, device, dtype)
    return "; ".join(problems) if problems else None


def backend_problems(backend: str, device: torch.device, dtype: torch.dtype = torch.float16) -> list[str]:
    """Every reason ``backend`` cannot run on ``device`` in ``dtype`` (empty: it can): the device,
    the dtype, the GPU's compute capability, and whether its function imports."""
    if backend == "reference":
        return []
    if backend not in FUNCTIONS:
        raise UsageError(_unknown(backend, backend))
    problems = device_problems(backend, device, dtype)
    _, why = import_kernel(backend)
    if why:
        problems.append(why)
    return problems


def device_problems(backend: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    """Why a kernel cannot run on ``device`` in ``dtype`` whatever is installed: not CUDA, a dtype
    the kernels do not take, a GPU older (or other) than the kernel's compute capability."""
    if device.type != "cuda":
        return ["needs a CUDA device"]
    problems = []
    if dtype not in _KERNEL_DTYPES:
        problems.append(f"FlashAttention kernels take fp16 or bf16, not {str(dtype).replace('torch.', '')}")
    capability = _capability_problem(backend, device)
    if capability:
        problems.append(capability)
    return problems


def _capability_problem(backend: str, device: torch.device) -> str | None:
    major, minor = torch.cuda.get_device_capability(device)
    if backend == "flash-attn" and (major, minor) < (8, 0):
        return f"FlashAttention 2 needs compute capability 8.0 or later (this GPU has {major}.{minor})"
    if backend == "fa4" and not ((major, minor) == (9, 0) or major == 10):
        return (
            f"FlashAttention-4 needs compute capability 9.0 (Hopper) or 10.x (Blackwell) (this GPU has {major}.{minor})"
        )
    return None


@cache
def import_kernel(backend: str) -> tuple[Callable | None, str | None]:
    """The kernel's function and ``None``, or ``None`` and why it cannot be imported; tried once
    per process (:func:`clear_backend_cache` forgets). Any error while importing (a broken
    CUTLASS DSL, a CUDA library that does not load) makes the backend unavailable, never a crash."""
    module_name, name = FUNCTIONS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if isinstance(err, ModuleNotFoundError) and missing and (module_name + ".").startswith(missing + "."):
            if backend == "torch":
                return None, f"torch {torch.__version__} has no {module_name}"
            return None, _NOT_INSTALLED[backend]
        return None, _import_failed(backend, module_name, err)
    except Exception as err:  # noqa: BLE001 - a broken install is an unavailable backend, not a crash
        return None, _import_failed(backend, module_name, err)
    function = getattr(module, name, None)
    if function is None:
        why = f"{module_name} has no {name}"
        if backend == "flash-attn" and getattr(module, "__file__", None) is None:
            why += " (a namespace package: FlashAttention-4 installs only flash_attn.cute; use --backend fa4)"
        return None, why
    if backend == "torch" and not _takes(function, "scale"):
        return None, f"torch {torch.__version__}: varlen_attn takes no softmax scale"
    return function, None


def _import_failed(backend: str, module_name: str, err: BaseException) -> str:
    why = f"importing {module_name} failed: {type(err).__name__}: {one_line(err)}"
    if backend == "fa4" and isinstance(err, ModuleNotFoundError) and err.name == "cutlass":
        why += (
            " (installed with pip --target? the CUTLASS DSL's .pth file is then not read: put "
            "<target>/nvidia_cutlass_dsl/dsl_packages on PYTHONPATH)"
        )
    return why


def one_line(err: BaseException) -> str:
    """An error's message on one line (its type's name when it has none)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _takes(function: Callable, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): let the first call tell
        return True


def clear_backend_cache() -> None:
    """Forget every import probe and kernel (tests that install a fake kernel module call this)."""
    import_kernel.cache_clear()
    _kernel.cache_clear()


# --- choosing ----------------------------------------------------------------------------------------


def parse_backends(text: str) -> tuple[str, ...]:
    """``--backend`` as names, without looking at the machine: ``"torch,fa4"`` -> ``("torch", "fa4")``
    (in the order given, each once), ``"auto"`` -> ``("auto",)``, ``"all"`` -> ``("all",)``.
    An unknown name, an empty list, or ``auto``/``all`` in a list is a usage error."""
    names = list(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise UsageError(f"--backend '{text}': give auto, all, or one or more of {', '.join(BACKENDS)}")
    for name in names:
        if name not in BACKENDS and name not in SELECTORS:
            raise UsageError(_unknown(text, name))
    selectors = [n for n in names if n in SELECTORS]
    if selectors and len(names) > 1:
        raise UsageError(f"--backend '{text}': {selectors[0]} stands alone (or list backends: torch,fa4)")
    return tuple(names)


def _unknown(text: str, name: str) -> str:
    listed = ", ".join(f"'{n}'" for n in (*SELECTORS, *BACKENDS))
    return f"--backend '{text}': '{name}' is not one of {listed} (or a comma-separated list of backends)"


def resolve_backends(requested: str, device: torch.device, dtype: torch.dtype = torch.float16) -> tuple[str, ...]:
    """The backends a run audits, from ``--backend``; never falls back silently.

    ``auto``: one, the first available of flash-attn, fa4, torch on CUDA, else reference.
    ``all``: every backend available here, in :data:`BACKENDS` order. A list: those backends, in
    its order, each of which must be available (else an environment error naming it and why).
    """
    names = parse_backends(requested)
    if names == ("auto",):
        if device.type != "cuda":
            return ("reference",)
        return (next(name for name in BACKENDS if availability(name, device, dtype) is None),)
    if names == ("all",):
        return tuple(name for name in BACKENDS if availability(name, device, dtype) is None)
    for name in names:
        why = availability(name, device, dtype)
        if why is not None:
            raise EnvironmentUnavailable(f"attention backend '{name}' is not available: {why}")
    return names


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype = torch.float16) -> str:
    """One backend (``auto`` or a name) that will run: :func:`resolve_backends` for a single kernel."""
    chosen = resolve_backends(requested, device, dtype)
    if len(chosen) != 1:
        raise UsageError(f"--backend '{requested}': give one backend here, not {len(chosen)}")
    return chosen[0]


# --- provenance --------------------------------------------------------------------------------------


def kernel_provenance(backend: str, device: torch.device | None = None) -> dict:
    """What runs for ``backend``: the package and its version, the function, the GPU architecture
    it was built (or is compiled) for, and the compute capability of ``device`` (``None`` off CUDA).
    For a kernel whose function does not import, ``version`` and ``built_for`` are ``None``."""
    capability = None
    if device is not None and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        capability = f"{major}.{minor}"
    out = {"backend": backend, "package": None, "version": None, "function": None, "built_for": None}
    if backend == "reference":
        out.update(
            package="esmdiv",
            version=__version__,
            function="esmdiv.forward.attention.exact_attention",
            built_for="any device: softmax(q k^T) v per sequence with torch matmuls in fp32, no custom kernel",
        )
        return {**out, "device_capability": capability}
    module_name, name = FUNCTIONS[backend]
    out.update(package=DISTRIBUTIONS[backend][0], function=f"{module_name}.{name}")
    function, _ = import_kernel(backend)
    if function is None:
        return {**out, "device_capability": capability}
    package, version = _distribution(backend)
    out.update(package=package, version=version)
    if backend == "torch":
        arches = torch.cuda.get_arch_list()
        out["built_for"] = f"built for {' '.join(arches)}" if arches else "built for no CUDA architecture (CPU torch)"
    elif backend == "fa4":
        sm = f"sm_{capability.replace('.', '')}" if capability else "the GPU it runs on"
        out["built_for"] = f"compiled at run time (CuTe DSL) for {sm}, on the first call of each kernel shape"
        out["dependencies"] = {dist: _version(dist) for dist in FA4_DEPENDENCIES}
    else:
        out["built_for"] = (
            "a prebuilt CUDA extension (flash_attn_2_cuda); the package does not record its architectures"
        )
    return {**out, "device_capability": capability}


def _distribution(backend: str) -> tuple[str, str | None]:
    """The installed distribution that provides ``backend`` and its version (the module's
    ``__version__`` where no distribution metadata says)."""
    if backend == "torch":
        return "torch", torch.__version__
    for dist in DISTRIBUTIONS[backend]:
        version = _version(dist)
        if version is not None:
            return dist, version
    module = importlib.import_module(FUNCTIONS[backend][0])
    version = getattr(module, "__version__", None)
    return DISTRIBUTIONS[backend][0], str(version) if version is not None else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- running -----------------------------------------------------------------------------------------


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    backend: str,
    scale: float = 1.0,
) -> torch.Tensor:
    """Bidirectional attention within each packed sequence: ``softmax(scale * q k^T) v``.

    Args:
        q, k, v: ``(total_tokens, num_heads, head_dim)``, last dimension contiguous.
        cu_seqlens: ``(B+1,)`` int32, sequence boundaries in the packed token axis.
        max_seqlen: longest sequence in the pack.
        backend: a name from :data:`BACKENDS` (see :func:`resolve_backends`).
        scale: softmax scale (``head_dim ** -0.5`` for ESM-2), handed to the kernel as is.

    Returns:
        ``(total_tokens, num_heads, head_dim)`` in ``q``'s dtype.

    Raises:
        EnvironmentUnavailable: the kernel's first call failed (anything but CUDA out of memory).
    """
    return _kernel(backend)(q, k, v, cu_seqlens, max_seqlen, scale)


@cache
def _kernel(backend: str) -> Callable[..., torch.Tensor]:
    """``(q, k, v, cu_seqlens, max_seqlen, scale) -> out`` for ``backend``, all ``(T, H, D)``."""
    if backend == "reference":  # the option's name; the function says what it computes
        return exact_attention
    if backend not in FUNCTIONS:
        raise UsageError(_unknown(backend, backend))
    function, why = import_kernel(backend)
    if function is None:
        raise EnvironmentUnavailable(f"attention backend '{backend}' is not available: {why}")
    return FirstCallChecked(f"attention backend '{backend}'", _CALLS[backend](function))


def _flash_call(function: Callable, **fixed) -> Callable[..., torch.Tensor]:
    """FlashAttention's varlen interface (2 and 4 alike): one boundary tensor for queries and keys,
    the kernel's own softmax scale, no causal mask; ``fixed``: what only one version takes."""

    def run(q, k, v, cu, max_len, scale):
        return function(
            q,
            k,
            v,
            cu_seqlens_q=cu,
            cu_seqlens_k=cu,
            max_seqlen_q=max_len,
            max_seqlen_k=max_len,
            softmax_scale=scale,
            causal=False,
            **fixed,
        )

    return run


def _torch_call(function: Callable) -> Callable[..., torch.Tensor]:
    def run(q, k, v, cu, max_len, scale):
        return function(q, k, v, cu, cu, max_len, max_len, scale=scale)

    return run


_CALLS = {"flash-attn": partial(_flash_call, dropout_p=0.0), "fa4": _flash_call, "torch": _torch_call}


class FirstCallChecked:
    """A kernel whose first call, if it fails with anything but CUDA out of memory (which the
    audit handles by halving its token budget), is an environment error naming it (``what``, e.g.
    ``attention backend 'fa4'``) and, if given, what to do (``hint``): the package imported but
    cannot run here (no kernel for this GPU, a compiler that fails). Kernels that return
    ``(out, lse)`` give ``out``."""

    def __init__(self, what: str, run: Callable[..., torch.Tensor], hint: str = ""):
        self.what, self.run, self.hint, self.proven = what, run, hint, False

    def __call__(self, *args) -> torch.Tensor:
        if self.proven:
            return _output(self.run(*args))
        try:
            out = _output(self.run(*args))
        except (torch.cuda.OutOfMemoryError, EsmdivError):
            raise
        except Exception as err:  # noqa: BLE001 - a kernel that cannot run here is the environment's
            why = f"{self.what} failed on its first call: {type(err).__name__}: {one_line(err)}"
            raise EnvironmentUnavailable(why + (f" ({self.hint})" if self.hint else "")) from err
        self.proven = True
        return out


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def exact_attention(q, k, v, cu_seqlens, max_seqlen, scale):
    """Exact attention, one sequence at a time, in fp32 at least: the ``reference`` backend."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        # (H, L, D) in fp32 at least (fp64 stays fp64: the packed algorithm of the high-precision run)
        qs, ks, vs = (t[start:end].transpose(0, 1).to(torch.promote_types(t.dtype, torch.float32)) for t in (q, k, v))
        weights = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out[start:end] = (weights @ vs).transpose(0, 1).to(q.dtype)
    return out
