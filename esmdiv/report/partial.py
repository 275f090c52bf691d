"""What a run that did not finish can still say, for the report it never completed.

:func:`~esmdiv.audit.run.run_audit` fills a :class:`PartialRun` as it goes: the stage it reached, the
device, dtype and backend it resolved, the model it loaded, the input it counted and the sequences
it has already compared. When the run fails (bad input, a fault, Ctrl-C) the CLI writes
:meth:`PartialRun.to_dict` where ``--json`` asked for the report, so a pipeline finds evidence of
this run, never a stale or invented verdict: ``"complete": false`` and ``"verdict": null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esmdiv import __version__
from esmdiv.errors import EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_INTERRUPTED, EsmdivError, missing_package
from esmdiv.input.sequences import InputReport
from esmdiv.report.json_report import write_json

#: The stages of ``esmdiv check``, in order; ``error.stage`` in a partial report is the one that failed.
STAGES = ("options", "input", "model", "audit", "decision", "report")


@dataclass
class PartialRun:
    """Filled in place by ``run_audit``; every field holds only what is already known."""

    options: dict[str, Any]  # the options as given on the command line
    stage: str = "options"
    resolved: dict[str, Any] = field(default_factory=dict)  # device, dtype, backend, max_tokens
    model: dict[str, Any] | None = None
    inputs: InputReport | None = None
    finished: list = field(default_factory=list)  # SequenceResult of every batch compared so far

    def to_dict(self, error: BaseException) -> dict:
        """The partial report: no verdict, no summary, the error and the evidence gathered.

        ``error.stage`` is the stage reached here, or the error's own ``stage`` where it has one
        (another torchrun rank's failure names the stage that rank failed at)."""
        return {
            "schema_version": 1,
            "complete": False,
            "esmdiv_version": __version__,
            "verdict": None,
            "error": {
                "stage": getattr(error, "stage", None) or self.stage,
                "type": type(error).__name__,
                "message": str(error) or type(error).__name__,
                "exit_code": exit_code_for(error),
            },
            "options": self.options,
            **self.resolved,
            "model": self.model,
            "input": self.inputs.to_dict() if self.inputs is not None else None,
            "sequences_done": len(self.finished),
            "sequences": [s.to_dict() for s in self.finished],
        }


def exit_code_for(error: BaseException) -> int:
    """The exit code the CLI ends with for ``error`` (see :mod:`esmdiv.errors`)."""
    if isinstance(error, EsmdivError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, ImportError) and missing_package(error):  # a package missing or broken here
        return EXIT_ENVIRONMENT
    return EXIT_INTERNAL


def write_partial(report: dict, path: str | Path) -> None:
    """Write a partial report as a full one is written (:func:`~esmdiv.report.json_report.write_json`:
    atomically, the same file mode, non-finite numbers as null).

    Deliberately free of torch: it must work when the run was interrupted while torch itself was
    still importing.
    """
    write_json(report, path, "--json")
