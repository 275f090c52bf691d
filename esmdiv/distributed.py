"""Audits spread over processes with torch.distributed (``torchrun ... -m esmdiv check``).

Every rank joins the process group first, then reads and validates the whole FASTA (cheap, and
every rank then agrees on the input), takes its shard of the sequences (balanced by token count),
runs both paths on it, and sends its per-sequence results to rank 0, which decides and writes the
one report. A rank that fails at any point before that (reading the input, loading the model,
warming up, auditing) sends its error instead, in the same gather rank 0 waits on: rank 0 then
fails the whole run (never a verdict) with that rank's exit code, and nobody waits for a dead rank
until the collective timeout. When the command ends, rank 0 (its reports written) tells every rank
the code it ends with (:func:`finish`), so the whole job ends the same way and no rank exits
early enough for torchrun to stop rank 0 before its report is on disk. NCCL on CUDA, gloo on CPU.

torch is imported on first use: the command line imports this module before torch loads.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from esmdiv.errors import EXIT_INTERNAL, EsmdivError
from esmdiv.report.partial import PartialRun, exit_code_for

if TYPE_CHECKING:
    import torch

#: How long a collective waits for a rank before failing (a rank that died without a word).
TIMEOUT = datetime.timedelta(minutes=30)


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


def init(device: torch.device) -> None:
    """Join the process group (once): NCCL for CUDA devices, gloo for CPU."""
    dist = _dist()
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        importlib.import_module("torch").cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)


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
    """Every rank's ``payload`` on rank 0 (in rank order); None on the other ranks."""
    out = [None] * world.size if world.is_root else None
    _dist().gather_object(payload, out, dst=0)
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
        dist.broadcast_object_list(box, src=0)
        code = int(box[0])
    except Exception:  # noqa: BLE001 - rank 0 is gone: this rank's own code is all there is
        pass
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return code
