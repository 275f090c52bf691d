"""Tokens in, batches out: fair-esm encoding, padded batches, packed batches and the way back.

A *packed* batch lays B sequences end to end with no padding::

    input_ids    (T,)    int64   T = sum of the B token lengths (BOS + residues + EOS each)
    cu_seqlens   (B+1,)  int32   cu_seqlens[i]:cu_seqlens[i+1] are sequence i's tokens
    max_seqlen   int             the longest of the B lengths
    position_ids (T,)    int64   0 .. len-1 within each sequence (rotary restarts per sequence)
    seq_index    (T,)    int64   which of the B sequences each token belongs to
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def encoder_table(alphabet) -> np.ndarray:
    """A 256-entry lookup from ASCII code to token id (``unk`` where not a token)."""
    table = np.full(256, alphabet.unk_idx, dtype=np.int64)
    for token, index in alphabet.tok_to_idx.items():
        if len(token) == 1:
            table[ord(token)] = index
    return table


def encode(sequence: str, alphabet, table: np.ndarray | None = None) -> torch.Tensor:
    """fair-esm's encoding of one sequence: ``<cls>`` residues ``<eos>`` as a (L+2,) int64 tensor."""
    table = encoder_table(alphabet) if table is None else table
    ids = table[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]
    out = np.empty(len(ids) + 2, dtype=np.int64)
    out[0], out[1:-1], out[-1] = alphabet.cls_idx, ids, alphabet.eos_idx
    return torch.from_numpy(out)


def pad(token_lists: Sequence[torch.Tensor], padding_idx: int) -> torch.Tensor:
    """Right-pad token tensors into one (B, max_len) batch, as fair-esm's BatchConverter does."""
    return torch.nn.utils.rnn.pad_sequence(list(token_lists), batch_first=True, padding_value=padding_idx)


@dataclass
class Packed:
    input_ids: torch.Tensor  # (T,)
    cu_seqlens: torch.Tensor  # (B+1,) int32
    max_seqlen: int
    position_ids: torch.Tensor  # (T,)
    seq_index: torch.Tensor  # (T,)

    @property
    def lengths(self) -> list[int]:
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()

    def to(self, device: torch.device | str) -> Packed:
        return Packed(
            self.input_ids.to(device, non_blocking=True),
            self.cu_seqlens.to(device, non_blocking=True),
            self.max_seqlen,
            self.position_ids.to(device, non_blocking=True),
            self.seq_index.to(device, non_blocking=True),
        )


def pack(token_lists: Sequence[torch.Tensor]) -> Packed:
    """Lay token tensors end to end; see the module docstring for the shapes."""
    lengths = torch.tensor([len(t) for t in token_lists], dtype=torch.int64)
    cu_seqlens = torch.zeros(len(token_lists) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(lengths, 0)
    seq_index = torch.repeat_interleave(torch.arange(len(token_lists)), lengths)
    starts = cu_seqlens[:-1].to(torch.int64)
    position_ids = torch.arange(int(lengths.sum())) - starts[seq_index]
    return Packed(torch.cat(list(token_lists)), cu_seqlens, int(lengths.max()), position_ids, seq_index)


def to_padded(flat: torch.Tensor, packed: Packed) -> torch.Tensor:
    """Scatter a packed ``(T, D)`` tensor into a zero-padded ``(B, max_seqlen, D)`` one."""
    out = flat.new_zeros(len(packed.cu_seqlens) - 1, packed.max_seqlen, *flat.shape[1:])
    out[packed.seq_index, packed.position_ids] = flat
    return out


def unpack(flat: torch.Tensor, cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Split a packed (T, ...) tensor back into B per-sequence views."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    return list(torch.split(flat, lengths))


def batches_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group sequence indices into batches of at most ``max_tokens`` padded tokens.

    Sequences are sorted longest first (the largest batch comes first, so memory trouble shows
    at once) and each batch's cost is ``len(batch) * its longest length``, the padded path's
    footprint: both paths run the same batches, so the comparison stays fair. A sequence longer
    than the budget gets a batch of its own.
    """
    return cut_batches(sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)), lengths, max_tokens)


def cut_batches(order: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` greedily into consecutive batches of at most ``max_tokens`` padded tokens
    (``len(batch) * its longest length``); a sequence over the budget gets a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        if current and (len(current) + 1) * max(longest, lengths[index]) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, lengths[index])
    if current:
        batches.append(current)
    return batches
