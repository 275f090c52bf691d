import gzip
import re

import pytest

from esmdiv.errors import FastaError
from esmdiv.input.fasta import read_fasta
from esmdiv.input.sequences import MAX_RESIDUES, load_sequences

from conftest import FIXTURES

BAD = FIXTURES / "bad"


def test_seed18_is_18_records_of_3_to_400_residues():
    records = read_fasta(FIXTURES / "seed18.fasta")
    assert len(records) == 18
    assert min(len(r.sequence) for r in records) == 3
    assert max(len(r.sequence) for r in records) == 400
    assert records[0].id == "repeat_1x" and records[0].description == "10 residues"
    assert "MKTAYIAKVL" * 40 in {r.sequence for r in records}


def test_crlf_multiline_blank_lines_lowercase_and_trailing_stop():
    first, second = read_fasta(FIXTURES / "variants_crlf.fasta")
    assert (first.id, first.description, first.sequence) == ("crlf_1", "with a description", "MKTAYIAKVLMKTAY")
    assert (second.sequence, second.lowercase, second.stop_stripped) == ("MKTAYIAKVL", True, True)
    assert not first.lowercase and not first.stop_stripped


def test_gzip_is_read(tmp_path):
    path = tmp_path / "x.fasta.gz"
    path.write_bytes(gzip.compress(b">a\nMKT\n>b\nWWW\n"))
    assert [r.sequence for r in read_fasta(path)] == ["MKT", "WWW"]


@pytest.mark.parametrize(
    "name, line, record, fragment",
    [
        ("digit.fasta", 5, "bad1", "illegal character '3' at column 4 (a digit)"),
        ("gap.fasta", 2, "gapped", "'-' at column 5 (a gap)"),
        ("punctuation.fasta", 2, "punct", "'!'"),
        ("empty_record.fasta", 1, "empty_one", "record has no residues"),
        ("duplicate_ids.fasta", 5, "dup", "duplicate id"),
        ("no_header.fasta", 1, None, "sequence before the first '>' header"),
        ("only_star.fasta", 1, "stars", "only '*'"),
        ("inner_stop.fasta", 2, "mid_stop", "'*' (stop) inside the sequence"),
        ("no_id.fasta", 1, None, "header has no id"),
        ("empty.fasta", None, None, "no records"),
    ],
)
def test_errors_name_file_record_and_line(name, line, record, fragment):
    with pytest.raises(FastaError, match=re.escape(fragment)) as caught:
        read_fasta(BAD / name)
    err = caught.value
    assert (err.line, err.record) == (line, record)
    assert fragment in str(err)
    assert str(err).startswith(str(BAD / name))
    if line is not None:
        assert f"line {line}" in str(err)


def test_binary_and_missing_and_directory(tmp_path):
    binary = tmp_path / "blob.fasta"
    binary.write_bytes(b">a\nMK\x00\xff\n")
    with pytest.raises(FastaError, match="binary data"):
        read_fasta(binary)
    with pytest.raises(FastaError, match="no such file"):
        read_fasta(tmp_path / "absent.fasta")
    with pytest.raises(FastaError, match="is a directory"):
        read_fasta(tmp_path)


def test_nucleotide_like_records_are_flagged_not_rejected():
    sequences, report = load_sequences(FIXTURES / "nucleotide_like.fasta")
    assert [s.id for s in sequences] == ["dna_like", "protein"]
    assert report.nucleotide_like == ["dna_like"]
    assert any("look like DNA/RNA" in w for w in report.warnings())


@pytest.mark.parametrize(
    "policy, kept, truncated, skipped, beyond",
    [
        (
            "truncate",
            {"short": 10, "long_1500": MAX_RESIDUES, "long_1100": MAX_RESIDUES},
            ["long_1500", "long_1100"],
            [],
            [],
        ),
        ("skip", {"short": 10}, [], ["long_1500", "long_1100"], []),
        ("full", {"short": 10, "long_1500": 1500, "long_1100": 1100}, [], [], ["long_1500", "long_1100"]),
    ],
)
def test_long_policies_count_what_they_did(policy, kept, truncated, skipped, beyond):
    sequences, report = load_sequences(FIXTURES / "long.fasta", policy)
    assert {s.id: len(s.sequence) for s in sequences} == kept
    assert (report.truncated, report.skipped, report.beyond_context) == (truncated, skipped, beyond)
    assert all(s.original_length in (10, 1500, 1100) for s in sequences)


def test_long_policy_error_names_record_and_line():
    with pytest.raises(FastaError, match=r"long.fasta, record 'long_1500', line 3: .*1500 residues") as caught:
        load_sequences(FIXTURES / "long.fasta", "error")
    assert caught.value.record == "long_1500" and caught.value.line == 3
    assert "1500 residues" in str(caught.value)
