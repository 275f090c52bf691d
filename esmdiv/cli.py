"""The ``esmdiv`` command line: parses options, calls the library, renders, exits.

Nothing else lives here: the work is in plain functions that tests call directly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.text import Text

from esmdiv import __version__
from esmdiv.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EsmdivError, OutputError
from esmdiv.partial import PartialRun, write_partial  # no torch: cheap to import here

EXIT_CODES_HELP = (
    "Exit codes: 0 ACCEPT, 10 VALIDATE, 20 FALLBACK, 2 usage or bad input, "
    "3 environment (no CUDA, backend or model unavailable), 1 internal error, 130 interrupted."
)

app = typer.Typer(
    help="Audit whether a packed, padding-free ESM-2 forward diverges from fair-esm's padded one.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console(width=None if sys.stdout.isatty() else 120)
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"esmdiv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


@contextlib.contextmanager
def guard(debug: bool) -> Iterator[None]:
    """Expected errors -> one line and their exit code; anything else -> exit 1, never a verdict."""
    # Messages print as plain Text: a file name or record id such as '[/]' is not rich markup.
    try:
        yield
    except EsmdivError as err:
        stderr.print(Text.assemble(("error: ", "red"), _one_line(err)), soft_wrap=True)
        if debug:
            stderr.print(traceback.format_exc(), highlight=False, markup=False)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("interrupted: no verdict", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - fail closed: an unexpected error is exit 1, never ACCEPT
        stderr.print(
            Text.assemble(
                ("internal error: ", "red"),
                f"{type(err).__name__}: {_one_line(err)} (no verdict; rerun with --debug for the traceback)",
            ),
            soft_wrap=True,
        )
        if debug:
            stderr.print(traceback.format_exc(), highlight=False, markup=False)
        raise typer.Exit(EXIT_INTERNAL) from None


def _one_line(err: BaseException) -> str:
    """The error's message on one line (some library errors span several)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


@contextlib.contextmanager
def partial_report_on_failure(json_path: Optional[Path], partial: PartialRun) -> Iterator[None]:
    """When the run fails, write ``partial.to_dict(error)`` to ``--json`` (``"complete": false``,
    no verdict) so the path never holds a stale or invented verdict; then let the error go on."""
    try:
        yield
    except BaseException as err:
        if json_path is not None and not isinstance(err, (typer.Exit, OutputError)):
            with contextlib.suppress(Exception):
                write_partial(partial.to_dict(err), json_path)
                stdout.print(Text(f"partial report written to {json_path} (complete: false, no verdict)"))
        raise


def check_output_path(path: Path) -> None:
    """Refuse a ``--json`` path that cannot be written before the run, not after it."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; --json needs a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write the report there ({parent} is not a writable folder)")


@app.command(epilog=EXIT_CODES_HELP)
def check(
    fasta: Path = typer.Argument(..., help="Protein FASTA file (plain or gzip).", show_default=False),
    model: str = typer.Option(
        "random:8M", "--model", "-m",
        help="fair-esm name (esm2_t33_650M_UR50D), fair-esm .pt, .safetensors, Hugging Face ESM folder, "
        "or random:<8M|35M|150M|650M|3B|15B>[:seed] (seeded random weights).",
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    dtype: Optional[str] = typer.Option(None, help="fp16, bf16 or fp32 [default: fp16 on CUDA, fp32 on CPU]."),
    backend: str = typer.Option("auto", help="Packed attention: auto, flash-attn, torch or reference."),
    head: str = typer.Option("auto", help="Prediction head: auto (the checkpoint's own, else proxy), model or proxy."),
    long: str = typer.Option("truncate", "--long", help="Over 1022 residues: truncate, skip, error or full."),
    max_tokens: Optional[int] = typer.Option(
        None, help="Token budget per batch, padded [default: 16384 on CUDA, 4096 on CPU]."
    ),
    accept_agreement: float = typer.Option(0.99, help="ACCEPT needs label agreement above this fraction."),
    validate_agreement: float = typer.Option(0.95, help="Below this agreement fraction: FALLBACK."),
    min_cosine: float = typer.Option(0.99, help="Every sequence's pooled cosine must be above this."),
    max_mad: float = typer.Option(0.01, help="Every sequence's pooled mean abs diff must be below this."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON here."),
    worst: int = typer.Option(10, help="Rows in the worst-sequences table."),
    debug: bool = typer.Option(False, help="Show tracebacks."),
) -> None:
    """Run both paths over FASTA and print the verdict; the exit code is the verdict's."""
    partial = PartialRun(dict(
        fasta=str(fasta), model=model, device=device, dtype=dtype, backend=backend, head=head, long=long,
        max_tokens=max_tokens, accept_agreement=accept_agreement, validate_agreement=validate_agreement,
        min_cosine=min_cosine, max_mad=max_mad,
    ))
    # Imports inside: Ctrl-C while torch loads is still exit 130 and still leaves a partial report.
    with guard(debug), partial_report_on_failure(json_path, partial):
        from esmdiv.audit import AuditConfig, run_audit
        from esmdiv.decision import Thresholds
        from esmdiv.report import PathProgress, render_summary, write_json

        if json_path is not None:
            check_output_path(json_path)
        config = AuditConfig(
            fasta=fasta,
            model=model,
            device=device,
            dtype=dtype,
            backend=backend,
            head=head,
            long_policy=long,
            max_tokens=max_tokens,
            thresholds=Thresholds(accept_agreement, validate_agreement, min_cosine, max_mad),
        )
        with PathProgress(stderr) as progress:
            result = run_audit(config, progress=progress, partial=partial)
        partial.stage = "report"
        if json_path is not None:
            write_json(result.to_dict(), json_path)
        render_summary(result, stdout, worst=worst)
        if json_path is not None:
            stdout.print(Text(f"report written to {json_path}"))
    raise typer.Exit(result.decision.verdict.exit_code)


def main() -> None:
    app(prog_name="esmdiv")


if __name__ == "__main__":
    sys.exit(main())
