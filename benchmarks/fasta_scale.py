"""Does reading a proteome-sized FASTA stream in bounded memory? Time and peak RSS of the reader.

Generates a FASTA of N short records (default one million, 20-80 residues, 60 per line), then
reads it in a fresh process exactly as ``esmdiv check``'s first pass does
(``iter_sequences(iter_fasta(path))``, every record validated, the long-sequence policy applied)
and reports wall time and peak resident memory (``resource.getrusage``), against the same
process's RSS just before reading.

    python benchmarks/fasta_scale.py                    # 1,000,000 records, plain text
    python benchmarks/fasta_scale.py --records 100000 --gzip
    python benchmarks/fasta_scale.py --records 10000 --lengths 10000 10000   # fewer, longer records
    python benchmarks/fasta_scale.py --json out.json    # also write the figures as JSON

The one thing that grows with the record count is the set of ids already seen (duplicates are
refused); the records themselves are not kept.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def generate(
    path: Path, records: int, lengths: tuple[int, int] = (20, 80), seed: int = 0, compress: bool = False
) -> int:
    """Write ``records`` random records of ``lengths`` residues (inclusive); returns the residue count."""
    rng = random.Random(seed)
    residues = 0
    opener = gzip.open if compress else open
    with opener(path, "wt") as handle:  # type: ignore[operator]
        for i in range(records):
            n = rng.randint(*lengths)
            residues += n
            seq = "".join(rng.choices(AMINO, k=n))
            body = "\n".join(seq[j : j + 60] for j in range(0, n, 60))
            handle.write(f">seq{i:07d} synthetic record {i}\n{body}\n")
    return residues


def read(path: Path) -> dict:
    """Stream ``path`` through the reader in this process; the figures of that pass."""
    from esmdiv.input.fasta import iter_fasta
    from esmdiv.input.sequences import InputReport, iter_sequences

    rss_before = _peak_rss_mb()
    report = InputReport(str(path))
    start, cpu_start = time.perf_counter(), time.process_time()
    tokens = sum(len(s.sequence) + 2 for s in iter_sequences(iter_fasta(path), report, "truncate"))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "records": report.records,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # this process alone: robust to a busy machine
        "records_per_s": round(report.records / seconds),
        "rss_before_read_mb": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--lengths",
        type=int,
        nargs=2,
        default=(20, 80),
        metavar=("MIN", "MAX"),
        help="residues per record, drawn uniformly (default 20 80)",
    )
    parser.add_argument("--gzip", action="store_true", help="write and read the file gzip-compressed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--read", type=Path, help=argparse.SUPPRESS)  # internal: the measuring child
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(args.read)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("scale.fasta.gz" if args.gzip else "scale.fasta")
        t0 = time.perf_counter()
        residues = generate(path, args.records, tuple(args.lengths), compress=args.gzip)
        generate_s = time.perf_counter() - t0
        # A fresh process, so the peak RSS is the reader's and not the generator's.
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        child = subprocess.run(
            [sys.executable, __file__, "--read", str(path)], capture_output=True, text=True, env=env, check=True
        )
        figures = json.loads(child.stdout)
        figures.update(
            file=path.name,
            file_mb=round(path.stat().st_size / 1e6, 1),
            residues=residues,
            lengths=list(args.lengths),
            peak_rss_growth_mb=round(figures["peak_rss_mb"] - figures["rss_before_read_mb"], 1),
            generate_s=round(generate_s, 1),
            python=platform.python_version(),
            machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
            date=time.strftime("%Y-%m-%d"),
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
