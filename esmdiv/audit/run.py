"""One audit, end to end: sequences -> both paths (and the high-precision run) -> metrics -> decision.

:func:`run_audit` is what ``esmdiv check`` calls and what tests call directly. It goes through the
stages a partial report names (``options``, ``input``, ``model``, ``audit``, ``decision``), one
function each, and returns an :class:`~esmdiv.audit.results.AuditResult`; rendering and exit codes
belong to the CLI.
"""

from __future__ import annotations

import itertools
import math
import socket
import time
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from esmdiv.audit.batch import AuditRun, KernelRun, Progress, compare_batch, perplexity_pass, warm_up
from esmdiv.audit.clock import STAGES, StageClock
from esmdiv.audit.evidence import (
    DEFAULT_EVIDENCE_TOKENS,
    EVIDENCE_MODES,
    FLAGGED_FACTOR,
    PROBE_OFFSET,
    breaks_a_gate,
    choose_sample,
    evidence_pass,
    keep_for_evidence,
    position_probe,
    probe_model,
    sample_summary,
)
from esmdiv.audit.results import AuditResult, FollowerResult, KernelResult, SequenceResult
from esmdiv.audit.summary import bound_summary, kernel_timings, mlm_summary, summarise, timings
from esmdiv.distributed import (
    DEFAULT_TIMEOUT_S,
    World,
    current_world,
    failures_reach_root,
    gather_to_root,
    raise_for_failed_ranks,
    shard_by_tokens,
)
from esmdiv.distributed import init as init_distributed
from esmdiv.errors import EnvironmentUnavailable, InputError, UsageError
from esmdiv.forward.attention import kernel_provenance
from esmdiv.forward.device import RunPlacement, compile_key, decide_compile, note_compiled, resolve_run
from esmdiv.forward.faults import Fault
from esmdiv.forward.high_precision import build_high_precision, check_high_precision_choice, high_precision_dtype
from esmdiv.forward.mlp import fc1_description, requested_fc1_kernel
from esmdiv.forward.packing import batches_by_tokens, encode, encoder_table
from esmdiv.input.fasta import iter_fasta
from esmdiv.input.sequences import AuditSequence, InputReport, iter_sequences
from esmdiv.measure.decision import Decision, Thresholds, decide
from esmdiv.measure.trace import DEFAULT_TRACE_THRESHOLD
from esmdiv.model.heads import build_heads, load_extra_features
from esmdiv.model.loading import LoadedModel, load_model
from esmdiv.report.fingerprint import environment
from esmdiv.report.partial import PartialRun

# Sequences are sorted by length within windows of this many batches' worth of tokens: batches
# stay nearly padding-free while memory stays bounded by the window, not by the file.
WINDOW_BATCHES = 64


@dataclass
class AuditConfig:
    fasta: Path
    model: str = "random:8M"
    device: str = "auto"
    dtype: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    backend: str = "auto"  # auto, all, or one or more backends, comma-separated ("torch,fa4")
    head: str = "auto"  # auto | proxy | model | a head file
    long_policy: str = "truncate"
    max_tokens: int | None = None  # None: by device
    thresholds: Thresholds = field(default_factory=Thresholds)
    faults: AbstractSet[Fault] = frozenset()
    proxy_seeds: tuple[int, ...] = (42,)
    head_activation: str = "relu"
    extra_features: Path | None = None
    # The evidence pass (esmdiv.audit.evidence): "sample" (about evidence_tokens tokens, plus every
    # sequence that broke a gate), "all" or "off". The older --reference fp32 and --invariance
    # options ask for the evidence on every sequence: either one makes the mode "all".
    evidence: str = "sample"
    evidence_tokens: int = DEFAULT_EVIDENCE_TOKENS
    high_precision: str = "none"  # --reference: "fp32" = evidence on every sequence
    trace: bool = False
    trace_threshold: float = DEFAULT_TRACE_THRESHOLD
    mlm: bool | None = None  # None: when the model has an LM head
    mlm_sample: int = 64  # sequences (the first in the file) in the masked-perplexity sample
    invariance: bool = False  # --invariance: evidence on every sequence
    compile: bool | None = None  # torch.compile the packed path; None: on CUDA
    fasta_name: str | None = None  # how reports and errors name the input (``<stdin>``); None: its path
    collective_timeout: float = DEFAULT_TIMEOUT_S  # torchrun: how long rank 0 waits at the gather for a rank

    @property
    def input_name(self) -> str:
        return self.fasta_name or str(self.fasta)

    @property
    def evidence_mode(self) -> str:
        """The evidence pass's coverage once the older options are taken into account."""
        return "all" if self.high_precision == "fp32" or self.invariance else self.evidence


@dataclass
class _Input:
    """The validated input: what was read, each audited record's token count, this rank's share."""

    report: InputReport
    lengths: dict[int, int]  # record index -> tokens (BOS and EOS included)
    extra: np.ndarray | None  # --extra-features, one row per record
    mine: set[int] | None  # this rank's record indices under torchrun; None: all of them
    sample: set[int]  # the evidence sample (every rank computes the same); empty with --evidence off

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths.values())

    @property
    def my_tokens(self) -> int:
        return self.total_tokens if self.mine is None else sum(self.lengths[i] for i in self.mine)


@dataclass
class _Compared:
    """What the audit stage leaves: every sequence's result per kernel (all ranks', in file order),
    the notices (OOM retries), the token budget it ended with, how many sequences the main pass
    flagged for the evidence pass."""

    results: list[list[SequenceResult]]  # one list per kernel, in run.kernels order
    notices: list[str]
    budget: int
    flagged: int
    ranks: list[dict] | None = None  # torchrun: what each rank did (rank_stats), in rank order


def run_audit(
    config: AuditConfig,
    loaded: LoadedModel | None = None,
    progress: Progress | None = None,
    partial: PartialRun | None = None,
    clock: StageClock | None = None,
) -> AuditResult | FollowerResult:
    """Run both paths over the FASTA and decide. ``loaded`` reuses a model already on its device.

    ``partial``, when given, is filled as the run goes, so a run that fails still leaves evidence
    (see :mod:`esmdiv.report.partial`). ``clock``: where the stages' seconds go (the CLI's starts at
    esmdiv's import; :mod:`esmdiv.audit.clock`). Under torchrun, ranks other than 0 return a
    :class:`~esmdiv.audit.results.FollowerResult`; a rank that fails between joining the process
    group and sending its results tells rank 0 (:func:`~esmdiv.distributed.failures_reach_root`).
    """
    partial = PartialRun({}) if partial is None else partial
    clock = StageClock() if clock is None else clock
    world = current_world()
    placement = _resolve_options(config, world)
    clock.lap("options")
    partial.resolved = {
        "device": str(placement.device),
        "dtype": placement.dtype_name,
        "backend": placement.backend,
        "max_tokens": placement.max_tokens,
    }
    partial.stage = "input"
    if world is not None:  # first: from here on, a rank that fails alone can tell rank 0
        init_distributed(placement.device, config.collective_timeout)
    with failures_reach_root(world, partial):
        report = partial.inputs = InputReport(config.input_name)
        inputs = _read_input(config, report, world)
        clock.lap("input")

        partial.stage = "model"
        loaded, load_seconds = _load_model(config, loaded, placement)
        partial.model = loaded.info.to_dict()
        run = _new_run(config, loaded, placement, inputs, progress if world is None or world.is_root else None)
        partial.finished = run.kernels[0].finished
        clock.lap("model_load")

        partial.stage = "audit"
        mine = _compare_here(config, run, inputs, placement.max_tokens, clock)
    compared = _gather(run, mine, world, clock)
    if compared is None:  # a torchrun rank other than 0: rank 0 decides and reports
        return FollowerResult()
    partial.finished = compared.results[0]  # every rank's (first kernel), should the decision fail

    partial.stage = "decision"
    return _conclude(config, run, placement, inputs, compared, load_seconds, world, clock)


# --- stage "options" -------------------------------------------------------------------------------


def _resolve_options(config: AuditConfig, world: World | None) -> RunPlacement:
    """Device, dtype, backend and budget (torchrun: one GPU per local rank); the --reference choice."""
    placement = resolve_run(
        config.device, config.dtype, config.backend, config.max_tokens, world.local_rank if world is not None else None
    )
    check_high_precision_choice(config.high_precision)
    if config.evidence not in EVIDENCE_MODES:
        raise UsageError(f"--evidence '{config.evidence}' (choose {', '.join(EVIDENCE_MODES)})")
    if config.evidence_tokens < 1:
        raise UsageError(f"--evidence-tokens {config.evidence_tokens} must be a positive number of tokens")
    if not config.collective_timeout > 0 or not math.isfinite(config.collective_timeout):
        raise UsageError(f"--collective-timeout {config.collective_timeout} must be a positive number of seconds")
    return placement


# --- stage "input" ---------------------------------------------------------------------------------


def _read_input(config: AuditConfig, report: InputReport, world: World | None) -> _Input:
    """Validate the whole FASTA into ``report``; the extra features; under torchrun, this rank's shard."""
    lengths = {
        s.index: len(s.sequence) + 2
        for s in iter_sequences(iter_fasta(config.fasta, config.input_name), report, config.long_policy)
    }
    if report.records == len(report.skipped):
        raise InputError(f"{config.input_name}: no sequence left to audit ({len(report.skipped)} skipped as too long)")
    extra = load_extra_features(config.extra_features, report.records) if config.extra_features else None
    mine = None if world is None else shard_by_tokens(lengths, world.size)[world.rank]
    sample = choose_sample(lengths, config.evidence_tokens) if config.evidence_mode != "off" else set()
    return _Input(report, lengths, extra, mine, sample)


def _sequences(config: AuditConfig, keep: AbstractSet[int] | None) -> Iterator[AuditSequence]:
    """The audited sequences again, streamed from the file (only ``keep``'s record indices if given)."""
    sequences = iter_sequences(
        iter_fasta(config.fasta, config.input_name), InputReport(config.input_name), config.long_policy
    )
    return sequences if keep is None else (s for s in sequences if s.index in keep)


# --- stage "model" ---------------------------------------------------------------------------------


def _load_model(config: AuditConfig, loaded: LoadedModel | None, placement: RunPlacement) -> tuple[LoadedModel, float]:
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(config.model, placement.device, placement.dtype)
    return loaded, time.perf_counter() - t0


def _new_run(
    config: AuditConfig,
    loaded: LoadedModel,
    placement: RunPlacement,
    inputs: _Input,
    progress: Progress | None,
) -> AuditRun:
    """The heads and everything the batches need, from the options and the loaded model."""
    device = placement.device
    heads = [
        h.to(device) for h in build_heads(config.head, loaded, config.proxy_seeds, config.head_activation, inputs.extra)
    ]
    mlm = loaded.info.has_lm_head if config.mlm is None else config.mlm
    if mlm and not loaded.info.has_lm_head:
        raise UsageError(f"--mlm: {loaded.info.spec} has no language-model head")
    mode = config.evidence_mode
    compiled, compile_reason = decide_compile(
        config.compile, device, inputs.my_tokens, compile_key(device, placement.dtype, loaded.model)
    )
    requested_fc1_kernel()  # before any forward: a bad ESMDIV_FC1_KERNEL is a usage error now
    return AuditRun(
        loaded,
        device,
        placement.backends,
        heads,
        config.faults,
        progress,
        high_precision=_cached_high_precision(loaded, device) if mode != "off" else None,
        trace=config.trace,
        mlm=mlm,
        mlm_sample=config.mlm_sample if mlm else 0,
        compile=compiled,
        compile_reason=compile_reason,
        fc1=fc1_description(device, placement.dtype, compiled),
        flag=breaks_a_gate(config.thresholds) if mode == "sample" else None,
        keep=keep_for_evidence(inputs.sample if mode == "sample" else None) if mode != "off" else None,
        flag_budget=FLAGGED_FACTOR * config.evidence_tokens,
    )


def _cached_high_precision(loaded: LoadedModel, device: torch.device) -> torch.nn.Module:
    """The high-precision copy is built once per loaded model (selftest runs many audits)."""
    high = getattr(loaded, "_high_precision", None)
    if high is None:
        high = build_high_precision(loaded.model, device)
        loaded._high_precision = high  # type: ignore[attr-defined]
    return high


# --- stage "audit" ---------------------------------------------------------------------------------


def _gather(
    run: AuditRun,
    mine: tuple[list[list[SequenceResult]], list[str], int],
    world: World | None,
    clock: StageClock,
) -> _Compared | None:
    """This process's results; under torchrun, every rank's results gathered on rank 0 (``None`` on
    the other ranks), where a failed rank fails the run."""
    results, notices, budget = mine
    ranks = None
    if world is not None:
        for rows in results:  # each row says which rank computed it, in the merged report
            for r in rows:
                r.rank = world.rank
        payload = {
            "results": results,
            "notices": notices,
            "budget": budget,
            "seconds": run.seconds,
            "kernels": [(k.trace, k.perplexity, k.seconds) for k in run.kernels],
            "flagged": len(run.flagged),
            "rank": rank_stats(world, run, results, clock),
        }
        gathered = gather_to_root(payload, world)
        clock.lap("gather")  # rank 0 waiting for the slowest rank
        if not world.is_root:
            return None
        results, notices, budget = _merge_ranks(run, gathered)
        flagged = sum(p["flagged"] for p in gathered)
        ranks = [p["rank"] for p in gathered]
    else:
        flagged = len(run.flagged)
    for rows in results:
        rows.sort(key=lambda r: r.index)
    return _Compared(results, notices, budget, flagged, ranks)


def rank_stats(world: World, run: AuditRun, results: list[list[SequenceResult]], clock: StageClock) -> dict:
    """What one torchrun rank did, for the report's ``distributed.per_rank``: its device and host,
    the records it audited (file indices), their tokens, its forwards' seconds, its seconds from
    start to the gather, and its peak GPU memory (null on CPU)."""
    mine = results[0]
    cuda = run.device.type == "cuda"
    return {
        "rank": world.rank,
        "local_rank": world.local_rank,
        "host": socket.gethostname(),
        "device": str(run.device),
        "sequences": len(mine),
        "records": sorted(r.index for r in mine),
        "tokens": sum(r.length + 2 for r in mine),
        "seconds": {path: round(value, 6) for path, value in run.seconds.items()},
        "wall_s": time.perf_counter() - clock.started,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(run.device) if cuda else None,
    }


#: Why a distributed report's per-sequence values are not bit-identical to a one-process run's.
ROUNDING_NOTE = (
    "per-sequence values can differ from a one-process run at rounding level: each rank pads and packs only "
    "its own shard, so the batch shapes, and with them the GEMM kernels and the order of floating-point sums, "
    "differ (the verdict's gates allow for rounding; a real bug is orders of magnitude larger)"
)


def distributed_block(config: AuditConfig, world: World, ranks: list[dict], device: torch.device) -> dict:
    """The report's ``distributed`` block: how many ranks ran, on what, what each did, and the note
    on rounding."""
    return {
        "ranks": world.size,
        "backend": "nccl" if device.type == "cuda" else "gloo",
        "object_exchange": "gloo",
        "collective_timeout_s": config.collective_timeout,
        "per_rank": ranks,
        "note": ROUNDING_NOTE,
    }


def _compare_here(
    config: AuditConfig, run: AuditRun, inputs: _Input, max_tokens: int, clock: StageClock
) -> tuple[list[list[SequenceResult]], list[str], int]:
    """Warm up, then every (of this rank's) sequences through both paths, then the evidence pass.

    Returns the results (one list per kernel), the notices (OOM retries) and the token budget the
    pass ended with.
    """
    warm_up(run)
    clock.lap("compile")
    if run.progress:
        run.progress.start(inputs.my_tokens)
    results, notices, budget = _audit_stream(run, _sequences(config, inputs.mine), max_tokens)
    run.max_tokens = budget
    if run.mlm_sample:
        perplexity_pass(run, _perplexity_sample(config, run.mlm_sample, inputs.mine))
    clock.lap("metrics")
    clock.split("metrics", {path: run.seconds[path] for path in ("padded", "packed", "mlm")})
    if config.evidence_mode != "off":
        if run.progress and hasattr(run.progress, "stage"):
            run.progress.stage("evidence pass")
        _evidence(config, run, inputs, results)
        clock.lap("evidence")
        clock.split("evidence", {"reference": run.seconds["high_precision"]})
    return results, notices, budget


def _perplexity_sample(config: AuditConfig, first: int, mine: AbstractSet[int] | None) -> list[AuditSequence]:
    """This process's share of the first ``first`` records, the masked-perplexity sample (the file
    is read from its start only as far as them)."""
    head = itertools.takewhile(lambda s: s.index < first, _sequences(config, None))
    return [s for s in head if mine is None or s.index in mine]


def _evidence(config: AuditConfig, run: AuditRun, inputs: _Input, results: list[list[SequenceResult]]) -> None:
    """The evidence pass over this rank's evidence set, then the position probe over its share of
    the sample (:mod:`esmdiv.audit.evidence`); ``results``: one list per kernel."""
    mine = {r.index for r in results[0]}
    rerun = mine if config.evidence_mode == "all" else (inputs.sample & mine) | set(run.flagged)
    evidence_pass(run, list(_sequences(config, rerun)), results)
    probed = inputs.sample & mine
    if probed:
        position_probe(run, probe_model(run), list(_sequences(config, probed)), results)


def _audit_stream(
    run: AuditRun, sequences: Iterable[AuditSequence], max_tokens: int
) -> tuple[list[list[SequenceResult]], list[str], int]:
    """Sort and batch window by window (memory: one window of sequences plus the results); one
    list of results per kernel.

    CUDA out of memory halves the token budget and retries the batch, saying so; a single
    sequence that cannot fit is an environment error naming it.
    """
    table = encoder_table(run.loaded.alphabet)
    # shared: a run that fails still reports what finished
    results: list[list[SequenceResult]] = [kernel.finished for kernel in run.kernels]
    notices: list[str] = []
    budget = max_tokens
    for window in _windows(sequences, WINDOW_BATCHES * max_tokens):
        tokens = [encode(s.sequence, run.loaded.alphabet, table) for s in window]
        lengths = [len(t) for t in tokens]
        pending = batches_by_tokens(lengths, budget)
        while pending:
            batch = pending.pop(0)
            try:
                done = compare_batch(run, [window[i] for i in batch], [tokens[i] for i in batch])
                for rows, kernel_rows in zip(results, done):
                    rows.extend(kernel_rows)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if len(batch) == 1:
                    s = window[batch[0]]
                    raise EnvironmentUnavailable(
                        f"{s.id} (line {s.line}, {len(s.sequence)} residues) does not fit in GPU memory even alone; "
                        "use --long truncate or a smaller model"
                    ) from None
                budget = max(3, budget // 2)
                notices.append(
                    f"CUDA out of memory on a batch of {len(batch)} sequences: token budget halved to {budget}"
                )
                sub_lengths = [lengths[i] for i in batch]
                pending = [[batch[j] for j in sub] for sub in batches_by_tokens(sub_lengths, budget)] + pending
    return results, notices, budget


def _windows(sequences: Iterable[AuditSequence], window_tokens: int) -> Iterator[list[AuditSequence]]:
    window: list[AuditSequence] = []
    tokens = 0
    for s in sequences:
        window.append(s)
        tokens += len(s.sequence) + 2
        if tokens >= window_tokens:
            yield window
            window, tokens = [], 0
    if window:
        yield window


def _merge_ranks(run: AuditRun, gathered: list[dict]) -> tuple[list[list[SequenceResult]], list[str], int]:
    """Rank 0: every rank's results and accumulators into one run, kernel by kernel; a failed rank
    fails it all."""
    raise_for_failed_ranks(gathered)
    results = [[r for payload in gathered for r in payload["results"][k]] for k in range(len(run.kernels))]
    notices = [f"rank {rank}: {n}" for rank, payload in enumerate(gathered) for n in payload["notices"]]
    for path in run.seconds:  # the job takes as long as its slowest rank
        run.seconds[path] = max(payload["seconds"][path] for payload in gathered)
    for k, kernel in enumerate(run.kernels):
        kernel.seconds = max(payload["kernels"][k][2] for payload in gathered)
        for payload in gathered[1:]:
            trace, perplexity, _ = payload["kernels"][k]
            if kernel.trace is not None:
                kernel.trace.merge(trace)
            kernel.perplexity.merge(perplexity)
    return results, notices, min(payload["budget"] for payload in gathered)


# --- stage "decision" ------------------------------------------------------------------------------


def _conclude(
    config: AuditConfig,
    run: AuditRun,
    placement: RunPlacement,
    inputs: _Input,
    compared: _Compared,
    load_seconds: float,
    world: World | None,
    clock: StageClock,
) -> AuditResult:
    """Decide (per kernel), time, fingerprint, and assemble the result. With several kernels the
    top level is the worst kernel's audit."""
    kernels = [
        _kernel_result(config, run, kernel, rows, placement, inputs)
        for kernel, rows in zip(run.kernels, compared.results)
    ]
    worst = max(kernels, key=lambda k: k.decision.verdict.exit_code)  # the first of the worst on a tie
    position = worst.summary.pop("position", None)
    for k in kernels:
        k.summary.pop("position", None)  # the same for every kernel: the report's evidence block has it
    evidence = _evidence_block(config, inputs, compared, position)
    run_timings = timings(run.seconds, inputs.total_tokens, load_seconds, len(kernels))
    clock.lap("decision")
    t1 = time.perf_counter()
    loaded = run.loaded
    fingerprint = environment(
        placement.device,
        placement.dtype,
        placement.backend,
        loaded,
        config.fasta,
        inputs.report.records,
        fasta_name=config.fasta_name,
    )
    run_timings["fingerprint_s"] = time.perf_counter() - t1
    clock.lap("fingerprint")
    if run.compile:
        note_compiled(compile_key(placement.device, placement.dtype, loaded.model))
    if world is not None:
        run_timings["ranks"] = world.size
    run_timings.update(clock.report(STAGES))
    return AuditResult(
        model=loaded.info.to_dict(),
        device=str(placement.device),
        dtype=placement.dtype_name,
        backend=placement.backend,
        compiled=run.compile,
        compile_reason=run.compile_reason,
        fc1=run.fc1,
        heads=[h.name for h in run.heads],
        max_tokens=compared.budget,
        inputs=inputs.report,
        sequences=worst.sequences,
        summary=worst.summary,
        thresholds=config.thresholds,
        decision=worst.decision,
        timings=run_timings,
        faults=sorted(f.value for f in config.faults),
        notices=compared.notices,
        trace=worst.trace,
        invariance=worst.invariance,
        evidence=evidence,
        environment=fingerprint,
        kernel=worst.provenance,
        kernels=kernels if len(kernels) > 1 else [],
        distributed=None if world is None else distributed_block(config, world, compared.ranks, placement.device),
    )


def _kernel_result(
    config: AuditConfig,
    run: AuditRun,
    kernel: KernelRun,
    results: list[SequenceResult],
    placement: RunPlacement,
    inputs: _Input,
) -> KernelResult:
    """One kernel's summary, decision, trace and invariance blocks, provenance and timing."""
    summary, decision, trace = _decide(config, run, kernel, results, placement)
    invariance = summary.pop("invariance", None)  # a block of its own in the report
    return KernelResult(
        backend=kernel.backend,
        provenance=kernel_provenance(kernel.backend, placement.device),
        decision=decision,
        summary=summary,
        sequences=results,
        timings=kernel_timings(kernel.seconds, inputs.total_tokens),
        trace=trace,
        invariance=invariance,
    )


def _decide(
    config: AuditConfig,
    run: AuditRun,
    kernel: KernelRun,
    results: list[SequenceResult],
    placement: RunPlacement,
) -> tuple[dict, Decision, dict | None]:
    """The summary, the decision and the trace block of one kernel, from every sequence's result."""
    summary, evidence = summarise(
        results,
        [h.name for h in run.heads],
        placement.dtype,
        high_precision_dtype(placement.device),
        config.thresholds,
        PROBE_OFFSET if config.evidence_mode != "off" else 0,
    )
    summary["mlm"] = mlm_summary(run, results, kernel)
    trace = kernel.trace.result(config.trace_threshold) if kernel.trace else None
    decision = decide(evidence, config.thresholds)
    summary["bound"] = bound_summary(evidence, config.thresholds)
    return summary, decision, trace


#: The known bugs only the evidence pass sees (docs/findings.md), named when it is off.
UNSEEN_WITHOUT_EVIDENCE = ("tanh-gelu", "fp16-rotary", "global-positions")


def _evidence_block(config: AuditConfig, inputs: _Input, compared: _Compared, position: dict | None) -> dict:
    """The report's ``evidence`` block: what the evidence pass covered, or what a run without it
    cannot see."""
    mode = config.evidence_mode
    if mode == "off":
        return {"mode": "off", "unseen_faults": list(UNSEEN_WITHOUT_EVIDENCE)}
    return {
        "mode": mode,
        "tokens": config.evidence_tokens,
        "sample": sample_summary(inputs.lengths, inputs.sample),
        "flagged": compared.flagged,
        "rerun": sum(r.high_precision is not None for r in compared.results[0]),
        "position": position,
    }
