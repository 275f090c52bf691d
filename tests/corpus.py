"""The bad-input corpus: every way a user, a pipeline or a hostile file hands esmdiv something it
cannot audit, with the exit code and message each must get.

Each :class:`Case` builds its input under a fresh temporary folder at test time (big, binary and
compressed files are generated, not committed) and returns the arguments after ``esmdiv check``.
``names`` are the substrings that must appear in the one-line message: the file (its base name),
and the record and line where there is one; for an option, the option.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import gzip
import json
import lzma
import os
import random
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from conftest import FIXTURES

BAD = FIXTURES / "bad"
SEED = str(FIXTURES / "seed18.fasta")
GOOD = b">a one\nMKTAYIAKVL\n>b two\nGLFDIVKKVVGALGSL\n"
TEN_MB = 10_000_000


@dataclass
class Case:
    id: str
    build: Callable[[Path], list[str]]  # tmp folder -> arguments after `esmdiv check`
    code: int
    fragment: str
    names: tuple[str, ...] = ()
    patch: Callable | None = None  # (monkeypatch, tmp) -> None, for environments a test must fake
    needs: set[str] = field(default_factory=set)  # "no-cuda", "not-root", "proc"
    stage: str = "input"  # the partial report's error.stage: where the run stopped


def write(tmp: Path, name: str, content: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def folder(tmp: Path, name: str) -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def fasta(name: str, content: bytes | str, *options: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [write(tmp, name, content), "--device", "cpu", *options]


def fixture(name: str, *options: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(BAD / name) if (BAD / name).exists() else str(FIXTURES / name), "--device", "cpu", *options]


def seed(*options: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [SEED, *options] if "--device" in options else [SEED, "--device", "cpu", *options]


def model(build_model: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    return lambda tmp: [SEED, "--device", "cpu", "--model", build_model(tmp)]


# --- generated files -----------------------------------------------------------------------------


def huge_record(tmp: Path, name: str, after: str = "") -> str:
    """One 10 MB single-line record, then ``after``."""
    path = tmp / name
    with open(path, "wb") as handle:
        handle.write(b">huge ten megabytes\n")
        handle.write(b"MKTAYIAKVL" * (TEN_MB // 10) + b"\n")
        handle.write(after.encode())
    return str(path)


def tiny_esm2():
    import esm

    with torch.random.fork_rng():  # built at import: leave the global RNG as it was
        torch.manual_seed(0)
        return esm.model.esm2.ESM2(num_layers=2, embed_dim=64, attention_heads=4, alphabet="ESM-1b").eval()


HF_LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "LayerNorm",
}
HF_CONFIG = {
    "model_type": "esm",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 33,
    "token_dropout": True,
    "position_embedding_type": "rotary",
    "emb_layer_norm_before": False,
}


def hf_state(model) -> dict[str, torch.Tensor]:
    """A fair-esm ESM2's weights under Hugging Face ``EsmModel`` names (what a HF folder holds)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith(("lm_head.", "contact_head.")) or "inv_freq" in key:
            continue
        if key == "embed_tokens.weight":
            out["esm.embeddings.word_embeddings.weight"] = value
        elif key.startswith("emb_layer_norm_after."):
            out["esm.encoder." + key] = value
        else:
            _, index, rest = key.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            out[f"esm.encoder.layer.{index}.{HF_LAYER[module]}.{kind}"] = value
    return out


def hf_folder(
    tmp: Path,
    name: str,
    config: dict | str | None = HF_CONFIG,
    weights: str | None = "bin",
    state: dict | None = None,
    truncate: bool = False,
) -> str:
    folder = tmp / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights == "bin":
        torch.save(hf_state(tiny_esm2()) if state is None else state, folder / "pytorch_model.bin")
        if truncate:
            data = (folder / "pytorch_model.bin").read_bytes()
            (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    return str(folder)


class Exploit:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


MARKER = "pwned-marker"


def evil_checkpoint(tmp: Path, legacy: bool = False) -> str:
    path = tmp / ("evil_legacy.pt" if legacy else "evil.pt")
    payload = {"model": {"embed_tokens.weight": torch.zeros(33, 8)}, "args": Exploit(tmp / MARKER)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


def evil_hf_folder(tmp: Path) -> str:
    folder = tmp / "evil_hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    torch.save(
        {"esm.embeddings.word_embeddings.weight": torch.zeros(33, 64), "x": Exploit(tmp / MARKER)},
        folder / "pytorch_model.bin",
    )
    return str(folder)


def saved(tmp: Path, name: str, obj, cut: bool = False) -> str:
    path = tmp / name
    torch.save(obj, path)
    if cut:
        path.write_bytes(path.read_bytes()[:-300])
    return str(path)


def unreadable(tmp: Path) -> list[str]:
    path = Path(write(tmp, "locked.fasta", GOOD))
    path.chmod(0)
    return [str(path), "--device", "cpu"]


def fifo(tmp: Path) -> list[str]:
    """A named pipe. A writer waits for up to 10 s for a reader, so a reader that opens the pipe
    (which blocks until a writer comes) fails this case instead of hanging the suite."""
    path = tmp / "pipe.fasta"
    os.mkfifo(path)

    def feed():
        for _ in range(200):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.05)
                continue
            with contextlib.suppress(OSError):
                os.write(fd, GOOD)
            os.close(fd)
            return

    threading.Thread(target=feed, daemon=True).start()
    return [str(path), "--device", "cpu"]


def offline_hub(monkeypatch, tmp: Path) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def _zip(tmp: Path) -> list[str]:
    path = tmp / "archive.fasta"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.fasta", GOOD)
    return [str(path), "--device", "cpu"]


def _gzip_cut(tmp: Path) -> list[str]:
    data = gzip.compress(b"".join(b">s%d\nMKTAYIAKVL\n" % i for i in range(2000)))
    return [write(tmp, "cut.fasta.gz", data[: len(data) // 2]), "--device", "cpu"]


_PNG = b"\x89PNG\r\n\x1a\n" + bytes(random.Random(0).getrandbits(8) for _ in range(2048))
_TINY_STATE = {k: v for k, v in tiny_esm2().state_dict().items() if "inv_freq" not in k}
_TINY_ARGS = argparse.Namespace(encoder_layers=2, encoder_embed_dim=64, encoder_attention_heads=4, token_dropout=True)
_ESM1_LIKE = {"model": {**_TINY_STATE, "embed_positions.weight": torch.zeros(1026, 64)}, "args": _TINY_ARGS}

CASES: list[Case] = [
    # --- FASTA: not text, not FASTA, compressed -------------------------------------------------
    Case("empty-file", fasta("empty.fasta", b""), 2, "no records", ("empty.fasta",)),
    Case("whitespace-only", fasta("blank.fasta", "\n   \n\t\n"), 2, "no records", ("blank.fasta",)),
    Case("binary-nul", fasta("blob.fasta", bytes(range(256)) * 4), 2, "binary data", ("blob.fasta", "line 1")),
    Case("binary-png", fasta("image.fasta", _PNG), 2, "not UTF-8", ("image.fasta", "line 1")),
    Case(
        "non-utf8-in-record",
        fasta("latin1.fasta", b">a\nMKT\n>b caf\xe9\nMKV\n"),
        2,
        "not UTF-8",
        ("latin1.fasta", "line 3"),
    ),
    Case(
        "gzip-corrupt",
        fasta("corrupt.fasta.gz", b"\x1f\x8b\x08\x00" + b"garbage" * 50),
        2,
        "corrupt or truncated gzip",
        ("corrupt.fasta.gz",),
    ),
    Case("gzip-truncated", _gzip_cut, 2, "corrupt or truncated gzip", ("cut.fasta.gz",)),
    Case(
        "gzip-trailing-garbage",
        fasta("trailing.fasta.gz", gzip.compress(GOOD) + b"garbage!"),
        2,
        "corrupt or truncated gzip",
        ("trailing.fasta.gz", "line 5"),
    ),
    Case("gzip-empty", fasta("nothing.fasta.gz", gzip.compress(b"")), 2, "no records", ("nothing.fasta.gz",)),
    Case(
        "gzip-illegal-char",
        fasta("inner.fasta.gz", gzip.compress(b">a\nMKT\n>b\nMK9\n")),
        2,
        "'9' at column 3",
        ("inner.fasta.gz", "record 'b'", "line 4"),
    ),
    Case(
        "bzip2-corrupt",
        fasta("x.fasta.bz2", b"BZh91AY&SY" + b"garbage" * 50),
        2,
        "corrupt or truncated bzip2",
        ("x.fasta.bz2", "line 1"),
    ),
    Case(
        "bzip2-illegal-char",
        fasta("inner.fasta.bz2", bz2.compress(b">a\nMKT\n>b\nMK9\n")),
        2,
        "'9' at column 3",
        ("inner.fasta.bz2", "record 'b'", "line 4"),
    ),
    Case(
        "xz-truncated",
        fasta("x.fasta.xz", lzma.compress(GOOD * 40)[:60]),
        2,
        "corrupt or truncated xz",
        ("x.fasta.xz",),
    ),
    Case("zstd", fasta("x.fasta.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 20), 2, "zstd-compressed", ("x.fasta.zst",)),
    Case("zip-archive", _zip, 2, "a zip archive", ("archive.fasta",)),
    Case("utf16", fasta("wide.fasta", GOOD.decode().encode("utf-16")), 2, "UTF-16 text", ("wide.fasta",)),
    Case(
        "no-header",
        fasta("headless.fasta", "MKTAYIAKVL\n"),
        2,
        "before the first '>' header",
        ("headless.fasta", "line 1"),
    ),
    Case(
        "fastq", fasta("reads.fastq", "@r1\nMKT\n+\nIII\n"), 2, "before the first '>' header", ("reads.fastq", "line 1")
    ),
    Case(
        "semicolon-comment",
        fasta("comment.fasta", ";old style comment\n>a\nMKT\n"),
        2,
        "before the first '>' header",
        ("comment.fasta", "line 1"),
    ),
    # --- FASTA: records -----------------------------------------------------------------------------
    Case(
        "header-no-sequence-at-end",
        fasta("tail.fasta", ">a\nMKT\n>b\n"),
        2,
        "record has no residues",
        ("tail.fasta", "record 'b'", "line 3"),
    ),
    Case(
        "header-no-sequence-mid-file",
        fixture("empty_record.fasta"),
        2,
        "record has no residues",
        ("empty_record.fasta", "record 'empty_one'", "line 1"),
    ),
    Case("header-without-id", fixture("no_id.fasta"), 2, "header has no id", ("no_id.fasta", "line 1")),
    Case(
        "header-blank-id",
        fasta("blank_id.fasta", ">a\nMKT\n>   \nMKT\n"),
        2,
        "header has no id",
        ("blank_id.fasta", "line 3"),
    ),
    Case(
        "duplicate-ids",
        fixture("duplicate_ids.fasta"),
        2,
        "duplicate id",
        ("duplicate_ids.fasta", "record 'dup'", "line 5"),
    ),
    Case(
        "illegal-digit",
        fixture("digit.fasta"),
        2,
        "'3' at column 4 (a digit)",
        ("digit.fasta", "record 'bad1'", "line 5"),
    ),
    Case("gap-dash", fixture("gap.fasta"), 2, "'-' at column 5 (a gap)", ("gap.fasta", "record 'gapped'", "line 2")),
    Case(
        "gap-dot",
        fasta("dots.fasta", ">a\nMKT\n>d\nMKT..AY\n"),
        2,
        "'.' at column 4 (a gap)",
        ("dots.fasta", "record 'd'", "line 4"),
    ),
    Case("punctuation", fixture("punctuation.fasta"), 2, "'!'", ("punctuation.fasta", "record 'punct'", "line 2")),
    Case("only-star", fixture("only_star.fasta"), 2, "only '*'", ("only_star.fasta", "record 'stars'", "line 1")),
    Case(
        "star-mid-sequence",
        fixture("inner_stop.fasta"),
        2,
        "inside the sequence",
        ("inner_stop.fasta", "record 'mid_stop'", "line 2"),
    ),
    Case(
        "lowercase-illegal",
        fasta("lower.fasta", ">low\nmktay\nmkjl\n"),
        2,
        "'j' at column 3",
        ("lower.fasta", "record 'low'", "line 3"),
    ),
    Case(
        "lowercase-sharp-s",
        fasta("sharp.fasta", ">s\nmkßt\n"),
        2,
        "'ß' at column 3 (not a residue)",
        ("sharp.fasta", "record 's'", "line 2"),
    ),
    Case(
        "dotless-i",
        fasta("dotless.fasta", ">t\nMKıT\n"),
        2,
        "'ı' at column 3",
        ("dotless.fasta", "record 't'", "line 2"),
    ),
    Case(
        "crlf-gap",
        fasta("crlf.fasta", ">a desc\r\nMKTAY\r\nMK-T\r\n"),
        2,
        "'-' at column 3 (a gap)",
        ("crlf.fasta", "record 'a'", "line 3"),
    ),
    Case(
        "cr-only-line-ends",
        fasta("mac.fasta", ">a\rMKT\r>b\rAAA\r"),
        2,
        "carriage return inside a line",
        ("mac.fasta", "line 1"),
    ),
    Case(
        "markup-in-record-id",
        fasta("markup.fasta", ">[/]evil\nMK1\n"),
        2,
        "'1' at column 3",
        ("markup.fasta", "record '[/]evil'", "line 2"),
    ),
    Case("markup-in-file-name", fasta("[bold]odd[red].fasta", ""), 2, "no records", ("[bold]odd[red].fasta",)),
    # --- FASTA: over 1022 residues, under each --long policy -------------------------------------
    Case(
        "10MB-record-long-error",
        lambda tmp: [huge_record(tmp, "huge.fasta"), "--device", "cpu", "--long", "error"],
        2,
        "10000000 residues, over ESM-2's trained context",
        ("huge.fasta", "record 'huge'", "line 1"),
    ),
    Case(
        "10MB-record-long-skip",
        lambda tmp: [huge_record(tmp, "huge.fasta"), "--device", "cpu", "--long", "skip"],
        2,
        "no sequence left to audit (1 skipped",
        ("huge.fasta",),
    ),
    Case(
        "10MB-record-long-truncate",
        lambda tmp: [huge_record(tmp, "huge.fasta", ">after\nMK5\n"), "--device", "cpu"],
        2,
        "'5' at column 3",
        ("huge.fasta", "record 'after'", "line 4"),
    ),
    Case(
        "10MB-record-long-full",
        lambda tmp: [huge_record(tmp, "huge.fasta", ">after\nMK5\n"), "--device", "cpu", "--long", "full"],
        2,
        "'5' at column 3",
        ("huge.fasta", "record 'after'", "line 4"),
    ),
    Case(
        "1500-residues-long-error",
        fixture("long.fasta", "--long", "error"),
        2,
        "1500 residues",
        ("long.fasta", "record 'long_1500'", "line 3"),
    ),
    # --- the file itself ----------------------------------------------------------------------------
    Case(
        "missing-file", lambda tmp: [str(tmp / "absent.fasta"), "--device", "cpu"], 2, "no such file", ("absent.fasta",)
    ),
    Case(
        "directory-as-file",
        lambda tmp: [folder(tmp, "folder.fasta"), "--device", "cpu"],
        2,
        "is a directory",
        ("folder.fasta",),
    ),
    Case("unreadable-file", unreadable, 2, "cannot be read (Permission denied)", ("locked.fasta",), needs={"not-root"}),
    Case(
        "unreadable-proc-file",
        lambda tmp: ["/proc/self/mem", "--device", "cpu"],
        2,
        "cannot be read",
        ("/proc/self/mem",),
        needs={"proc"},
    ),
    Case("fifo", fifo, 2, "not a regular file", ("pipe.fasta",)),
    Case("dev-null", lambda tmp: ["/dev/null", "--device", "cpu"], 2, "not a regular file", ("/dev/null",)),
    # --- models and checkpoints ---------------------------------------------------------------------
    Case(
        "missing-model-file",
        model(lambda tmp: str(tmp / "nope.pt")),
        2,
        "no such model file",
        ("nope.pt",),
        stage="model",
    ),
    Case("unknown-model-name", model(lambda tmp: "esm3_huge"), 2, "not a model file", ("esm3_huge",), stage="model"),
    Case("random-unknown-arch", model(lambda tmp: "random:99M"), 2, "random:<arch>", ("random:99M",), stage="model"),
    Case("random-bad-seed", model(lambda tmp: "random:8M:x"), 2, "seed", ("random:8M:x",), stage="model"),
    Case(
        "random-seed-overflow",
        model(lambda tmp: "random:8M:" + "9" * 30),
        2,
        "the seed must fit in 64 bits",
        ("random:8M:999",),
        stage="model",
    ),
    Case("model-empty", model(lambda tmp: ""), 2, "--model is empty", ("--model",), stage="model"),
    Case(
        "model-is-a-text-file",
        model(lambda tmp: write(tmp, "notes.pt", "a text file, not weights\n" * 20)),
        2,
        "not a readable torch checkpoint",
        ("notes.pt",),
        stage="model",
    ),
    Case(
        "corrupt-checkpoint",
        model(lambda tmp: write(tmp, "broken.pt", b"PK\x03\x04 not a zip at all")),
        2,
        "not a readable torch checkpoint",
        ("broken.pt",),
        stage="model",
    ),
    Case(
        "empty-checkpoint",
        model(lambda tmp: write(tmp, "zero.pt", b"")),
        2,
        "not a readable torch checkpoint",
        ("zero.pt",),
        stage="model",
    ),
    Case(
        "truncated-checkpoint",
        model(lambda tmp: saved(tmp, "cut.pt", {"model": tiny_esm2().state_dict()}, cut=True)),
        2,
        "not a readable torch checkpoint",
        ("cut.pt",),
        stage="model",
    ),
    Case(
        "corrupt-safetensors",
        model(lambda tmp: write(tmp, "broken.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")),
        2,
        "not a readable safetensors file",
        ("broken.safetensors",),
        stage="model",
    ),
    Case(
        "checkpoint-not-a-dict",
        model(lambda tmp: saved(tmp, "tensor.pt", torch.zeros(3))),
        2,
        "expected a dict of weights",
        ("tensor.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-of-another-model",
        model(lambda tmp: saved(tmp, "linear.pt", torch.nn.Linear(4, 4).state_dict())),
        2,
        "not an ESM-2 checkpoint",
        ("linear.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-esm1-like",
        model(lambda tmp: saved(tmp, "esm1.pt", _ESM1_LIKE)),
        2,
        "keys that ESM-2 does not have: embed_positions.weight",
        ("esm1.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-unknown-width",
        model(lambda tmp: saved(tmp, "narrow.pt", _TINY_STATE)),
        2,
        "embed_dim 64 matches no ESM-2 architecture",
        ("narrow.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-heads-do-not-divide",
        model(
            lambda tmp: saved(
                tmp, "heads5.pt", {"model": _TINY_STATE, "args": argparse.Namespace(encoder_attention_heads=5)}
            )
        ),
        2,
        "not divisible by 5 attention heads",
        ("heads5.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-hf-keys-without-embeddings",
        model(lambda tmp: saved(tmp, "no_emb.pt", {"encoder.layer.0.attention.self.query.weight": torch.zeros(2, 2)})),
        2,
        "no 2-D 'embeddings.word_embeddings.weight'",
        ("no_emb.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-1d-embedding",
        model(
            lambda tmp: saved(
                tmp, "flat.pt", {"embed_tokens.weight": torch.zeros(33), "layers.0.fc1.weight": torch.zeros(2)}
            )
        ),
        2,
        "'embed_tokens.weight' has shape (33,)",
        ("flat.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-non-string-keys",
        model(lambda tmp: saved(tmp, "intkeys.pt", {1: torch.zeros(2)})),
        2,
        "keyed by something other than names",
        ("intkeys.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-zero-heads",
        model(
            lambda tmp: saved(
                tmp, "heads0.pt", {"model": _TINY_STATE, "args": argparse.Namespace(encoder_attention_heads=0)}
            )
        ),
        2,
        "sizes must be positive",
        ("heads0.pt",),
        stage="model",
    ),
    Case(
        "checkpoint-heads-not-a-number",
        model(
            lambda tmp: saved(
                tmp, "headsx.pt", {"model": _TINY_STATE, "args": argparse.Namespace(encoder_attention_heads="many")}
            )
        ),
        2,
        "encoder_attention_heads 'many' is not a number",
        ("headsx.pt",),
        stage="model",
    ),
    Case(
        "hf-config-with-a-million-layers",
        model(lambda tmp: hf_folder(tmp, "hf_deep", {**HF_CONFIG, "num_hidden_layers": 1_000_000})),
        2,
        "config says 1000000 layers, the weights hold 2",
        ("hf_deep",),
        stage="model",
    ),
    Case(
        "hf-config-with-a-huge-width",
        model(lambda tmp: hf_folder(tmp, "hf_wide", {**HF_CONFIG, "hidden_size": 10**7})),
        2,
        "config says hidden_size 10000000, the weights have 64",
        ("hf_wide",),
        stage="model",
    ),
    Case(
        "hf-config-zero-heads",
        model(lambda tmp: hf_folder(tmp, "hf_heads0", {**HF_CONFIG, "num_attention_heads": 0})),
        2,
        "sizes must be positive",
        ("hf_heads0",),
        stage="model",
    ),
    Case(
        "hf-config-not-an-object",
        model(lambda tmp: hf_folder(tmp, "hf_list", "[1, 2]")),
        2,
        "config.json holds a list",
        ("hf_list",),
        stage="model",
    ),
    Case(
        "hf-config-of-another-architecture",
        model(lambda tmp: hf_folder(tmp, "hf_480", {**HF_CONFIG, "hidden_size": 480})),
        2,
        "a checkpoint of another architecture",
        ("hf_480",),
        stage="model",
    ),
    Case(
        "hf-esm1b-config",
        model(lambda tmp: hf_folder(tmp, "hf_esm1b", {**HF_CONFIG, "position_embedding_type": "absolute"})),
        2,
        "not an ESM-2 checkpoint",
        ("hf_esm1b",),
        stage="model",
    ),
    Case(
        "hf-no-config",
        model(lambda tmp: hf_folder(tmp, "hf_noconfig", config=None)),
        2,
        "without config.json",
        ("hf_noconfig",),
        stage="model",
    ),
    Case(
        "hf-no-weights",
        model(lambda tmp: hf_folder(tmp, "hf_noweights", weights=None)),
        2,
        "neither model.safetensors nor pytorch_model.bin",
        ("hf_noweights",),
        stage="model",
    ),
    Case(
        "hf-bad-json",
        model(lambda tmp: hf_folder(tmp, "hf_badjson", config="{not json")),
        2,
        "not readable JSON",
        ("hf_badjson",),
        stage="model",
    ),
    Case(
        "hf-config-without-sizes",
        model(lambda tmp: hf_folder(tmp, "hf_nosizes", {"model_type": "esm"})),
        2,
        "config lacks the ESM sizes",
        ("hf_nosizes",),
        stage="model",
    ),
    Case(
        "hf-truncated-weights",
        model(lambda tmp: hf_folder(tmp, "hf_cut", truncate=True)),
        2,
        "not a readable torch checkpoint",
        ("hf_cut",),
        stage="model",
    ),
    Case(
        "malicious-pickle",
        model(evil_checkpoint),
        2,
        "refused: the file would run or build Python objects",
        ("evil.pt", "posix.system"),
        stage="model",
    ),
    Case(
        "malicious-legacy-pickle",
        model(lambda tmp: evil_checkpoint(tmp, legacy=True)),
        2,
        "refused",
        ("evil_legacy.pt", "posix.system"),
        stage="model",
    ),
    Case("malicious-hf-weights", model(evil_hf_folder), 2, "refused", ("evil_hf", "posix.system"), stage="model"),
    Case(
        "fair-esm-name-offline",
        model(lambda tmp: "esm2_t6_8M_UR50D"),
        3,
        "could not be downloaded",
        ("esm2_t6_8M_UR50D",),
        patch=offline_hub,
        stage="model",
    ),
    Case(
        "head-model-without-head",
        seed("--head", "model"),
        2,
        "has no classification head",
        ("--head model",),
        stage="model",
    ),
    Case(
        "head-unknown",
        seed("--head", "oracle"),
        2,
        "--head 'oracle': not auto, proxy, model or an existing head file",
        ("--head",),
        stage="model",
    ),
    # --- environment ------------------------------------------------------------------------------------
    Case(
        "device-cuda-without-cuda",
        seed("--device", "cuda"),
        3,
        "CUDA is not available",
        ("--device cuda",),
        needs={"no-cuda"},
        stage="options",
    ),
    Case(
        "device-cuda-index-absent",
        seed("--device", "cuda:7"),
        3,
        "cuda:7",
        ("--device cuda:7",),
        needs={"no-cuda"},
        stage="options",
    ),
    Case(
        "backend-flash-attn-absent",
        seed("--backend", "flash-attn"),
        3,
        "attention backend 'flash-attn' is not available",
        ("flash-attn",),
        stage="options",
    ),
    Case(
        "backend-torch-on-cpu",
        seed("--backend", "torch"),
        3,
        "attention backend 'torch' is not available",
        ("torch",),
        stage="options",
    ),
    # A value outside an option's fixed set stops at the parser (which lists the set), still one line
    # and still a partial report.
    Case(
        "backend-unknown",
        seed("--backend", "xformers"),
        2,
        "'xformers' is not one of",
        ("--backend", "flash-attn"),
        stage="options",
    ),
    Case("device-unknown", seed("--device", "tpu"), 2, "--device 'tpu'", ("tpu",), stage="options"),
    Case("dtype-unknown", seed("--dtype", "fp8"), 2, "'fp8' is not one of", ("--dtype", "bf16"), stage="options"),
    # --- options: contradictory or out of range --------------------------------------------------------
    Case(
        "accept-agreement-above-1",
        seed("--accept-agreement", "1.5"),
        2,
        "out of range",
        ("--accept-agreement 1.5",),
        stage="options",
    ),
    Case(
        "validate-agreement-negative",
        seed("--validate-agreement", "-0.1"),
        2,
        "out of range",
        ("--validate-agreement -0.1",),
        stage="options",
    ),
    Case(
        "agreements-contradict",
        seed("--validate-agreement", "0.99", "--accept-agreement", "0.9"),
        2,
        "is above --accept-agreement 0.9",
        ("--validate-agreement 0.99",),
        stage="options",
    ),
    Case("min-cosine-above-1", seed("--min-cosine", "2"), 2, "out of range", ("--min-cosine 2.0",), stage="options"),
    Case("min-cosine-nan", seed("--min-cosine", "nan"), 2, "out of range", ("--min-cosine nan",), stage="options"),
    Case("max-mad-zero", seed("--max-mad", "0"), 2, "must be a positive number", ("--max-mad 0.0",), stage="options"),
    Case(
        "max-mad-infinite",
        seed("--max-mad", "inf"),
        2,
        "must be a positive number",
        ("--max-mad inf",),
        stage="options",
    ),
    Case("max-tokens-too-small", seed("--max-tokens", "2"), 2, "too small", ("--max-tokens 2",), stage="options"),
    Case("max-tokens-zero", seed("--max-tokens", "0"), 2, "too small", ("--max-tokens 0",), stage="options"),
    Case(
        "long-policy-unknown",
        seed("--long", "chop"),
        2,
        "'chop' is not one of",
        ("--long", "truncate"),
        stage="options",
    ),
    Case(
        "json-is-a-directory",
        lambda tmp: [SEED, "--device", "cpu", "--json", folder(tmp, "out.json")],
        2,
        "is a directory; --json needs a file path",
        ("out.json",),
    ),
]
