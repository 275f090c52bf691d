"""The same command twice gives the same verdict and the same metrics (timings aside)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from determinism import comparable, differences  # noqa: E402

FASTA = "".join(f">s{n}\n{'MKTAYIAKVLGLFDIVKKVVGALGSLWWPRQE'[:n]}\n" for n in (3, 9, 16, 23, 30))


@pytest.mark.subprocess
def test_two_runs_in_fresh_processes_give_identical_reports(tmp_path):
    """Bit for bit, on purpose: both runs pin what makes floats exact (this machine, one thread
    each, the same batches from the same --max-tokens), so any difference is esmdiv's own (an
    unseeded draw, an order taken from a set or a hash), never rounding."""
    fasta = tmp_path / "five.fasta"
    fasta.write_text(FASTA)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    reports, codes = [], []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "esmdiv",
                "check",
                str(fasta),
                "--device",
                "cpu",
                "--max-tokens",
                "64",
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        codes.append(done.returncode)
        reports.append(json.loads(out.read_text()))
    assert codes[0] == codes[1] == 0 and reports[0]["verdict"] == reports[1]["verdict"] == "ACCEPT"
    numbers, largest, mismatched = differences(comparable(reports[0]), comparable(reports[1]))
    assert numbers > 5 * 8 and largest == 0.0 and mismatched == []
    assert reports[0]["timings"] != reports[1]["timings"]  # the one block left out does vary


def test_the_comparison_sees_a_difference():
    """Control: the comparison is not blind."""
    a = {"verdict": "ACCEPT", "sequences": [{"id": "x", "cosine": 0.99999}], "timings": {"s": 1.0}}
    b = {"verdict": "ACCEPT", "sequences": [{"id": "x", "cosine": 0.99998}], "timings": {"s": 2.0}}
    numbers, largest, mismatched = differences(comparable(a), comparable(b))
    assert numbers == 1 and abs(largest - 1e-5) < 1e-12 and mismatched == []
    assert differences({"verdict": "ACCEPT"}, {"verdict": "VALIDATE"})[2] == [".verdict: 'ACCEPT' vs 'VALIDATE'"]
