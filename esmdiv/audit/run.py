"""One audit, end to end: sequences -> both paths (and the high-precision run) -> metrics -> decision.

:func:`run_audit` is what ``esmdiv check`` calls and what tests call directly. It goes through the
stages a partial report names (``options``, ``input``, ``model``, ``audit``, ``decision``), one
function each, and returns an :class:`~esmdiv.audit.results.AuditResult`; rendering and exit codes
belong to the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from esmdiv.audit.batch import AuditRun, Progress, compare_batch, invariance_pass, warm_up
from esmdiv.audit.results import AuditResult, FollowerResult, SequenceResult
from esmdiv.audit.summary import bound_summary, mlm_summary, summarise, timings
from esmdiv.distributed import (
    World,
    current_world,
    failures_reach_root,
    gather_to_root,
    raise_for_failed_ranks,
    shard_by_tokens,
)
from esmdiv.distributed import init as init_distributed
from esmdiv.errors import EnvironmentUnavailable, InputError, UsageError
from esmdiv.forward.device import RunPlacement, default_compile, resolve_run
from esmdiv.forward.faults import Fault
from esmdiv.forward.high_precision import build_high_precision, check_high_precision_choice, high_precision_dtype
from esmdiv.forward.packing import batches_by_tokens, encode, encoder_table
from esmdiv.input.fasta import iter_fasta
from esmdiv.input.sequences import AuditSequence, InputReport, iter_sequences
from esmdiv.measure.decision import Decision, Thresholds, decide
from esmdiv.measure.invariance import invariance_summary
from esmdiv.measure.trace import DEFAULT_TRACE_THRESHOLD, TraceAccumulator
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
    backend: str = "auto"
    head: str = "auto"  # auto | proxy | model | a head file
    long_policy: str = "truncate"
    max_tokens: int | None = None  # None: by device
    thresholds: Thresholds = field(default_factory=Thresholds)
    faults: AbstractSet[Fault] = frozenset()
    proxy_seeds: tuple[int, ...] = (42,)
    head_activation: str = "relu"
    extra_features: Path | None = None
    high_precision: str = "none"  # --reference: "fp32" runs a third, high-precision pass (fp64 on CPU)
    trace: bool = False
    trace_threshold: float = DEFAULT_TRACE_THRESHOLD
    mlm: bool | None = None  # None: when the model has an LM head
    mlm_sample: int = 64  # sequences (the first in the file) in the masked-perplexity sample
    invariance: bool = False
    compile: bool | None = None  # torch.compile the packed path; None: on CUDA


@dataclass
class _Input:
    """The validated input: what was read, each audited record's token count, this rank's share."""

    report: InputReport
    lengths: dict[int, int]  # record index -> tokens (BOS and EOS included)
    extra: np.ndarray | None  # --extra-features, one row per record
    mine: set[int] | None  # this rank's record indices under torchrun; None: all of them

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths.values())

    @property
    def my_tokens(self) -> int:
        return self.total_tokens if self.mine is None else sum(self.lengths[i] for i in self.mine)


@dataclass
class _Compared:
    """What the audit stage leaves: every sequence's result (all ranks', in file order), the
    notices (OOM retries), the token budget it ended with, the invariance block."""

    results: list[SequenceResult]
    notices: list[str]
    budget: int
    invariance: dict | None


def run_audit(
    config: AuditConfig,
    loaded: LoadedModel | None = None,
    progress: Progress | None = None,
    partial: PartialRun | None = None,
) -> AuditResult | FollowerResult:
    """Run both paths over the FASTA and decide. ``loaded`` reuses a model already on its device.

    ``partial``, when given, is filled as the run goes, so a run that fails still leaves evidence
    (see :mod:`esmdiv.report.partial`). Under torchrun, ranks other than 0 return a
    :class:`~esmdiv.audit.results.FollowerResult`; a rank that fails between joining the process
    group and sending its results tells rank 0 (:func:`~esmdiv.distributed.failures_reach_root`).
    """
    partial = PartialRun({}) if partial is None else partial
    world = current_world()
    placement = _resolve_options(config, world)
    partial.resolved = {
        "device": str(placement.device),
        "dtype": placement.dtype_name,
        "backend": placement.backend,
        "max_tokens": placement.max_tokens,
    }
    partial.stage = "input"
    if world is not None:  # first: from here on, a rank that fails alone can tell rank 0
        init_distributed(placement.device)
    with failures_reach_root(world, partial):
        # A first pass validates the whole file before any model loads: bad input fails in seconds.
        report = partial.inputs = InputReport(str(config.fasta))
        inputs = _read_input(config, report, world)

        partial.stage = "model"
        loaded, load_seconds = _load_model(config, loaded, placement)
        partial.model = loaded.info.to_dict()
        run = _new_run(config, loaded, placement, inputs.extra, progress if world is None or world.is_root else None)
        partial.finished = run.finished

        partial.stage = "audit"
        mine = _compare_here(config, run, inputs, placement.max_tokens)
    compared = _gather(config, run, mine, world)
    if compared is None:  # a torchrun rank other than 0: rank 0 decides and reports
        return FollowerResult()
    partial.finished = compared.results  # every rank's, should the decision fail

    partial.stage = "decision"
    return _conclude(config, run, placement, inputs, compared, load_seconds, world)


# --- stage "options" -------------------------------------------------------------------------------


def _resolve_options(config: AuditConfig, world: World | None) -> RunPlacement:
    """Device, dtype, backend and budget (torchrun: one GPU per local rank); the --reference choice."""
    placement = resolve_run(
        config.device, config.dtype, config.backend, config.max_tokens, world.local_rank if world is not None else None
    )
    check_high_precision_choice(config.high_precision)
    return placement


# --- stage "input" ---------------------------------------------------------------------------------


def _read_input(config: AuditConfig, report: InputReport, world: World | None) -> _Input:
    """Validate the whole FASTA into ``report``; the extra features; under torchrun, this rank's shard."""
    lengths = {
        s.index: len(s.sequence) + 2 for s in iter_sequences(iter_fasta(config.fasta), report, config.long_policy)
    }
    if report.records == len(report.skipped):
        raise InputError(f"{config.fasta}: no sequence left to audit ({len(report.skipped)} skipped as too long)")
    extra = load_extra_features(config.extra_features, report.records) if config.extra_features else None
    mine = None if world is None else shard_by_tokens(lengths, world.size)[world.rank]
    return _Input(report, lengths, extra, mine)


def _sequences(config: AuditConfig, keep: AbstractSet[int] | None) -> Iterator[AuditSequence]:
    """The audited sequences again, streamed from the file (only ``keep``'s record indices if given)."""
    sequences = iter_sequences(iter_fasta(config.fasta), InputReport(str(config.fasta)), config.long_policy)
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
    extra: np.ndarray | None,
    progress: Progress | None,
) -> AuditRun:
    """The heads and everything the batches need, from the options and the loaded model."""
    device = placement.device
    heads = [h.to(device) for h in build_heads(config.head, loaded, config.proxy_seeds, config.head_activation, extra)]
    mlm = loaded.info.has_lm_head if config.mlm is None else config.mlm
    if mlm and not loaded.info.has_lm_head:
        raise UsageError(f"--mlm: {loaded.info.spec} has no language-model head")
    return AuditRun(
        loaded,
        device,
        placement.backend,
        heads,
        config.faults,
        progress,
        high_precision=_cached_high_precision(loaded, device) if config.high_precision == "fp32" else None,
        trace=TraceAccumulator(loaded.info.num_layers) if config.trace else None,
        mlm=mlm,
        mlm_sample=config.mlm_sample if mlm else 0,
        keep_pooled=config.invariance,
        compile=default_compile(device) if config.compile is None else config.compile,
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
    config: AuditConfig, run: AuditRun, mine: tuple[list[SequenceResult], list[str], int], world: World | None
) -> _Compared | None:
    """This process's results; under torchrun, every rank's results gathered on rank 0 (``None`` on
    the other ranks), where a failed rank fails the run."""
    results, notices, budget = mine
    if world is not None:
        payload = {
            "results": results,
            "notices": notices,
            "budget": budget,
            "seconds": run.seconds,
            "trace": run.trace,
            "perplexity": run.perplexity,
        }
        gathered = gather_to_root(payload, world)
        if not world.is_root:
            return None
        results, notices, budget = _merge_ranks(run, gathered)
    results.sort(key=lambda r: r.index)
    invariance = invariance_summary(results) if config.invariance else None
    return _Compared(results, notices, budget, invariance)


def _compare_here(
    config: AuditConfig, run: AuditRun, inputs: _Input, max_tokens: int
) -> tuple[list[SequenceResult], list[str], int]:
    """Warm up, then every (of this rank's) sequences through both paths, then the invariance pass.

    Returns the results, the notices (OOM retries) and the token budget the pass ended with.
    """
    warm_up(run)
    if run.progress:
        run.progress.start(inputs.my_tokens)
    results, notices, budget = _audit_stream(run, _sequences(config, inputs.mine), max_tokens)
    run.max_tokens = budget
    if config.invariance:
        mine = {r.index for r in results}
        invariance_pass(run, list(_sequences(config, mine)), results)
    return results, notices, budget


def _audit_stream(
    run: AuditRun, sequences: Iterable[AuditSequence], max_tokens: int
) -> tuple[list[SequenceResult], list[str], int]:
    """Sort and batch window by window (memory: one window of sequences plus the results).

    CUDA out of memory halves the token budget and retries the batch, saying so; a single
    sequence that cannot fit is an environment error naming it.
    """
    table = encoder_table(run.loaded.alphabet)
    results: list[SequenceResult] = run.finished  # shared: a run that fails still reports what finished
    notices: list[str] = []
    budget = max_tokens
    for window in _windows(sequences, WINDOW_BATCHES * max_tokens):
        tokens = [encode(s.sequence, run.loaded.alphabet, table) for s in window]
        lengths = [len(t) for t in tokens]
        pending = batches_by_tokens(lengths, budget)
        while pending:
            batch = pending.pop(0)
            try:
                results.extend(compare_batch(run, [window[i] for i in batch], [tokens[i] for i in batch]))
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


def _merge_ranks(run: AuditRun, gathered: list[dict]) -> tuple[list[SequenceResult], list[str], int]:
    """Rank 0: every rank's results and accumulators into one run; a failed rank fails it all."""
    raise_for_failed_ranks(gathered)
    results = [r for payload in gathered for r in payload["results"]]
    notices = [f"rank {rank}: {n}" for rank, payload in enumerate(gathered) for n in payload["notices"]]
    for path in run.seconds:  # the job takes as long as its slowest rank
        run.seconds[path] = max(payload["seconds"][path] for payload in gathered)
    for payload in gathered[1:]:
        if run.trace is not None:
            run.trace.merge(payload["trace"])
        run.perplexity.merge(payload["perplexity"])
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
) -> AuditResult:
    """Decide, time, fingerprint, and assemble the result."""
    summary, decision, trace = _decide(config, run, compared.results, compared.invariance, placement)
    run_timings = timings(run.seconds, inputs.total_tokens, load_seconds)
    t1 = time.perf_counter()
    loaded = run.loaded
    fingerprint = environment(
        placement.device, placement.dtype, placement.backend, loaded, config.fasta, inputs.report.records
    )
    run_timings["fingerprint_s"] = time.perf_counter() - t1
    if world is not None:
        run_timings["ranks"] = world.size
    return AuditResult(
        model=loaded.info.to_dict(),
        device=str(placement.device),
        dtype=placement.dtype_name,
        backend=placement.backend,
        compiled=run.compile,
        heads=[h.name for h in run.heads],
        max_tokens=compared.budget,
        inputs=inputs.report,
        sequences=compared.results,
        summary=summary,
        thresholds=config.thresholds,
        decision=decision,
        timings=run_timings,
        faults=sorted(f.value for f in config.faults),
        notices=compared.notices,
        trace=trace,
        invariance=compared.invariance,
        environment=fingerprint,
    )


def _decide(
    config: AuditConfig,
    run: AuditRun,
    results: list[SequenceResult],
    invariance: dict | None,
    placement: RunPlacement,
) -> tuple[dict, Decision, dict | None]:
    """The summary, the decision and the trace block, from every sequence's result."""
    high_dtype = high_precision_dtype(placement.device)
    summary, evidence = summarise(results, [h.name for h in run.heads], placement.dtype, high_dtype)
    if run.high_precision is not None:
        summary["reference"]["dtype"] = str(high_dtype).replace("torch.", "")
    summary["mlm"] = mlm_summary(run, results)
    trace = run.trace.result(config.trace_threshold) if run.trace else None
    if invariance is not None:
        evidence.invariance = (invariance["padded"]["max_moved"], invariance["packed"]["max_moved"])
    decision = decide(evidence, config.thresholds)
    summary["bound"] = bound_summary(evidence, config.thresholds)
    return summary, decision, trace
