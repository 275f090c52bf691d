"""The environment fingerprint: what ran, where, on which weights and which input.

Every report carries it as its ``environment`` section, and ``esmdiv env`` prints it. Two runs
whose fingerprints match ran the same code on the same weights and input, on the same kind of
machine; a difference names what changed.

Weights checksum (``model.weights``), by where the weights came from:

- a checkpoint file (fair-esm ``.pt``, ``.safetensors``, a fair-esm name in the hub cache, a
  Hugging Face folder's or cached Hub id's ``config.json`` and weights file, or a sharded
  checkpoint's ``*.index.json`` and every shard it names): **sha256 of each file**, streamed in
  8 MiB chunks, the same digests as ``sha256sum``, so anyone can check them by hand. Nothing
  is cached: a file replaced under the same name is seen. Cost: one sequential read (about 4 s
  for the 3B checkpoint's 5.7 GB on a typical server).
- ``random:<arch>[:seed]``: the weights are a pure function of the spec, the device type, the
  dtype and torch's random number generator, so there is no file to hash and hashing every
  parameter would cost seconds per GB on a CPU (11 GB for 3B in fp32). Instead the digest is a
  **sha256 over a fixed sample of every tensor**: for each entry of the state dict, in order,
  its name, dtype and shape and the bytes of at most :data:`SAMPLE_ELEMENTS` elements taken at
  an even stride over the flattened tensor (every element of a smaller tensor). The sample is
  gathered on the model's device, so the cost is bounded (a few MB per model) whatever the
  size. A different seed, dtype, architecture or generator (CPU and CUDA draw differently)
  changes every element and so the digest; a targeted edit to an unsampled element would not,
  which is no threat for weights that nobody stores. ``scope`` says which kind a digest is:
  only digests of the same scope compare.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from esmdiv import __version__
from esmdiv.forward.attention import BACKENDS, backend_problems, import_kernel, kernel_provenance, resolve_backend
from esmdiv.forward.device import dtype_name

SAMPLE_ELEMENTS = 1 << 16
_CHUNK = 8 << 20
PACKAGES = (
    "torch",
    "fair-esm",
    "flash-attn",
    "flash-attn-4",  # FlashAttention-4 (flash_attn.cute) and the CUTLASS DSL it compiles with
    "nvidia-cutlass-dsl",
    "quack-kernels",  # fc1 and its GELU as one GEMM on Hopper (esmdiv.forward.mlp)
    "triton",  # torch.compile's kernels for the packed path on CUDA
    "numpy",
    "scipy",
    "safetensors",
    "typer",
    "rich",
    "matplotlib",
    "transformers",
    "huggingface_hub",
)
#: Wheels whose libraries do the GEMMs and convolutions: every installed distribution whose name
#: starts with one of these (nvidia-cublas-cu12, nvidia-cudnn-cu12, ...) is listed by its own name.
NUMERIC_LIBRARY_PREFIXES = ("nvidia-cublas", "nvidia-cudnn")
#: Environment variables that change what the kernels compute (or how many threads sum).
NUMERICS_ENV = ("NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: The environment variable that tells a run without a git checkout which esmdiv commit it is.
COMMIT_ENV = "ESMDIV_GIT_COMMIT"
_COMMIT = re.compile(r"[0-9a-f]{7,64}")


# --- files ---------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes as stored (a gzip file's compressed bytes), streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def input_fingerprint(path: str | Path, records: int, name: str | None = None) -> dict:
    """The FASTA as audited: its path (or ``name``, such as ``<stdin>``), how many records it
    held, its size and sha256."""
    entry = file_entry(path)
    if name is not None:
        entry["path"] = name
    return {**entry, "records": records}


# --- weights -------------------------------------------------------------------------------------


def weight_files(info) -> list[Path]:
    """The files a checkpoint-based model was read from (empty for ``random:`` specs): a Hugging
    Face folder's ``config.json`` with its weights, a sharded checkpoint's index with every shard."""
    if info.random_weights or not info.path:
        return []
    if getattr(info, "files", None):
        return [Path(f) for f in info.files]
    path = Path(info.path)
    if info.source in ("hf-folder", "hf-hub") and (path.parent / "config.json").is_file():
        return [path.parent / "config.json", path]
    return [path]


def weights_checksum(loaded) -> dict:
    """Checksum of the weights a run used; the module docstring says what it covers and why."""
    files = weight_files(loaded.info)
    if files:
        entries = [file_entry(p) for p in files]
        if len(entries) == 1:
            value = entries[0]["sha256"]
        else:  # one value to compare: sha256 over the files' names and digests
            value = hashlib.sha256(
                "".join(f"{Path(e['path']).name}\0{e['sha256']}\n" for e in entries).encode()
            ).hexdigest()
        return {"algorithm": "sha256", "scope": "files", "value": value, "files": entries}
    return {
        "algorithm": "sha256",
        "scope": "tensor-sample",
        "value": tensor_sample_digest(loaded.model.state_dict()),
        "sample_elements": SAMPLE_ELEMENTS,
        "files": [],
    }


@torch.inference_mode()
def tensor_sample_digest(state: dict[str, torch.Tensor], sample: int = SAMPLE_ELEMENTS) -> str:
    """sha256 over each tensor's name, dtype, shape and an even-strided sample of its elements."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        flat = tensor.detach().reshape(-1)
        if flat.numel() > sample:
            stride = flat.numel() // sample
            flat = flat[::stride][:sample]
        digest.update(f"{name}\0{str(tensor.dtype).replace('torch.', '')}\0{tuple(tensor.shape)}\n".encode())
        digest.update(flat.contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


# --- software ------------------------------------------------------------------------------------


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` where absent; then every installed
    cuBLAS/cuDNN wheel (:data:`NUMERIC_LIBRARY_PREFIXES`) by its own name."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if out.get("torch") is None:  # a torch built from source may lack metadata
        out["torch"] = torch.__version__
    out.update(numeric_library_versions())
    return out


def numeric_library_versions() -> dict[str, str]:
    """Version of every installed distribution named ``nvidia-cublas*`` or ``nvidia-cudnn*``."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(NUMERIC_LIBRARY_PREFIXES):
            found[name] = dist.version
    return dict(sorted(found.items()))


def numerics() -> dict:
    """What decides how this process rounds: TF32 and matmul precision, determinism, threads, the
    cuDNN loaded, and the environment variables that change the kernels' arithmetic."""
    cuda_matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    with warnings.catch_warnings():  # torch >= 2.9 deprecates allow_tf32 for fp32_precision
        warnings.simplefilter("ignore")
        state = {
            "matmul_allow_tf32": _try(lambda: bool(cuda_matmul.allow_tf32)),
            "cudnn_allow_tf32": _try(lambda: bool(cudnn.allow_tf32)),
            "matmul_fp32_precision": _try(lambda: str(cuda_matmul.fp32_precision)),
            "cudnn_fp32_precision": _try(lambda: str(cudnn.fp32_precision)),
        }
    return {
        **state,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(cudnn.deterministic),
        "cudnn_benchmark": bool(cudnn.benchmark),
        "cudnn_version": _try(cudnn.version),
        "torch_threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in NUMERICS_ENV},
    }


def _try(read):
    """A setting torch may not have (older or newer versions), ``None`` then."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - a fingerprint never costs the verdict
        return None


def esmdiv_source() -> dict:
    """esmdiv's version and the git commit it runs from, and where that came from (``commit_from``):

    1. ``ESMDIV_GIT_COMMIT``: the environment variable, when set: whoever sets it knows which
       commit a copied tree is (a GPU machine's copy may carry a ``.git`` of an older commit);
    2. ``git checkout``: the git repository whose top level holds this esmdiv (never a repository
       that merely contains it), with ``git_dirty``;
    3. ``build info``: ``esmdiv/_build_info.py``, written into the wheel when esmdiv was built
       (``setup.py``) from a checkout or with ``ESMDIV_GIT_COMMIT`` set;
    4. ``pip direct_url.json``: installed from a git URL, pip recorded the commit (PEP 610).

    Where none says, ``git_commit`` is ``null`` and ``commit_unknown_reason`` says why.
    """
    root = Path(__file__).resolve().parents[2]  # the checkout that holds esmdiv/report/fingerprint.py
    found = _commit_from_env() or _commit_from_git(root) or _commit_from_build_info() or _commit_from_pip()
    commit, dirty, how = found or (None, None, None)
    reason = None
    if commit is None:
        given = os.environ.get(COMMIT_ENV)
        env_note = f"{COMMIT_ENV}={given!r} is not a commit hash" if given else f"{COMMIT_ENV} unset"
        reason = (
            f"no git checkout at {root}, {env_note}, no build info (esmdiv/_build_info.py) "
            "and no commit recorded by pip"
        )
    return {
        "version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "commit_from": how,
        "commit_unknown_reason": reason,
    }


def _commit_from_git(root: Path) -> tuple[str, bool | None, str] | None:
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None), "git checkout"


def _commit_from_env() -> tuple[str, None, str] | None:
    given = (os.environ.get(COMMIT_ENV) or "").strip().lower()
    return (given, None, COMMIT_ENV) if _COMMIT.fullmatch(given) else None


def _commit_from_build_info() -> tuple[str, bool | None, str] | None:
    try:
        info = importlib.import_module("esmdiv._build_info")
    except ImportError:
        return None
    commit = str(getattr(info, "GIT_COMMIT", "") or "").lower()
    if not _COMMIT.fullmatch(commit):
        return None
    dirty = getattr(info, "GIT_DIRTY", None)
    return commit, dirty if isinstance(dirty, bool) else None, "build info"


def _commit_from_pip() -> tuple[str, None, str] | None:
    try:  # installed from a git URL: pip records the commit (PEP 610)
        direct = json.loads(importlib.metadata.distribution("esmdiv").read_text("direct_url.json") or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    commit = str((direct.get("vcs_info") or {}).get("commit_id") or "").lower()
    return (commit, None, "pip direct_url.json") if _COMMIT.fullmatch(commit) else None


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# --- hardware ------------------------------------------------------------------------------------


def cuda_info() -> dict:
    """CUDA as torch sees it, the driver where readable, and every visible GPU."""
    info: dict[str, Any] = {
        "available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": None,
        "driver": None,
        "driver_cuda": None,
        "gpus": [],
    }
    info["cudnn"] = _try(torch.backends.cudnn.version)  # the cuDNN torch loaded (None: none)
    if not info["available"]:
        return info
    info["driver"] = driver_version()
    info["driver_cuda"] = _driver_cuda_version()
    try:
        info["gpus"] = [gpu_info(i) for i in range(torch.cuda.device_count())]
    except Exception as err:  # noqa: BLE001 - a fingerprint never costs the verdict: say what failed
        info["error"] = f"{type(err).__name__}: {err}"
    return info


def gpu_info(index: int) -> dict:
    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "memory_bytes": int(props.total_memory),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
    }


def driver_version() -> str | None:
    """The NVIDIA driver's version, from /proc or nvidia-smi; ``None`` where neither says."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        if m := re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text):
            return m.group(1)
    except OSError:
        pass
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _driver_cuda_version() -> str | None:
    """The newest CUDA the installed driver supports (``cuDriverGetVersion``)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return f"{version.value // 1000}.{version.value % 1000 // 10}"
    except (OSError, AttributeError):
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


# --- backends ------------------------------------------------------------------------------------


def backend_table(device: torch.device, dtype: torch.dtype) -> dict:
    """Each attention backend on ``device`` in ``dtype``: available or every reason it is not (the
    device, the dtype, the GPU, whether its function imports), its provenance where its function
    imports (package, version, function, what it was built for), plus the one ``--backend auto``
    would pick."""
    table = {}
    for name in BACKENDS:
        reasons = backend_problems(name, device, dtype)
        importable = name == "reference" or import_kernel(name)[0] is not None
        table[name] = {
            "available": not reasons,
            "why_not": "; ".join(dict.fromkeys(reasons)) or None,
            "provenance": kernel_provenance(name, device) if importable else None,
        }
    return {
        "device": str(device),
        "dtype": dtype_name(dtype),
        "auto": resolve_backend("auto", device, dtype),
        "backends": table,
    }


# --- the whole fingerprint -----------------------------------------------------------------------


def environment(
    device: torch.device,
    dtype: torch.dtype,
    backend: str | None = None,
    loaded=None,
    fasta: str | Path | None = None,
    records: int | None = None,
    fasta_name: str | None = None,
) -> dict:
    """The ``environment`` section: software, hardware, what ran, weights and input checksums.

    ``backend`` is the backend that ran (``None`` for ``esmdiv env``, which reports what
    ``auto`` would pick); ``loaded`` a :class:`~esmdiv.model.loading.LoadedModel`; ``fasta`` and
    ``records`` the input file and its record count (``fasta_name`` how to name it, when not by
    its path: ``<stdin>``). Whatever is not given is ``null``.
    """
    cuda = cuda_info()
    gpu = None
    if device.type == "cuda" and cuda["available"]:
        index = device.index if device.index is not None else torch.cuda.current_device()
        gpu = next((g for g in cuda["gpus"] if g["index"] == index), None)
    backends = backend_table(device, dtype)
    model = None
    if loaded is not None:
        model = {
            "spec": loaded.info.spec,
            "source": loaded.info.source,
            "revision": loaded.info.revision,
            "weights": weights_checksum(loaded),
        }
    return {
        "captured_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "esmdiv": esmdiv_source(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "hostname": platform.node(),
        },
        "packages": package_versions(),
        "cuda": cuda,
        "numerics": numerics(),
        "run": {
            "device": str(device),
            "gpu": gpu,
            "dtype": dtype_name(dtype),
            "backend": backend if backend is not None else backends["auto"],
            "backend_chosen_by": "run" if backend is not None else "auto (no run)",
            "torch_threads": torch.get_num_threads(),
        },
        "attention_backends": backends,
        "model": model,
        "input": input_fingerprint(fasta, records, fasta_name) if fasta is not None and records is not None else None,
    }


def bench_environment(device: torch.device) -> dict:
    """The flat ``environment`` block of a benchmark's JSON (``esmdiv-bench/1``): device, memory,
    library versions, and the esmdiv commit (:func:`esmdiv_source`: only esmdiv's own checkout)."""
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    versions = package_versions(("fair-esm", "transformers", "flash-attn", "flash_attn"))
    source = esmdiv_source()
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "gpu_memory_gib": props.total_memory / 2**30 if props else None,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": driver_version() if cuda else None,
        "fair_esm": versions["fair-esm"],
        "transformers": versions["transformers"],
        "flash_attn": versions["flash-attn"] or versions["flash_attn"],
        "esmdiv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": source["git_commit"],
        "git_dirty": source["git_dirty"],
        "git_commit_from": source["commit_from"],
        "packages": {k: v for k, v in package_versions().items() if k not in ("typer", "rich", "matplotlib")},
        "numerics": numerics(),
    }
