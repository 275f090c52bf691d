"""Audits spread over processes with torch.distributed (``torchrun ... -m esmdiv check``).

Every rank joins the process group first, then reads and validates the whole FASTA (cheap, and
every rank then agrees on the input), takes its shard of the sequences (balanced by token count),
runs both paths on it, and sends its per-sequence results to rank 0, which decides and writes the
one report. A rank that fails at any point before that (reading the input, loading the model,
warming up, auditing) sends its error instead, in the same gather rank 0 waits on: rank 0 then
fails the whole run (never a verdict) with that rank's exit code. A rank that sends nothing (killed,
hung) is named by a monitored barrier before the gather once ``--collective-timeout`` has passed
(:class:`RanksUnreachable`, exit 3); every exchange of objects runs on gloo, so the timeout raises an
error rank 0 can report instead of aborting the process as NCCL's watchdog would. When the command
ends, rank 0 (its reports written) tells every rank the code it ends with (:func:`finish`), so the
whole job ends the same way and no rank exits early enough for torchrun to stop rank 0 before its
report is on disk. NCCL for the forwards on CUDA, gloo on CPU.

torch is imported on first use: the command line imports this module before torch loads.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from esmdiv.errors import EXIT_ENVIRONMENT, EXIT_INTERNAL, EnvironmentUnavailable, EsmdivError
from esmdiv.report.partial import PartialRun, exit_code_for

if TYPE_CHECKING:
    import torch

#: How long rank 0 waits at the gather for a rank that sends nothing (dead or hung) before failing
#: the run; ``--collective-timeout`` sets it. It must cover the time between the fastest and the
#: slowest rank finishing their shards.
DEFAULT_TIMEOUT_S = 1800.0

# Set by init(): the gloo group every object exchange runs on (the default group under gloo; a gloo
# group beside NCCL on CUDA, where a timeout would abort the process instead of raising), and its
# timeout.
_objects: Any = None
_timeout = datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def current_world() -> World | None:
    """The torchrun world from its environment variables; None for a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def _dist():
    """``torch.distributed``, imported when first needed."""
    return importlib.import_module("torch.distributed")


def init(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (once): NCCL for CUDA devices, gloo for CPU; the objects ranks
    exchange (results, errors, the exit code) always go through gloo, with ``timeout_s``."""
    global _objects, _timeout
    dist = _dist()
    if dist.is_initialized():
        return
    _timeout = datetime.timedelta(seconds=timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        importlib.import_module("torch").cuda.set_device(device)
    dist.init_process_group(backend, timeout=_timeout)
    _objects = dist.new_group(backend="gloo", timeout=_timeout) if backend != "gloo" else None


def shard_by_tokens(lengths: dict[int, int], size: int) -> list[set[int]]:
    """Split sequence indices into ``size`` shards of nearly equal token count.

    Longest first, each to the lightest shard so far (LPT): deterministic, so every rank
    computes the same shards without talking.
    """
    heap = [(0, rank) for rank in range(size)]
    shards: list[set[int]] = [set() for _ in range(size)]
    for index in sorted(lengths, key=lambda i: (-lengths[i], i)):
        tokens, rank = heapq.heappop(heap)
        shards[rank].add(index)
        heapq.heappush(heap, (tokens + lengths[index], rank))
    return shards


def gather_to_root(payload: object, world: World) -> list | None:
    """Every rank's ``payload`` on rank 0 (in rank order); None on the other ranks.

    First a monitored barrier: rank 0 waits up to the collective timeout for every rank and, if
    one never comes (killed, hung, its host gone), fails with :class:`RanksUnreachable` naming it,
    rather than hanging in the gather or failing without saying who was missing.
    """
    dist = _dist()
    try:
        dist.monitored_barrier(group=_objects, timeout=_timeout, wait_all_ranks=True)
        out = [None] * world.size if world.is_root else None
        dist.gather_object(payload, out, dst=0, group=_objects)
    except RuntimeError as err:
        raise RanksUnreachable.from_error(err, world, _timeout.total_seconds()) from None
    return out


@contextlib.contextmanager
def failures_reach_root(world: World | None, partial: PartialRun) -> Iterator[None]:
    """Around what a rank does between joining the group and sending its results: a rank that
    fails sends :func:`error_payload` (with the stage ``partial`` had reached) into the gather
    rank 0 waits on, then raises its error. Rank 0 does the same, so the other ranks are not left
    waiting in that gather."""
    try:
        yield
    except BaseException as err:
        if world is not None:
            # The peers may be gone (that may be the failure): the error still stands as raised.
            with contextlib.suppress(Exception):
                gather_to_root(error_payload(err, partial.stage), world)
        raise


class RankFailed(EsmdivError):
    """Another rank of a distributed audit failed: the run has no verdict. ``stage`` is the stage
    that rank failed at (a partial report names it rather than the one rank 0 had reached)."""

    def __init__(self, rank: int, message: str, exit_code: int, stage: str | None = None):
        self.exit_code = exit_code or EXIT_INTERNAL
        self.stage = stage
        super().__init__(f"rank {rank} failed: {message}")


class RanksUnreachable(EnvironmentUnavailable):
    """A rank never reached the gather (dead, hung, or its connection gone): the run has no
    verdict. ``ranks``: the ones missing, where torch named them."""

    def __init__(self, message: str, ranks: tuple[int, ...] = ()):
        self.ranks = ranks
        super().__init__(message)

    @classmethod
    def from_error(cls, err: BaseException, world: World, timeout_s: float) -> RanksUnreachable:
        text = " ".join(str(err).split())
        found = re.search(r"Ranks? ([\d, ]+?) failed to pass monitoredBarrier", text)
        if found:
            ranks = tuple(int(r) for r in re.findall(r"\d+", found.group(1)))
            names = ", ".join(map(str, ranks))
            return cls(
                f"rank{'s' if len(ranks) > 1 else ''} {names} did not reach the gather within the collective "
                f"timeout of {timeout_s:g} s (--collective-timeout): dead or hung",
                ranks,
            )
        who = "rank 0" if not world.is_root else "another rank"
        return cls(f"rank {world.rank} lost {who} at the gather (dead or unreachable): {text[:300]}")


def error_payload(err: BaseException, stage: str) -> dict:
    """What a failed rank sends rank 0: its error as the CLI would print it, its exit code and the
    stage it failed at."""
    return {
        "error": str(err) if isinstance(err, EsmdivError) else f"{type(err).__name__}: {err}",
        "exit_code": exit_code_for(err),
        "stage": stage,
    }


def raise_for_failed_ranks(gathered: list[dict]) -> None:
    """Rank 0, with every rank's payload: the first failed rank fails the run."""
    for rank, payload in enumerate(gathered):
        if "error" in payload:
            raise RankFailed(rank, payload["error"], payload["exit_code"], payload["stage"])


def finish(code: int) -> int:
    """The code a process of the job ends with, called as the command ends (its reports written).

    Under torchrun, once the process group is joined: rank 0 sends its ``code`` to every rank, every
    rank returns it, and the process leaves the group. Ranks other than 0 wait here for rank 0, so
    none exits (and makes torchrun stop the others) before rank 0's report is on disk. A rank whose
    peers are gone keeps its own code. Otherwise ``code`` unchanged (torch is not even imported).
    """
    if "torch.distributed" not in sys.modules:
        return code
    dist = _dist()
    if not dist.is_available() or not dist.is_initialized():
        return code
    try:
        box = [code]
        dist.broadcast_object_list(box, src=0, group=_objects)
        code = int(box[0])
    except Exception:  # noqa: BLE001 - rank 0 is gone: this rank's own code is all there is
        world = current_world()
        if code == 0 and world is not None and not world.is_root:  # a follower's 0 is no verdict
            code = EXIT_ENVIRONMENT
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return code
