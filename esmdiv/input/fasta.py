"""Reading and validating protein FASTA.

The reader streams: ``iter_fasta`` holds one record at a time (plus the set of ids seen, to
refuse duplicates), so a proteome-sized file costs the memory of its longest record.
Every problem raises :class:`~esmdiv.errors.FastaError` naming the file, record and line.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from esmdiv.errors import FastaError

#: fair-esm's protein alphabet: the 20 standard residues plus X B U Z O.
RESIDUES = "ACDEFGHIKLMNPQRSTVWYXBUZO"
NUCLEOTIDES = frozenset("ACGTUN")
# Checked before upper-casing: str.upper() maps some non-ASCII letters onto residues ('ß' -> 'SS').
_ILLEGAL = re.compile(f"[^{RESIDUES}{RESIDUES.lower()}]")
# Compressed FASTA the standard library reads: magic bytes -> (format name, opener).
_COMPRESSED = {
    b"\x1f\x8b": ("gzip", gzip.open),
    b"BZh": ("bzip2", bz2.open),
    b"\xfd7zXZ\x00": ("xz", lzma.open),
}
# Other containers a user may hand over by mistake: named, so the error can say what to do.
_OTHER_MAGIC = {
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PK\x03\x04": "a zip archive",
    b"\xff\xfe": "UTF-16 text",
    b"\xfe\xff": "UTF-16 text",
}


@dataclass(frozen=True)
class ProteinRecord:
    """One FASTA record, residues upper-cased and validated.

    ``line`` is the header's line number (1-based); ``lowercase`` says the file gave some
    residues in lower case; ``stop_stripped`` says a trailing ``*`` was removed.
    """

    id: str
    sequence: str
    line: int
    description: str = ""
    lowercase: bool = False
    stop_stripped: bool = False

    @property
    def looks_nucleotide(self) -> bool:
        """Made only of A C G T U N: probably DNA or RNA given by mistake."""
        return set(self.sequence) <= NUCLEOTIDES


def read_fasta(path: str | Path, name: str | None = None) -> list[ProteinRecord]:
    """Read a whole FASTA file; see :func:`iter_fasta`."""
    return list(iter_fasta(path, name))


def iter_fasta(path: str | Path, name: str | None = None) -> Iterator[ProteinRecord]:
    """Yield the records of a protein FASTA file (plain, gzip, bzip2 or xz), validating as it goes.

    Accepts multi-line records, CRLF line ends, blank lines and headers with descriptions
    (the id is the header's first word). Raises ``FastaError`` on anything else, naming the file
    as ``name`` where given (``<stdin>`` for input spooled from standard input), else its path.
    """
    path = Path(path)
    shown = name or str(path)
    handle, compression = _open(path, shown)
    with handle:
        yield from _parse(shown, handle, compression)


def _open(path: Path, shown: str) -> tuple[BinaryIO, str | None]:
    """The file opened for reading bytes (decompressing by its magic bytes) and its compression."""
    if not path.exists():
        raise FastaError(shown, "no such file")
    if path.is_dir():
        raise FastaError(shown, "is a directory, not a FASTA file")
    if not path.is_file():
        # A pipe (<(zcat ...)) or a device: the audit reads the file twice (validate, then run).
        raise FastaError(
            shown,
            "not a regular file (a pipe or device?); esmdiv reads its input twice: save it to a file, "
            "or pipe it to standard input as '-'",
        )
    try:
        handle: BinaryIO = open(path, "rb")
        magic = handle.read(6)
        handle.seek(0)
    except OSError as err:
        raise FastaError(shown, f"cannot be read ({err.strerror or err})") from None
    for prefix, (compression, opener) in _COMPRESSED.items():
        if magic.startswith(prefix):
            handle.close()
            return opener(path, "rb"), compression  # type: ignore[return-value]
    for prefix, what in _OTHER_MAGIC.items():
        if magic.startswith(prefix):
            handle.close()
            raise FastaError(shown, f"is {what}, not FASTA text (plain, gzip, bzip2 or xz): convert it first")
    return handle, None


def _parse(path: str, handle: BinaryIO, compression: str | None) -> Iterator[ProteinRecord]:
    """Line by line: decode and check each line, then hand it to the record being built."""
    records = _Records(path)
    lineno = 0
    try:
        for lineno, raw in enumerate(handle, 1):
            yield from records.feed(_decode(path, raw, lineno), lineno)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:  # mostly a corrupt or truncated stream
        what = f"corrupt or truncated {compression}" if compression else "cannot be read"
        raise FastaError(path, f"{what} ({err})", line=lineno + 1) from None
    yield from records.end()


def _decode(path: str, raw: bytes, lineno: int) -> str:
    """One line as text without its line end; binary data, other encodings and bare CRs are errors."""
    if b"\x00" in raw:
        raise FastaError(path, "binary data (NUL byte): not a FASTA text file", line=lineno)
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise FastaError(path, "not UTF-8 text: not a FASTA file", line=lineno) from None
    if lineno == 1:
        text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors write
    if "\r" in text:
        raise FastaError(path, "carriage return inside a line (old Mac CR line ends?): use LF or CRLF", line=lineno)
    return text


class _Records:
    """The record being built from header and sequence lines, and the ids seen so far."""

    def __init__(self, path: str):
        self.path = path
        self.seen: set[str] = set()
        self.header: tuple[str, str, int] | None = None  # (id, description, line)
        self.chunks: list[str] = []
        self.lowercase = False
        self.stop_line: int | None = None  # line of a trailing '*', which must end the record

    def feed(self, text: str, lineno: int) -> Iterator[ProteinRecord]:
        """Take one line; a header finishes (yields) the record before it."""
        stripped = text.strip()
        if not stripped:
            return
        if stripped.startswith(">"):
            if self.header is not None:
                yield self._record()
            self._start(stripped, lineno)
        else:
            self._add_residues(text, stripped, lineno)

    def end(self) -> Iterator[ProteinRecord]:
        """At the end of the file: the last record, or an error when there was none."""
        if self.header is None:
            raise FastaError(self.path, "no records (empty file, or no '>' header)")
        yield self._record()

    def _start(self, stripped: str, lineno: int) -> None:
        fields = stripped[1:].split(maxsplit=1)
        if not fields:
            raise FastaError(self.path, "header has no id after '>'", line=lineno)
        rid = fields[0]
        if rid in self.seen:
            raise FastaError(self.path, "duplicate id (ids must be unique)", line=lineno, record=rid)
        self.seen.add(rid)
        self.header = (rid, fields[1] if len(fields) > 1 else "", lineno)
        self.chunks, self.lowercase, self.stop_line = [], False, None

    def _add_residues(self, text: str, stripped: str, lineno: int) -> None:
        if self.header is None:
            raise FastaError(self.path, "sequence before the first '>' header: not a FASTA file", line=lineno)
        rid = self.header[0]
        if self.stop_line is not None:
            raise FastaError(self.path, "'*' (stop) inside the sequence", line=self.stop_line, record=rid)
        residues = "".join(stripped.split())  # spaces inside a line are layout, not residues
        if residues.endswith("*"):
            residues, self.stop_line = residues[:-1], lineno
        bad = _ILLEGAL.search(residues)
        if bad:
            char = residues[bad.start()]
            kind = "a gap" if char in "-." else "a digit" if char.isdigit() else "not a residue"
            raise FastaError(
                self.path,
                f"illegal character {char!r} at column {_column(text, bad.start())} ({kind}); "
                f"allowed: {RESIDUES} (and a trailing '*')",
                line=lineno,
                record=rid,
            )
        upper = residues.upper()
        if upper != residues:
            self.lowercase = True
        self.chunks.append(upper)

    def _record(self) -> ProteinRecord:
        rid, desc, line = self.header  # type: ignore[misc]
        sequence = "".join(self.chunks)
        if not sequence:
            why = "record has no residues" if self.stop_line is None else "record holds only '*'"
            raise FastaError(self.path, why, line=line, record=rid)
        return ProteinRecord(rid, sequence, line, desc, self.lowercase, self.stop_line is not None)


def _column(text: str, index_in_residues: int) -> int:
    """1-based column in the raw line of the index-th non-space character."""
    count = -1
    for col, char in enumerate(text, 1):
        if not char.isspace():
            count += 1
            if count == index_in_residues:
                return col
    return len(text)
