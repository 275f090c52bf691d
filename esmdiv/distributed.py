"""Audits spread over processes with torch.distributed (``torchrun ... -m esmdiv check``).

Every rank reads and validates the whole FASTA (cheap, and every rank then agrees on the
input), takes its shard of the sequences (balanced by token count), runs both paths on it, and
sends its per-sequence results to rank 0, which decides and writes the one report. A rank that
fails sends its error instead: rank 0 then fails the whole run (never a verdict), with that
rank's exit code. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import heapq
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from esmdiv.errors import EXIT_INTERNAL, EsmdivError


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


def init(world: World, device: torch.device) -> None:
    """Join the process group (once): NCCL for CUDA devices, gloo for CPU."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))


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
    dist.gather_object(payload, out, dst=0)
    return out


def broadcast_code(code: int, world: World) -> int:
    """Rank 0's exit code on every rank, so the whole job ends the same way."""
    box = [code]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


class RankFailed(EsmdivError):
    """Another rank of a distributed audit failed: the run has no verdict."""

    def __init__(self, rank: int, message: str, exit_code: int):
        self.exit_code = exit_code or EXIT_INTERNAL
        super().__init__(f"rank {rank} failed: {message}")


def error_payload(err: BaseException) -> dict:
    code = err.exit_code if isinstance(err, EsmdivError) else EXIT_INTERNAL
    return {
        "error": f"{type(err).__name__}: {err}" if not isinstance(err, EsmdivError) else str(err),
        "exit_code": code,
    }


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
