"""Property tests (Hypothesis): packing round-trips, packed == padded in fp32, and the FASTA reader
returns records or raises its typed error, whatever it is fed."""

import atexit
import gzip
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from esmdiv.errors import FastaError
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import batches_by_tokens, encode, pack, pad, to_padded, unpack
from esmdiv.forward.padded import padded_forward
from esmdiv.input.fasta import RESIDUES, read_fasta
from esmdiv.input.sequences import LONG_POLICIES, MAX_RESIDUES, InputReport, iter_sequences

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- packing -------------------------------------------------------------------------------------

lengths_st = st.lists(st.integers(1, 300), min_size=1, max_size=40)


@FAST
@given(lengths=lengths_st, seed=st.integers(0, 2**31 - 1))
def test_pack_then_unpack_returns_every_sequence_intact(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, 33, (n,), generator=g) for n in lengths]
    packed = pack(seqs)
    assert packed.cu_seqlens.tolist()[-1] == sum(lengths) == len(packed.input_ids)
    assert packed.lengths == lengths and packed.max_seqlen == max(lengths)
    for seq, back in zip(seqs, unpack(packed.input_ids, packed.cu_seqlens), strict=True):
        assert torch.equal(seq, back)
    for i, n in enumerate(lengths):  # positions restart at 0 in every sequence
        start = int(packed.cu_seqlens[i])
        assert packed.position_ids[start : start + n].tolist() == list(range(n))
        assert (packed.seq_index[start : start + n] == i).all()
    dense = to_padded(packed.input_ids[:, None].float(), packed)[..., 0]
    for i, (seq, n) in enumerate(zip(seqs, lengths)):
        assert torch.equal(dense[i, :n], seq.float()) and not dense[i, n:].any()


@FAST
@given(lengths=st.lists(st.integers(3, 1024), min_size=1, max_size=60), budget=st.integers(3, 20000))
def test_batches_cover_every_sequence_once_within_the_budget(lengths, budget):
    batches = batches_by_tokens(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget


# --- packed forward == padded forward (fp32, CPU, tiny random ESM-2) ----------------------------


@cache
def tiny_model():
    import esm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = esm.model.esm2.ESM2(num_layers=2, embed_dim=64, attention_heads=4, alphabet="ESM-1b")
    return model.eval()


@settings(max_examples=25, deadline=None)
@given(
    sequences=st.lists(st.text(alphabet=RESIDUES, min_size=1, max_size=150), min_size=1, max_size=6),
    masked=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_packed_forward_equals_padded_forward(sequences, masked):
    model = tiny_model()
    alphabet = model.alphabet
    tokens = [encode(s, alphabet) for s in sequences]
    for k in masked:  # a few <mask> tokens exercise the per-sequence token-dropout rescaling
        t = tokens[k % len(tokens)]
        t[1 + k % (len(t) - 2)] = alphabet.mask_idx
    layers = [0, 1, 2]
    ref = padded_forward(model, pad(tokens, alphabet.padding_idx), repr_layers=layers)
    out = packed_forward(model, pack(tokens), "reference", repr_layers=layers)
    lengths = [len(t) for t in tokens]
    for layer in layers:
        for i, part in enumerate(torch.split(out.representations[layer], lengths)):
            diff = (ref.representations[layer][i, : lengths[i]] - part).abs().max()
            assert diff < 1e-4, (layer, i, float(diff))


# --- the FASTA reader ------------------------------------------------------------------------------

_TMP = Path(tempfile.mkdtemp(prefix="esmdiv-props-"))  # not tmp_path: Hypothesis reruns a test many times
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _file(data: bytes, name: str = "in.fasta") -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def _records_or_fasta_error(path: Path, policy: str = "truncate"):
    """Read ``path`` fully; the only exception allowed is FastaError. Returns the records or None."""
    try:
        records = read_fasta(path)
        list(iter_sequences(iter(records), InputReport(str(path)), policy))
    except FastaError as err:
        assert str(err).startswith(str(path))
        return None
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        assert r.id and not any(c.isspace() for c in r.id)
        assert r.sequence and set(r.sequence) <= set(RESIDUES)
    return records


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=2000), gzipped=st.booleans(), policy=st.sampled_from(LONG_POLICIES))
def test_random_bytes_give_records_or_a_fasta_error(data, gzipped, policy):
    if gzipped:
        data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + data  # a gzip header over garbage: a corrupt stream
    _records_or_fasta_error(_file(data), policy if policy != "error" else "truncate")


_LINE = st.one_of(
    st.builds(
        lambda i, d: f">{i}{d}", st.text("abAB12_|.", min_size=0, max_size=6), st.sampled_from(["", " desc", "\tx y"])
    ),
    st.text(RESIDUES + RESIDUES.lower(), max_size=90),
    st.text(RESIDUES + "*-. 0\t!ßıſ>;@\r", max_size=40),
    st.just(""),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_LINE, max_size=25), crlf=st.booleans(), policy=st.sampled_from(LONG_POLICIES))
def test_near_fasta_text_gives_records_or_a_fasta_error(lines, crlf, policy):
    text = ("\r\n" if crlf else "\n").join(lines)
    _records_or_fasta_error(_file(text.encode()), policy)


# Valid FASTA built from known records: reading must give back exactly those records.
_ID = st.text("ABCXYZabcxyz0123456789_|.-", min_size=1, max_size=12)
_RECORD = st.tuples(
    st.text(RESIDUES, min_size=1, max_size=400),  # residues
    st.booleans(),  # written in lower case
    st.booleans(),  # with a trailing '*'
    st.integers(1, 90),  # line width
    st.sampled_from(["", " a description", "\tdesc with  spaces"]),
)


def _render(ids, records, newline, blank_lines):
    lines, header_lines = [], []
    for rid, (seq, lower, stop, width, desc) in zip(ids, records):
        header_lines.append(len(lines) + 1)
        lines.append(f">{rid}{desc}")
        body = (seq.lower() if lower else seq) + ("*" if stop else "")
        lines += [body[i : i + width] for i in range(0, len(body), width)]
        lines += [""] * blank_lines
    return newline.join(lines) + newline, header_lines, lines


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(_ID, min_size=1, max_size=8, unique=True),
    records=st.lists(_RECORD, min_size=8, max_size=8),
    newline=st.sampled_from(["\n", "\r\n"]),
    blank_lines=st.integers(0, 2),
    gzipped=st.booleans(),
)
def test_valid_fasta_reads_back_exactly(ids, records, newline, blank_lines, gzipped):
    text, header_lines, _ = _render(ids, records, newline, blank_lines)
    data = gzip.compress(text.encode()) if gzipped else text.encode()
    got = read_fasta(_file(data, "valid.fasta"))
    assert [r.id for r in got] == ids
    for r, (seq, lower, stop, _, desc), line in zip(got, records, header_lines):
        assert r.sequence == seq and r.line == line
        assert r.lowercase == (lower and seq != seq.lower()) and r.stop_stripped == stop
        assert r.description == desc.strip()
    policy_report = InputReport("valid.fasta")
    kept = list(iter_sequences(iter(got), policy_report, "truncate"))
    assert all(len(s.sequence) == min(s.original_length, MAX_RESIDUES) for s in kept)


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(_ID, min_size=1, max_size=5, unique=True),
    records=st.lists(_RECORD, min_size=5, max_size=5),
    newline=st.sampled_from(["\n", "\r\n"]),
    bad=st.sampled_from(list("-.0123456789!#;@ßıſ[]")),
    where=st.integers(0, 10_000),
)
def test_one_illegal_character_is_named_by_record_line_and_column(ids, records, newline, bad, where):
    text, header_lines, lines = _render(ids, records, newline, 0)
    body_lines = [i for i, line in enumerate(lines) if not line.startswith(">")]
    index = body_lines[where % len(body_lines)]
    line = lines[index]
    if line.endswith("*"):
        line = line[:-1]
        assume(line)  # a line of only the stop: nowhere to put the character before it
    col = where % (len(line) + 1)
    lines[index] = lines[index][:col] + bad + lines[index][col:]
    record = ids[sum(1 for h in header_lines if h <= index + 1) - 1]
    try:
        read_fasta(_file(newline.join(lines).encode(), "mutated.fasta"))
    except FastaError as err:
        assert (err.line, err.record) == (index + 1, record)
        assert f"{bad!r} at column {col + 1}" in err.why
    else:
        raise AssertionError(f"{bad!r} at line {index + 1} was accepted")


# --- checkpoints -----------------------------------------------------------------------------------


def _zip_of(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=3000),
    suffix=st.sampled_from([".pt", ".bin", ".safetensors"]),
    as_zip=st.sampled_from([None, "archive/data.pkl", "archive/byteorder", "x/data/0"]),
)
@example(data=b"X", suffix=".pt", as_zip="archive/data.pkl")  # torch's opcode scanner: struct.error
def test_random_bytes_as_a_checkpoint_give_a_checkpoint_error(data, suffix, as_zip):
    """Garbage, or garbage inside torch's zip layout, is always CheckpointError (exit 2), never a crash."""
    from esmdiv.errors import CheckpointError
    from esmdiv.model.loading import load_model

    if as_zip:
        data = _zip_of({as_zip: data, "archive/version": b"3\n"})
    path = _file(data, "model" + suffix)
    try:
        load_model(str(path))
    except CheckpointError as err:
        assert str(err).startswith(str(path))
    else:
        raise AssertionError("random bytes loaded as a model")
