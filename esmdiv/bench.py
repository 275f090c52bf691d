"""Timing the paths on one workload: fair-esm padded, esmdiv packed, and Hugging Face ``EsmModel``.

:func:`run_bench` is what ``esmdiv bench`` calls and what tests call directly. Method:

- The workload (a FASTA file or the synthetic ``lognormal`` one) is encoded and split into batches
  once, with :func:`~esmdiv.forward.packing.batches_by_tokens`; every path runs those same batches. Each
  batch is padded (``(B, L)`` tokens plus a ``(B, L)`` attention mask for HF) and packed
  (``input_ids (T,)``, ``cu_seqlens (B+1,)``) and moved to the device *before* any timing, so
  host-side work stays out of the timed region.
- Before timing, each path's output on one batch (the smallest) is compared with fair-esm's
  padded output over the real tokens: a wrong model is reported, not benchmarked silently.
- Per path: ``warmup`` untimed passes over the whole workload, then ``repeats`` timed passes, each
  one whole pass over every batch between two device synchronisations (``torch.cuda.synchronize``
  on CUDA). Reported: median, min and max seconds; tokens/s and sequences/s from the median.
- Peak GPU memory per path: ``torch.cuda.max_memory_allocated`` over the timed passes, after
  ``reset_peak_memory_stats``; it includes what was already resident (weights, the prepared
  batches), reported separately as ``resident``. ``null`` on CPU.
- Speed-ups are ratios of medians: ``packed_over_padded = median(padded) / median(packed)``.
- Several kernels (``--backend torch,fa4``, or ``all``): the packed path is timed once per kernel
  on the same batches, each checked against fair-esm's padded output first; their rows are
  ``packed[torch]``, ``packed[fa4]`` (one kernel keeps the row ``packed``), their speed-ups
  ``packed[torch]_over_padded`` and so on.
- The first call of each kernel shape compiles where a kernel compiles at run time
  (FlashAttention-4's CuTe DSL, ``torch.compile``'s graphs): the check batch and the warm-up passes
  run every batch before the timed passes, so compilation stays out of the timings.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from esmdiv import __version__
from esmdiv.errors import EnvironmentUnavailable, InputError, UsageError
from esmdiv.forward.attention import kernel_provenance
from esmdiv.forward.device import RunPlacement, resolve_run, synchronize
from esmdiv.forward.mlp import fc1_description
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import Packed, batches_by_tokens, encode, encoder_table, pack, pad, to_padded
from esmdiv.forward.padded import padded_forward
from esmdiv.input.fasta import iter_fasta
from esmdiv.input.sequences import LONG_POLICIES, AuditSequence, InputReport, iter_sequences
from esmdiv.input.workloads import lognormal_workload
from esmdiv.model.hf_peer import HFPeer, build_hf_peer, hf_forward, hf_unavailable
from esmdiv.model.loading import LoadedModel, load_model
from esmdiv.report.fingerprint import bench_environment

SCHEMA = "esmdiv-bench/1"
PATHS = ("padded", "packed", "hf")
WORKLOADS = ("lognormal", "fasta")
PATH_DESCRIPTIONS = {
    "padded": "fair-esm ESM2.forward on right-padded batches (bmm attention, key padding mask)",
    "packed": "esmdiv packed_forward: no padding, varlen attention over cu_seqlens",
    "packed[]": "esmdiv packed_forward: no padding, varlen attention over cu_seqlens with the {} kernel",
    "hf": "transformers EsmModel (sdpa attention) on the same right-padded batches with an attention mask",
}
# A path whose output on the check batch differs from fair-esm's padded one by more than this
# (mean |diff| relative to mean |padded output|, over real tokens) is flagged: rounding in fp16/bf16
# stays near 1e-3/1e-2, a wrong model or a broken weight map is of order 1.
CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 0.05, "bf16": 0.05}
#: What the JSON says of compilation on a kernel's first call.
FIRST_CALL = (
    "the first call of each kernel shape compiles (FlashAttention-4's CuTe DSL, torch.compile): the check "
    "batch and the warm-up passes run every batch before the timed passes, so compilation stays out of the "
    "timings (with --warmup 0 it is timed)"
)

Log = Callable[[str], None]


@dataclass
class BenchConfig:
    model: str = "random:8M"
    device: str = "auto"
    dtype: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    backend: str = "auto"
    max_tokens: int | None = None  # None: 16384 on CUDA, 4096 on CPU
    fasta: Path | None = None
    workload: str | None = None  # None: "fasta" when a FASTA is given, else "lognormal"
    n: int = 256
    seed: int = 0
    long_policy: str = "truncate"
    repeats: int = 5
    warmup: int = 1
    paths: Sequence[str] | None = None  # None: all three, hf only where transformers imports
    packed_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for packed_forward
    command: str | None = None  # the command line, for the JSON


@dataclass
class Workload:
    """The sequences a benchmark runs, and where they came from."""

    kind: str  # "lognormal" | "fasta"
    sequences: list[AuditSequence]
    n: int | None = None
    seed: int | None = None
    path: str | None = None
    long_policy: str | None = None
    input_report: InputReport | None = None

    @property
    def tokens(self) -> int:
        """Tokens with BOS and EOS, the count every path must process."""
        return sum(len(s.sequence) + 2 for s in self.sequences)

    def describe(self) -> str:
        if self.kind == "lognormal":
            return f"lognormal, n={self.n}, seed={self.seed}"
        return f"{self.path}"


@dataclass
class PathResult:
    """One path's timings. ``seconds``: one entry per timed pass over the whole workload."""

    name: str  # "padded", "packed" (one kernel), "packed[torch]" (several), "hf"
    status: str  # "ok" | "not available" | "out of memory"
    note: str | None = None
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0  # real tokens the path's batches carry (padding excluded)
    sequences: int = 0
    slots: int = 0  # token positions computed, padding included
    peak_memory_bytes: int | None = None
    resident_memory_bytes: int | None = None
    check: dict | None = None
    backend: str | None = None  # the attention kernel of a packed row

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.seconds)

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.seconds) if self.ok else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.median_s if self.ok and self.median_s > 0 else None

    @property
    def sequences_per_s(self) -> float | None:
        return self.sequences / self.median_s if self.ok and self.median_s > 0 else None

    def to_dict(self) -> dict:
        peak, resident = self.peak_memory_bytes, self.resident_memory_bytes
        description = (
            PATH_DESCRIPTIONS["packed[]"].format(self.backend)
            if self.name.startswith("packed[")
            else PATH_DESCRIPTIONS[self.name]
        )
        out = {
            "status": self.status,
            "note": self.note,
            "description": description,
            "seconds": self.seconds,
            "median_s": self.median_s,
            "min_s": min(self.seconds) if self.ok else None,
            "max_s": max(self.seconds) if self.ok else None,
            "tokens": self.tokens,
            "sequences": self.sequences,
            "token_slots": self.slots,
            "tokens_per_s": self.tokens_per_s,
            "sequences_per_s": self.sequences_per_s,
            "peak_gpu_memory_bytes": peak,
            "peak_gpu_memory_gib": _gib(peak),
            "resident_gpu_memory_gib": _gib(resident),
            "peak_above_resident_gib": _gib(None if peak is None or resident is None else peak - resident),
            "check": self.check,
        }
        if self.backend is not None:
            out["backend"] = self.backend
        return out


def packed_row(backend: str, backends: Sequence[str]) -> str:
    """The row (and ``paths`` key) of the packed path with ``backend``: ``packed`` when it is the
    only kernel timed, else ``packed[<backend>]``."""
    return "packed" if len(backends) == 1 else f"packed[{backend}]"


def _gib(size: int | None) -> float | None:
    return None if size is None else size / 2**30


@dataclass
class BenchResult:
    config: BenchConfig
    environment: dict
    model: dict
    dtype: str
    backend: str  # the kernels timed, comma-separated
    max_tokens: int
    workload: Workload
    batches: int
    padded_slots: int
    paths: dict[str, PathResult]
    date: str
    warnings: list[str] = field(default_factory=list)
    kernels: dict[str, dict] = field(default_factory=dict)  # backend -> kernel_provenance
    fc1: str = ""  # what the packed path runs fc1 and its GELU with (esmdiv.forward.mlp)

    @property
    def speedups(self) -> dict[str, float | None]:
        """Ratios of medians (``a_over_b``: how many times faster a is than b); ``None`` where one is missing."""

        def ratio(fast: str, slow: str) -> float | None:
            a, b = self.paths.get(fast), self.paths.get(slow)
            return b.median_s / a.median_s if a and b and a.ok and b.ok and a.median_s > 0 else None

        out = {
            "packed_over_padded": ratio("packed", "padded"),
            "packed_over_hf": ratio("packed", "hf"),
            "hf_over_padded": ratio("hf", "padded"),
        }
        rows = [name for name in self.paths if name.startswith("packed[")]
        for name in rows:
            out[f"{name}_over_padded"] = ratio(name, "padded")
            out[f"{name}_over_hf"] = ratio(name, "hf")
        return out

    def to_dict(self) -> dict:
        w = self.workload
        lengths = sorted(len(s.sequence) + 2 for s in w.sequences)
        return {
            "schema": SCHEMA,
            "command": self.config.command,
            "date": self.date,
            "esmdiv_version": __version__,
            "environment": self.environment,
            "model": self.model,
            "dtype": self.dtype,
            "backend": self.backend,
            "kernels": self.kernels,
            "packed_options": {k: repr(v) for k, v in self.config.packed_kwargs.items()},
            "fc1": self.fc1,
            "workload": {
                "kind": w.kind,
                "description": w.describe(),
                "n": w.n,
                "seed": w.seed,
                "path": w.path,
                "long_policy": w.long_policy,
                "truncated": len(w.input_report.truncated) if w.input_report else 0,
                "skipped": len(w.input_report.skipped) if w.input_report else 0,
                "sequences": len(w.sequences),
                "tokens": w.tokens,
                "residues": sum(len(s.sequence) for s in w.sequences),
                "tokens_per_sequence": {
                    "min": lengths[0],
                    "median": statistics.median(lengths),
                    "max": lengths[-1],
                },
                "max_tokens": self.max_tokens,
                "batches": self.batches,
                "padded_token_slots": self.padded_slots,
                "padding_fraction": 1 - w.tokens / self.padded_slots if self.padded_slots else None,
            },
            "timing": {
                "warmup": self.config.warmup,
                "repeats": self.config.repeats,
                "statistic": "median of repeats; each repeat is one pass over the whole workload",
                "synchronised": self.environment["device"].startswith("cuda"),
                "peak_memory": "torch.cuda.max_memory_allocated over the timed passes "
                "(resident weights and batches included)",
                "first_call": FIRST_CALL,
            },
            "paths": {name: result.to_dict() for name, result in self.paths.items()},
            "speedups": self.speedups,
            "warnings": self.warnings,
        }


# --- workload -------------------------------------------------------------------------------------


def make_workload(config: BenchConfig) -> Workload:
    """The sequences to run: the FASTA (under ``long_policy``) or the seeded lognormal workload."""
    kind = config.workload or ("fasta" if config.fasta is not None else "lognormal")
    if kind not in WORKLOADS:
        raise UsageError(f"--workload '{kind}' (choose {', '.join(WORKLOADS)})")
    if kind == "fasta":
        if config.fasta is None:
            raise UsageError("--workload fasta needs a FASTA file argument")
        if config.long_policy not in LONG_POLICIES:
            raise UsageError(f"--long '{config.long_policy}' (choose {', '.join(LONG_POLICIES)})")
        report = InputReport(str(config.fasta))
        sequences = list(iter_sequences(iter_fasta(config.fasta), report, config.long_policy))
        if not sequences:
            raise InputError(
                f"{config.fasta}: no sequence left to benchmark ({len(report.skipped)} skipped as too long)"
            )
        return Workload("fasta", sequences, path=str(config.fasta), long_policy=config.long_policy, input_report=report)
    if config.fasta is not None:
        raise UsageError(f"a FASTA file ({config.fasta}) and --workload lognormal exclude each other")
    if config.n < 1:
        raise UsageError(f"--n {config.n}: the workload needs at least one sequence")
    return Workload("lognormal", lognormal_workload(config.n, config.seed), n=config.n, seed=config.seed)


def parse_paths(text: str) -> tuple[str, ...]:
    """``"padded,packed"`` -> ``("padded", "packed")``, in :data:`PATHS` order; unknown names are usage errors."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PATHS]
    if unknown or not names:
        raise UsageError(f"--paths '{text}': choose one or more of {','.join(PATHS)}")
    return tuple(p for p in PATHS if p in names)


# --- running --------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The workload's batches, on the device, in every form a path takes."""

    padded: list[torch.Tensor]  # (B, L) int64 each
    masks: list[torch.Tensor]  # (B, L) int64 each: 1 on real tokens, 0 on padding
    packed: list[Packed]
    tokens: int
    slots: int

    @property
    def batches(self) -> int:
        return len(self.padded)


def _prepare(loaded: LoadedModel, workload: Workload, max_tokens: int, device: torch.device) -> _Prepared:
    alphabet = loaded.alphabet
    table = encoder_table(alphabet)
    tokens = [encode(s.sequence, alphabet, table) for s in workload.sequences]
    groups = batches_by_tokens([len(t) for t in tokens], max_tokens)
    padded, masks, packed = [], [], []
    for group in groups:
        batch = [tokens[i] for i in group]
        p = pad(batch, alphabet.padding_idx).to(device)
        padded.append(p)
        masks.append((p != alphabet.padding_idx).to(torch.int64))
        packed.append(pack(batch).to(device))
    synchronize(device)
    return _Prepared(
        padded,
        masks,
        packed,
        tokens=sum(int(len(p.input_ids)) for p in packed),
        slots=sum(p.numel() for p in padded),
    )


def run_bench(config: BenchConfig, loaded: LoadedModel | None = None, log: Log | None = None) -> BenchResult:
    """Time the requested paths over the workload; see the module docstring for the method."""
    say = log or (lambda message: None)
    requested, hf_missing = _check_options(config)
    # --max-tokens 0 has always meant the default budget here (as None does)
    placement = resolve_run(config.device, config.dtype, config.backend, config.max_tokens or None)
    workload = make_workload(config)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env = bench_environment(placement.device)  # at the start: the git state is that of the code that runs

    if loaded is None:
        say(f"loading {config.model} on {placement.device} ({placement.dtype_name})")
        loaded = load_model(config.model, placement.device, placement.dtype)
    prepared = _prepare(loaded, workload, placement.max_tokens, placement.device)
    say(
        f"workload {workload.describe()}: {len(workload.sequences)} sequences, {prepared.tokens:,} tokens, "
        f"{prepared.batches} batches of at most {placement.max_tokens} tokens"
    )

    timer = _PathTimer(config, loaded, placement, prepared, len(workload.sequences), say)
    for name in requested:
        if name == "packed":
            for backend in placement.backends:
                timer.time(packed_row(backend, placement.backends), hf_missing, backend)
        else:
            timer.time(name, hf_missing)
    return BenchResult(
        config=config,
        environment=env,
        model={k: v for k, v in loaded.info.to_dict().items() if k not in ("has_lm_head", "notes")},
        dtype=placement.dtype_name,
        backend=placement.backend,
        max_tokens=placement.max_tokens,
        workload=workload,
        batches=prepared.batches,
        padded_slots=prepared.slots,
        paths=timer.results,
        date=date,
        warnings=timer.warnings,
        kernels={b: kernel_provenance(b, placement.device) for b in placement.backends},
        fc1=fc1_description(placement.device, placement.dtype, bool(config.packed_kwargs.get("compile"))),
    )


def _check_options(config: BenchConfig) -> tuple[tuple[str, ...], str | None]:
    """The paths to time, in :data:`PATHS` order, and why the HF peer cannot run (``None``: it can)."""
    if config.repeats < 1:
        raise UsageError(f"--repeats {config.repeats}: at least one timed pass is needed")
    if config.warmup < 0:
        raise UsageError(f"--warmup {config.warmup} cannot be negative")
    requested = tuple(config.paths) if config.paths is not None else PATHS
    for name in requested:
        if name not in PATHS:
            raise UsageError(f"unknown path '{name}' (choose {', '.join(PATHS)})")
    hf_missing = hf_unavailable() if "hf" in requested else None
    if hf_missing and config.paths is not None:
        raise EnvironmentUnavailable(f"--paths hf: the Hugging Face peer is not available: {hf_missing}")
    return requested, hf_missing


class _PathTimer:
    """Times one path after another on the prepared batches, each first checked against fair-esm's
    padded output on the smallest batch; collects each path's result and the warnings."""

    def __init__(
        self,
        config: BenchConfig,
        loaded: LoadedModel,
        placement: RunPlacement,
        prepared: _Prepared,
        n_sequences: int,
        say: Log,
    ):
        self.config, self.loaded, self.placement, self.prepared = config, loaded, placement, prepared
        self.n_sequences, self.say = n_sequences, say
        self.results: dict[str, PathResult] = {}
        self.warnings: list[str] = []
        if loaded.info.random_weights:
            self.warnings.append(
                f"model {loaded.info.spec} has RANDOM weights: timings hold for its architecture, not a trained model"
            )
        self.peer: HFPeer | None = None
        self.check_index = min(range(prepared.batches), key=lambda i: (prepared.padded[i].numel(), i))
        self.expected = _last_hidden(padded_forward(loaded.model, prepared.padded[self.check_index]), loaded.model)

    def runner(self, name: str, backend: str | None = None) -> Callable[[int], object]:
        """Runs the path on batch ``i`` (a packed path with ``backend``)."""
        model, prepared = self.loaded.model, self.prepared
        if name == "padded":
            return lambda i: padded_forward(model, prepared.padded[i])
        if name.startswith("packed"):
            return lambda i: packed_forward(model, prepared.packed[i], backend, **self.config.packed_kwargs)
        return lambda i: hf_forward(self.peer, prepared.padded[i], prepared.masks[i])

    def time(self, name: str, hf_missing: str | None, backend: str | None = None) -> None:
        if name == "hf" and hf_missing:
            self.results[name] = PathResult(name, "not available", f"not available: {hf_missing}")
            return
        prepared = self.prepared
        slots = prepared.tokens if name.startswith("packed") else prepared.slots
        result = PathResult(
            name, "ok", tokens=prepared.tokens, sequences=self.n_sequences, slots=slots, backend=backend
        )
        if name == "hf":
            try:
                self.peer = build_hf_peer(self.loaded)
            except EnvironmentUnavailable as err:
                if self.config.paths is not None:
                    raise
                self.results[name] = PathResult(name, "not available", f"not available: {err}")
                return
            result.note = (
                f"transformers {self.peer.transformers_version}, attn_implementation={self.peer.attn_implementation}"
            )
        run_batch = self.runner(name, backend)
        try:
            if name != "padded":
                result.check = self._check(name, run_batch(self.check_index))
            self.say(f"timing {name}: {self.config.warmup} warm-up pass(es), {self.config.repeats} timed pass(es)")
            _time_path(
                result, run_batch, prepared.batches, self.placement.device, self.config.warmup, self.config.repeats
            )
        except torch.cuda.OutOfMemoryError:
            result = self._out_of_memory(name, slots)
            result.backend = backend
        self.results[name] = result
        if result.ok:
            self.say(f"  {name}: median {result.median_s:.3f} s, {result.tokens_per_s:,.0f} tokens/s")

    def _check(self, name: str, output) -> dict:
        check = _check(
            name, output, self.expected, self.prepared, self.check_index, self.loaded.model, self.placement.dtype_name
        )
        if not check["ok"]:
            self.warnings.append(
                f"{name}: output differs from fair-esm's padded one (mean |diff| "
                f"{check['relative_mean_abs_diff']:.2e} of mean |reference|, tolerance "
                f"{check['tolerance']:.0e}): this path may not be the same model"
            )
        return check

    def _out_of_memory(self, name: str, slots: int) -> PathResult:
        max_tokens = self.placement.max_tokens
        self.warnings.append(f"{name}: CUDA out of memory at --max-tokens {max_tokens}; try a smaller budget")
        gc.collect()
        torch.cuda.empty_cache()
        return PathResult(
            name,
            "out of memory",
            f"CUDA out of memory at --max-tokens {max_tokens}",
            tokens=self.prepared.tokens,
            sequences=self.n_sequences,
            slots=slots,
        )


def _time_path(
    result: PathResult,
    run_batch: Callable[[int], object],
    n_batches: int,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> None:
    """Fill ``result.seconds`` and its memory figures: warm-up passes, then timed passes."""
    cuda = device.type == "cuda"

    def one_pass() -> None:
        for i in range(n_batches):
            run_batch(i)  # the output is dropped at once: only one batch's activations live at a time

    for _ in range(warmup):
        one_pass()
    synchronize(device)
    if cuda:
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
        result.resident_memory_bytes = torch.cuda.memory_allocated(device)
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        one_pass()
        synchronize(device)
        result.seconds.append(time.perf_counter() - start)
    if cuda:
        result.peak_memory_bytes = torch.cuda.max_memory_allocated(device)


def _last_hidden(output, model) -> torch.Tensor:
    return output.representations[model.num_layers]


def _check(name: str, output, expected: torch.Tensor, prepared: _Prepared, index: int, model, dtype_name: str) -> dict:
    """Compare a path's output on batch ``index`` with fair-esm's padded output ``expected``
    ``(B, L, C)`` over the real tokens, in fp32."""
    hidden = output if isinstance(output, torch.Tensor) else _last_hidden(output, model)
    if name.startswith("packed"):
        hidden = to_padded(hidden, prepared.packed[index])  # (T, C) -> (B, L, C)
    real = prepared.masks[index].bool()
    want, out = expected.float()[real], hidden.float()[real]  # (tokens, C)
    diff = (out - want).abs()
    mean_want = float(want.abs().mean())
    relative = float(diff.mean()) / mean_want if mean_want > 0 else float("inf")
    finite = bool(torch.isfinite(out).all())
    tolerance = CHECK_TOLERANCE[dtype_name]
    return {
        "against": "padded (fair-esm) last hidden state",
        "batch_sequences": int(prepared.padded[index].shape[0]),
        "batch_tokens": int(real.sum()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "relative_mean_abs_diff": relative,
        "tolerance": tolerance,
        "finite": finite,
        "ok": finite and relative <= tolerance,
    }
