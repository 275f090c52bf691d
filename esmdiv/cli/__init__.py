"""The ``esmdiv`` command line: the only package that imports typer or rich.

:mod:`esmdiv.cli.app` parses options, calls a driver and exits; :mod:`esmdiv.cli.console` renders.
:func:`main` is the command itself: it readies the standard streams and imports the app, so that
what the environment lacks is exit 3 and one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from esmdiv.errors import EXIT_ENVIRONMENT, missing_package


def main() -> None:
    """``esmdiv``: the app, once the standard streams can take what it prints."""
    _ready_streams()
    try:
        from esmdiv.cli.app import main as run
    except ImportError as error:
        package = missing_package(error)
        if package is None:  # one of esmdiv's own modules: a bug, with its traceback
            raise
        print(f"error: {package_problem(package, error)}", file=sys.stderr)
        raise SystemExit(EXIT_ENVIRONMENT) from None
    run()


def package_problem(package: str, error: ImportError) -> str:
    """One line for a package esmdiv needs that is missing or does not import."""
    why = " ".join(str(error).split()) or type(error).__name__
    return (
        f"package '{package}' is missing or broken ({type(error).__name__}: {why}); install esmdiv with its "
        "dependencies in this Python (README: pip install torch==2.13.0 -e .)"
    )


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` at once, its standard streams flushed: no interpreter shutdown,
    for when the code is final and what shutdown does could change it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _ready_streams() -> None:
    # A closed stdout or stderr (``>&-``) is None in Python: what would print there goes nowhere,
    # and the exit code still tells. A stream whose encoding cannot write a character (``…``,
    # ``✓``), as under PYTHONIOENCODING=ascii, writes it as '?' rather than failing the run.
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
        elif hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # a stream that cannot change: left as it is
                pass
