"""The reader streams: memory holds one record plus the ids seen, never the file.

A small version of ``benchmarks/fasta_scale.py`` (whose figures for one million records are in
docs/reliability.md). Memory is measured with tracemalloc, not time: timings belong to benchmarks.
"""

import random
import tracemalloc

from esmdiv.input.fasta import iter_fasta
from esmdiv.input.sequences import InputReport, iter_sequences

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _write(path, records, length, seed=0):
    pool = "".join(random.Random(seed).choices(AMINO, k=length + 997))
    with open(path, "w") as handle:
        for i in range(records):
            seq = pool[i % 997 : i % 997 + length]
            handle.write(f">r{i}\n" + "\n".join(seq[j : j + 60] for j in range(0, length, 60)) + "\n")


def _peak_while_streaming(path):
    tracemalloc.start()
    try:
        report = InputReport(str(path))
        tokens = sum(len(s.sequence) + 2 for s in iter_sequences(iter_fasta(path), report, "truncate"))
        return tracemalloc.get_traced_memory()[1], report.records, tokens
    finally:
        tracemalloc.stop()


def test_sequence_data_is_not_kept(tmp_path):
    """5 MB of residues stream through in far less: were the records kept, the peak would pass 5 MB."""
    path = tmp_path / "long.fasta"
    _write(path, records=1000, length=5000)
    peak, records, tokens = _peak_while_streaming(path)
    assert records == 1000 and tokens == 1000 * (1022 + 2)
    assert peak < 1_000_000, peak


def test_memory_per_short_record_is_only_its_id(tmp_path):
    """What grows with the record count is the set of ids (duplicates are refused): ~100 bytes each."""
    path = tmp_path / "short.fasta"
    _write(path, records=20_000, length=30)
    peak, records, _ = _peak_while_streaming(path)
    assert records == 20_000
    assert peak / records < 300, peak / records  # measured: 185 (CPython 3.11)
