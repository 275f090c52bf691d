"""FASTA from standard input (``esmdiv check -``), spooled to a temporary file.

The audit reads its input twice (the whole file is validated before any model loads, then
streamed through the model), and a pipe can be read only once; so standard input is copied to a
private temporary file first, read from there, and deleted when the run ends. Reports name the
input :data:`STDIN_NAME`; its size and sha256 are those of the bytes that came through the pipe
(compressed ones as they came: gzip, bzip2 and xz are read as from a file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from esmdiv.errors import FastaError, UsageError

#: The argument that means standard input, and how reports and errors name it.
STDIN_ARG = "-"
STDIN_NAME = "<stdin>"


def is_stdin(path: str | Path | None) -> bool:
    """``-``: the FASTA comes on standard input."""
    return path is not None and str(path) == STDIN_ARG


@contextlib.contextmanager
def spooled_stdin(stream: BinaryIO, directory: str | Path | None = None) -> Iterator[Path]:
    """Copy ``stream`` (standard input's bytes) to a temporary file, yield its path, delete it.

    A terminal is refused (``UsageError``): a user who typed ``-`` by mistake would otherwise
    wait on a prompt that never says what it wants.
    """
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        raise UsageError(
            f"FASTA '{STDIN_ARG}' reads standard input, which is a terminal: pipe the file in "
            "(cat proteins.fasta | esmdiv check -) or give its path"
        )
    fd, name = tempfile.mkstemp(prefix="esmdiv-stdin-", suffix=".fasta", dir=directory)
    path = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as spool:
                shutil.copyfileobj(stream, spool, 1 << 20)
        except OSError as err:
            raise FastaError(STDIN_NAME, f"cannot be read or spooled to {path} ({err.strerror or err})") from None
        yield path
    finally:
        path.unlink(missing_ok=True)
