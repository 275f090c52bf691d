"""Writing report files: atomically, so a reader (or a CI upload) never sees half a file.

The path ``-`` is standard output (``--json -``): the report is written there whole, and the
command prints its words for people on standard error instead.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from esmdiv.errors import OutputError

#: The output path that means standard output.
STDOUT_PATH = "-"


def is_stdout(path: str | Path | None) -> bool:
    """``-``: the report goes to standard output."""
    return path is not None and str(path) == STDOUT_PATH


def check_output_path(path: Path, option: str) -> None:
    """Refuse a report path that cannot be written before the run, not after it."""
    if is_stdout(path):
        return
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; {option} needs a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write the report there ({parent} is not a writable folder)")


def write_text(text: str | bytes, path: str | Path, option: str) -> None:
    """Write a report file atomically; ``option`` names the flag that asked for it in errors.
    ``-`` writes it to standard output."""
    if is_stdout(path):
        _write_stdout(text, option)
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; {option} needs a file path")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            handle.write(text)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the report ({err.strerror or err})") from None


def _write_stdout(text: str | bytes, option: str) -> None:
    try:
        if isinstance(text, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(text)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as err:
        raise OutputError(f"{option} -: cannot write the report to standard output ({err.strerror or err})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite_or_none(value: Any) -> Any:
    """``value`` as its JSON file will hold it: every non-finite float becomes ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
