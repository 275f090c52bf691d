"""From FASTA records to the sequences an audit runs, under the long-sequence policy.

ESM-2 was trained on crops of at most 1022 residues (1024 tokens with BOS and EOS). Policies for
longer records (``--long``):

- ``truncate`` (default, as fair-esm's ``extract.py``): keep the first 1022 residues.
- ``skip``: leave the record out of the audit.
- ``error``: stop with an input error naming the record.
- ``full``: run the whole sequence, beyond the trained context (rotary positions extrapolate).

Whatever the policy, the run's output counts and names what was truncated or skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from esmdiv.errors import FastaError, UsageError
from esmdiv.input.fasta import ProteinRecord, iter_fasta

MAX_RESIDUES = 1022
LONG_POLICIES = ("truncate", "skip", "error", "full")


@dataclass
class AuditSequence:
    id: str
    sequence: str  # the residues that run (after any truncation)
    original_length: int
    line: int
    index: int = 0  # the record's position in the file (0-based), skipped records counted

    @property
    def truncated(self) -> bool:
        return len(self.sequence) < self.original_length


@dataclass
class InputReport:
    """What happened to the input, for the summary and the JSON."""

    path: str
    records: int = 0
    truncated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    beyond_context: list[str] = field(default_factory=list)  # kept whole under --long full
    lowercase: list[str] = field(default_factory=list)
    stop_stripped: list[str] = field(default_factory=list)
    nucleotide_like: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per kind of record the summary must mention, naming the first few."""
        kinds = (
            (self.nucleotide_like, "contain only A C G T U N and look like DNA/RNA, not protein"),
            (self.truncated, f"truncated to {MAX_RESIDUES} residues"),
            (self.skipped, f"over {MAX_RESIDUES} residues skipped"),
            (self.beyond_context, f"run whole beyond ESM-2's trained context of {MAX_RESIDUES} residues"),
            (self.lowercase, "had lower-case residues, read as upper case"),
            (self.stop_stripped, "ended in '*', stripped"),
        )
        return [f"{len(ids)} record(s) {what}: {_names(ids)}" for ids, what in kinds if ids]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "records": self.records,
            "audited": self.records - len(self.skipped),
            "truncated": self.truncated,
            "skipped": self.skipped,
            "beyond_context": self.beyond_context,
            "lowercase": self.lowercase,
            "stop_stripped": self.stop_stripped,
            "nucleotide_like": self.nucleotide_like,
        }


def _names(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def load_sequences(path: str | Path, long_policy: str = "truncate") -> tuple[list[AuditSequence], InputReport]:
    """Read all of ``path`` under the long-sequence policy (see :func:`iter_sequences`)."""
    report = InputReport(str(path))
    return list(iter_sequences(iter_fasta(path), report, long_policy)), report


def iter_sequences(
    records: Iterable[ProteinRecord], report: InputReport, long_policy: str = "truncate"
) -> Iterator[AuditSequence]:
    """Apply the long-sequence policy record by record, counting what it did in ``report``."""
    if long_policy not in LONG_POLICIES:
        raise UsageError(f"--long '{long_policy}' (choose {', '.join(LONG_POLICIES)})")
    for record in records:
        report.records += 1
        for flag, bucket in (
            (record.lowercase, report.lowercase),
            (record.stop_stripped, report.stop_stripped),
            (record.looks_nucleotide, report.nucleotide_like),
        ):
            if flag:
                bucket.append(record.id)
        sequence = record.sequence
        if len(sequence) > MAX_RESIDUES:
            if long_policy == "error":
                raise FastaError(
                    report.path,
                    f"{len(sequence)} residues, over ESM-2's trained context of {MAX_RESIDUES} "
                    "(choose --long truncate, skip or full)",
                    line=record.line,
                    record=record.id,
                )
            if long_policy == "skip":
                report.skipped.append(record.id)
                continue
            if long_policy == "truncate":
                sequence = sequence[:MAX_RESIDUES]
                report.truncated.append(record.id)
            else:
                report.beyond_context.append(record.id)
        yield AuditSequence(record.id, sequence, len(record.sequence), record.line, report.records - 1)
