"""The ``esmdiv`` command line: parses options, calls the library, renders, exits.

Nothing else lives here: the work is in plain functions that tests call directly.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

from esmdiv import __version__
from esmdiv.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EsmdivError

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
    try:
        yield
    except EsmdivError as err:
        stderr.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        if debug:
            stderr.print(traceback.format_exc(), highlight=False)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("interrupted: no verdict", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - fail closed: an unexpected error is exit 1, never ACCEPT
        stderr.print(
            f"[red]internal error:[/] {type(err).__name__}: {err} (no verdict; rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        if debug:
            stderr.print(traceback.format_exc(), highlight=False)
        raise typer.Exit(EXIT_INTERNAL) from None


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
    from esmdiv.audit import AuditConfig, run_audit
    from esmdiv.decision import Thresholds
    from esmdiv.report import PathProgress, render_summary, write_json

    with guard(debug):
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
            result = run_audit(config, progress=progress)
        if json_path is not None:
            write_json(result.to_dict(), json_path)
        render_summary(result, stdout, worst=worst)
        if json_path is not None:
            stdout.print(f"report written to {json_path}")
    raise typer.Exit(result.decision.verdict.exit_code)



@app.command(epilog="Exit codes: 0 done, 2 usage or bad input, 3 environment (no CUDA, backend, model or "
             "transformers unavailable), 1 internal error, 130 interrupted.")
def bench(
    fasta: Optional[Path] = typer.Argument(None, help="Protein FASTA to time (default: the lognormal workload).",
                                           show_default=False),
    model: str = typer.Option("random:8M", "--model", "-m", help="Same specs as check."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    dtype: Optional[str] = typer.Option(None, help="fp16, bf16 or fp32 (default: fp16 on CUDA, fp32 on CPU)."),
    backend: str = typer.Option("auto", help="Packed attention: auto, flash-attn, torch or reference."),
    max_tokens: Optional[int] = typer.Option(
        None, help="Token budget per batch, padded; the same batches for every path (default: 16384 on CUDA, 4096 on CPU)."
    ),
    workload: Optional[str] = typer.Option(
        None, help="lognormal (seeded synthetic) or fasta (default: fasta when a FASTA is given, else lognormal)."
    ),
    n: int = typer.Option(256, "--n", help="Sequences in the lognormal workload."),
    seed: int = typer.Option(0, help="Seed of the lognormal workload (n=256 seed=0: 75,807 tokens)."),
    long: str = typer.Option("truncate", "--long", help="FASTA records over 1022 residues: truncate, skip, error or full."),
    repeats: int = typer.Option(5, help="Timed passes over the whole workload per path (the median is reported)."),
    warmup: int = typer.Option(1, help="Untimed passes per path before timing."),
    paths: Optional[str] = typer.Option(
        None, help="Paths to time, comma-separated: padded,packed,hf (default: all three; hf only where transformers imports)."
    ),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    write_fasta: Optional[Path] = typer.Option(
        None, "--write-fasta", help="Write the workload as FASTA here and exit (nothing is timed; .gz compresses)."
    ),
    debug: bool = typer.Option(False, help="Show tracebacks."),
) -> None:
    """Time fair-esm's padded forward, the packed forward and Hugging Face EsmModel (sdpa) on one workload."""
    import shlex

    from esmdiv.bench import BenchConfig, make_workload, parse_paths, run_bench
    from esmdiv.bench_report import render_bench
    from esmdiv.report import write_json
    from esmdiv.workloads import write_fasta as write_workload_fasta

    with guard(debug):
        config = BenchConfig(
            model=model, device=device, dtype=dtype, backend=backend, max_tokens=max_tokens, fasta=fasta,
            workload=workload, n=n, seed=seed, long_policy=long, repeats=repeats, warmup=warmup,
            paths=parse_paths(paths) if paths is not None else None,
            command="esmdiv " + shlex.join(sys.argv[1:]),
        )
        if write_fasta is not None:
            chosen = make_workload(config)
            count = write_workload_fasta(chosen.sequences, write_fasta)
            stdout.print(f"wrote {count:,} sequences ({chosen.tokens:,} tokens, {chosen.describe()}) to {write_fasta}")
            raise typer.Exit(0)
        result = run_bench(config, log=lambda message: stderr.print(message, highlight=False))
        if json_path is not None:
            write_json(result.to_dict(), json_path)
        render_bench(result, stdout)
        if json_path is not None:
            stdout.print(f"results written to {json_path}")


def main() -> None:
    app(prog_name="esmdiv")


if __name__ == "__main__":
    sys.exit(main())
