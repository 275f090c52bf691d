"""Synthetic sequence workloads for benchmarks and scale tests.

``lognormal``: token lengths (BOS and EOS included) drawn from a log-normal with
mu = 5.4 and sigma = 0.75 (median about 220 tokens), rounded and clipped to ESM-2's 1024-token
context, residues drawn uniformly from the 20 standard amino acids. With ``n=256, seed=0`` it is
the workload of the figures quoted in the project's issues: 256 sequences, 75,807 tokens.

:func:`write_fasta` writes a workload (or any sequences) as a FASTA file, e.g. the 10,000-sequence
file of the scale target: ``esmdiv bench --workload lognormal --n 10000 --write-fasta big.fasta``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from esmdiv.errors import OutputError
from esmdiv.input.sequences import AuditSequence

AMINO_ACIDS = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)


def lognormal_lengths(n: int, seed: int = 0, mu: float = 5.4, sigma: float = 0.75) -> np.ndarray:
    """Residue counts (tokens minus BOS and EOS) for ``n`` sequences."""
    tokens = np.clip(np.round(np.random.RandomState(seed).lognormal(mu, sigma, n)).astype(np.int64), 3, 1024)
    return tokens - 2


def lognormal_workload(n: int = 256, seed: int = 0) -> list[AuditSequence]:
    """``n`` random protein sequences with :func:`lognormal_lengths`."""
    rng = np.random.RandomState(seed + 1)
    out = []
    for i, length in enumerate(lognormal_lengths(n, seed)):
        residues = AMINO_ACIDS[rng.randint(0, len(AMINO_ACIDS), int(length))].tobytes().decode()
        out.append(AuditSequence(f"lognormal_{i:05d}", residues, int(length), 0, i))
    return out


def write_fasta(sequences: Iterable[AuditSequence | tuple[str, str]], path: str | Path, width: int = 60) -> int:
    """Write ``sequences`` (``AuditSequence`` or ``(id, residues)`` pairs) as FASTA; return how many.

    Residues wrap at ``width`` columns (0: one line per record); a path ending in ``.gz`` is gzipped.
    The file is written to a temporary name and moved into place, so a reader never sees half of it.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; a FASTA file path is needed")
    count, tmp = 0, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw as out:
            for item in sequences:
                rid, residues = (item.id, item.sequence) if isinstance(item, AuditSequence) else item
                step = width if width > 0 else max(len(residues), 1)
                lines = [residues[i : i + step] for i in range(0, len(residues), step)]
                out.write(f">{rid}\n".encode() + "".join(line + "\n" for line in lines).encode("ascii"))
                count += 1
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise OutputError(f"{path}: cannot write the FASTA ({err.strerror or err})") from None
    return count
