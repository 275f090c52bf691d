"""Reading and validating protein FASTA.

The reader streams: ``iter_fasta`` holds one record at a time (plus the set of ids seen, to
refuse duplicates), so a proteome-sized file costs the memory of its longest record.
Every problem raises :class:`~esmdiv.errors.FastaError` naming the file, record and line.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from esmdiv.errors import FastaError

#: fair-esm's protein alphabet: the 20 standard residues plus X B U Z O.
RESIDUES = "ACDEFGHIKLMNPQRSTVWYXBUZO"
NUCLEOTIDES = frozenset("ACGTUN")
# Checked before upper-casing: str.upper() maps some non-ASCII letters onto residues ('ß' -> 'SS').
_ILLEGAL = re.compile(f"[^{RESIDUES}{RESIDUES.lower()}]")
_GZIP_MAGIC = b"\x1f\x8b"
# Other containers a user may hand over by mistake: named, so the error can say what to do.
_OTHER_MAGIC = {
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
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


def read_fasta(path: str | Path) -> list[ProteinRecord]:
    """Read a whole FASTA file; see :func:`iter_fasta`."""
    return list(iter_fasta(path))


def iter_fasta(path: str | Path) -> Iterator[ProteinRecord]:
    """Yield the records of a protein FASTA file (plain or gzip), validating as it goes.

    Accepts multi-line records, CRLF line ends, blank lines and headers with descriptions
    (the id is the header's first word). Raises ``FastaError`` on anything else.
    """
    path = Path(path)
    with _open(path) as handle:
        yield from _parse(path, handle)


def _open(path: Path) -> BinaryIO:
    if not path.exists():
        raise FastaError(path, "no such file")
    if path.is_dir():
        raise FastaError(path, "is a directory, not a FASTA file")
    if not path.is_file():
        # A pipe (<(zcat ...)) or a device: the audit reads the file twice (validate, then run).
        raise FastaError(path, "not a regular file (a pipe or device?); esmdiv reads its input twice: save it to a file")
    try:
        handle: BinaryIO = open(path, "rb")
        magic = handle.read(6)
        handle.seek(0)
    except OSError as err:
        raise FastaError(path, f"cannot be read ({err.strerror or err})") from None
    if magic.startswith(_GZIP_MAGIC):
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    for prefix, what in _OTHER_MAGIC.items():
        if magic.startswith(prefix):
            handle.close()
            raise FastaError(path, f"is {what}, not FASTA text (plain or gzip): convert it first")
    return handle


def _parse(path: Path, handle: BinaryIO) -> Iterator[ProteinRecord]:
    seen: set[str] = set()
    header: tuple[str, str, int] | None = None  # (id, description, line)
    chunks: list[str] = []
    lowercase = False
    stop_line: int | None = None  # line of a trailing '*', which must end the record

    def finish() -> ProteinRecord:
        rid, desc, line = header  # type: ignore[misc]
        sequence = "".join(chunks)
        if not sequence:
            why = "record has no residues" if stop_line is None else "record holds only '*'"
            raise FastaError(path, why, line=line, record=rid)
        return ProteinRecord(rid, sequence, line, desc, lowercase, stop_line is not None)

    lineno = 0
    try:
        raw_lines = iter(handle)
        for lineno, raw in enumerate(raw_lines, 1):
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
            stripped = text.strip()
            if not stripped:
                continue
            if stripped.startswith(">"):
                if header is not None:
                    yield finish()
                fields = stripped[1:].split(maxsplit=1)
                if not fields:
                    raise FastaError(path, "header has no id after '>'", line=lineno)
                rid = fields[0]
                if rid in seen:
                    raise FastaError(path, "duplicate id (ids must be unique)", line=lineno, record=rid)
                seen.add(rid)
                header = (rid, fields[1] if len(fields) > 1 else "", lineno)
                chunks, lowercase, stop_line = [], False, None
                continue
            if header is None:
                raise FastaError(path, "sequence before the first '>' header: not a FASTA file", line=lineno)
            rid = header[0]
            if stop_line is not None:
                raise FastaError(path, "'*' (stop) inside the sequence", line=stop_line, record=rid)
            residues = "".join(stripped.split())  # spaces inside a line are layout, not residues
            if residues.endswith("*"):
                residues, stop_line = residues[:-1], lineno
            bad = _ILLEGAL.search(residues)
            if bad:
                char = residues[bad.start()]
                kind = "a gap" if char in "-." else "a digit" if char.isdigit() else "not a residue"
                raise FastaError(
                    path,
                    f"illegal character {char!r} at column {_column(text, bad.start())} ({kind}); "
                    f"allowed: {RESIDUES} (and a trailing '*')",
                    line=lineno,
                    record=rid,
                )
            upper = residues.upper()
            if upper != residues:
                lowercase = True
            chunks.append(upper)
    except (OSError, EOFError, zlib.error) as err:  # mostly a corrupt or truncated gzip stream
        what = "corrupt or truncated gzip" if isinstance(handle, gzip.GzipFile) else "cannot be read"
        raise FastaError(path, f"{what} ({err})", line=lineno + 1) from None
    if header is not None:
        yield finish()
    elif lineno == 0 or not seen:
        raise FastaError(path, "no records (empty file, or no '>' header)")


def _column(text: str, index_in_residues: int) -> int:
    """1-based column in the raw line of the index-th non-space character."""
    count = -1
    for col, char in enumerate(text, 1):
        if not char.isspace():
            count += 1
            if count == index_in_residues:
                return col
    return len(text)
