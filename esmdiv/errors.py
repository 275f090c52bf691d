"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes.

Exit codes (also in the README and ``esmdiv --help``):

====  =====================================================================================================
0     ACCEPT: the packed path may replace the padded one
10    VALIDATE: the paths differ enough that a person must look before shipping
20    FALLBACK: keep the padded path
2     usage error or bad input (FASTA, checkpoint, options)
3     environment: a package missing or broken, CUDA asked for but absent, a backend or a model unavailable
1     internal error (a bug in esmdiv); never printed after ACCEPT
130   interrupted (Ctrl-C)
143   terminated (SIGTERM, e.g. torchrun stopping the ranks after one died)
====  =====================================================================================================
"""

from __future__ import annotations

from pathlib import Path

EXIT_ACCEPT = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_VALIDATE = 10
EXIT_FALLBACK = 20
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


class EsmdivError(Exception):
    """Base of every error esmdiv expects; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_INTERNAL


class InputError(EsmdivError):
    """The user's input (a file, a record, an option value) cannot be used."""

    exit_code = EXIT_USAGE


class UsageError(InputError):
    """Options that contradict each other or are out of range."""


class FastaError(InputError):
    """A FASTA file that cannot be read as protein sequences.

    The message always names the file, and the record and line where there is one.
    """

    def __init__(self, path: str | Path, why: str, line: int | None = None, record: str | None = None):
        self.path = str(path)
        self.line = line
        self.record = record
        self.why = why
        where = self.path
        if record is not None:
            where += f", record '{record}'"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {why}")


class CheckpointError(InputError):
    """A checkpoint or model folder that exists but cannot be used (corrupt, wrong shape, unsafe)."""


class EnvironmentUnavailable(EsmdivError):
    """Something the run needs is missing here: CUDA, an attention backend, a model's weights."""

    exit_code = EXIT_ENVIRONMENT


class OutputError(InputError):
    """A report cannot be written where the user asked."""


class Terminated(EsmdivError):
    """The process was asked to stop (SIGTERM) before it had a verdict: no verdict, a partial report."""

    exit_code = EXIT_TERMINATED


def missing_package(error: ImportError) -> str | None:
    """The top-level package a failed import names when it is not esmdiv's own (a package missing
    or broken in this Python: the environment's, exit 3), else ``None`` (an import inside esmdiv
    failed: a bug)."""
    top = (getattr(error, "name", None) or "").split(".")[0]
    return top if top and top != "esmdiv" else None
