"""Synthetic sequence workloads for benchmarks and scale tests.

``lognormal``: token lengths (BOS and EOS included) drawn from a log-normal with
mu = 5.4 and sigma = 0.75 (median about 220 tokens), rounded and clipped to ESM-2's 1024-token
context, residues drawn uniformly from the 20 standard amino acids. With ``n=256, seed=0`` it is
the workload of the figures quoted in the project's issues: 256 sequences, 75,807 tokens.
"""

from __future__ import annotations

import numpy as np

from esmdiv.inputs import AuditSequence

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
