"""The ``esmdiv`` commands: parse options, call a driver, render with :mod:`esmdiv.cli.console`, exit.

Nothing else lives here: the work is in plain functions that tests call directly. Options that
several commands share (``--model``, ``--device``, ``--dtype``, ``--backend``, ``--compile``,
``--long``, ``--debug``) are declared once, as the ``Annotated`` types below.

Imports of torch-backed modules stay inside each command's :func:`guard`: Ctrl-C while torch is
still loading is then exit 130 like any other, and ``check`` still leaves its partial report.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from esmdiv import IMPORTED_AT, __version__
from esmdiv.audit.clock import StageClock
from esmdiv.cli import console, exit_now, package_problem
from esmdiv.cli.choices import (
    Dtype,
    Evidence,
    Gate,
    HeadActivation,
    LongPolicy,
    Reference,
    Workload,
    backend_metavar,
    complete_backends,
    plain,
)
from esmdiv.cli.console import stderr, stdout
from esmdiv.distributed import current_world, finish  # no torch until a process group is joined
from esmdiv.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EsmdivError,
    OutputError,
    Terminated,
    UsageError,
    missing_package,
)
from esmdiv.input.stdin import STDIN_NAME, is_stdin, spooled_stdin
from esmdiv.report import json_report
from esmdiv.report.files import is_stdout
from esmdiv.report.partial import PartialRun, exit_code_for, write_partial  # no torch: cheap to import here

if TYPE_CHECKING:
    from esmdiv.audit.results import AuditResult
    from esmdiv.audit.run import AuditConfig

EXIT_CODES_HELP = (
    "Exit codes: 0 ACCEPT, 10 VALIDATE, 20 FALLBACK, 2 usage or bad input, "
    "3 environment (no CUDA, backend or model unavailable; under torchrun, a rank dead or hung), "
    "1 internal error, 130 interrupted, 143 terminated (SIGTERM)."
)
SELFTEST_EXIT_HELP = (
    "Exit codes: 0 passed (clean run ACCEPT, every injected bug caught), 20 failed (a bug slipped "
    "through or the clean run was not ACCEPT), 2 usage, 3 environment, 1 internal error."
)
BENCH_EXIT_HELP = (
    "Exit codes: 0 done, 2 usage or bad input, 3 environment (no CUDA, backend, model or "
    "transformers unavailable), 1 internal error, 130 interrupted."
)

# --- options shared by several commands -------------------------------------------------------------

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="ESMDIV_MODEL",
        help="fair-esm name (esm2_t33_650M_UR50D), fair-esm .pt, .safetensors, a sharded *.index.json, "
        "Hugging Face ESM folder or model id (facebook/esm2_t33_650M_UR50D, from the Hugging Face cache), "
        "or random:<8M|35M|150M|650M|3B|15B>[:seed] (seeded random weights).",
    ),
]
DeviceOption = Annotated[
    str, typer.Option(envvar="ESMDIV_DEVICE", help="auto (CUDA when present), cpu, cuda or cuda:N.")
]
DtypeOption = Annotated[Dtype | None, typer.Option(help="Default: fp16 on CUDA, fp32 on CPU.")]
BackendOption = Annotated[
    str,
    typer.Option(
        metavar=backend_metavar(),
        autocompletion=complete_backends,
        help="Packed attention kernel(s): auto (the first that runs here of flash-attn, fa4, torch; reference on "
        "CPU), all (every one that runs here), or one or more of flash-attn (FlashAttention 2/3), fa4 "
        "(FlashAttention-4), torch (varlen_attn), reference (exact attention), comma-separated (torch,fa4): "
        "each runs on the same batches against the same padded path (check: one verdict per kernel, the exit "
        "code the worst; bench: one row per kernel).",
    ),
]
SelftestBackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        metavar=backend_metavar(several=False),
        autocompletion=complete_backends,
        help="The packed attention kernel the bugs are injected into (one): auto, flash-attn, fa4, torch, reference.",
    ),
]
CompileOption = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the packed path's dense regions (default: on CUDA).",
    ),
]
LongOption = Annotated[LongPolicy, typer.Option("--long", help="Sequences over 1022 residues.")]
DebugOption = Annotated[bool, typer.Option(help="Show tracebacks.")]


class OneLineUsageErrors(TyperGroup):
    """A command's options that do not parse (``--backend xformers``, ``--min-cosine abc``) end
    as every other bad input does: one line on stderr, exit 2, and for ``check --json PATH`` a
    partial report at PATH, so a report from an earlier run is never left there."""

    def invoke(self, ctx: typer.Context) -> object:
        protected = getattr(ctx, "_protected_args", None)  # click >= 8.2; protected_args before
        given = [*(ctx.protected_args if protected is None else protected), *ctx.args]
        try:
            return super().invoke(ctx)
        except _USAGE_ERRORS as err:
            where = err.ctx.command_path if err.ctx is not None else "esmdiv"
            message = f"{_one_line(err.format_message())} (see {where} --help)"
            stderr.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
            json_path = _option_value(given, "--json")
            if given[:1] == ["check"] and json_path is not None:
                partial = PartialRun({"command_line": shlex.join(given)})
                with contextlib.suppress(Exception):
                    write_partial(partial.to_dict(UsageError(message)), json_path)
            raise typer.Exit(EXIT_USAGE) from None


def _usage_error_types() -> tuple[type[Exception], ...]:
    """click's ``UsageError``: typer's own copy of click (typer >= 0.2x vendors it) and click's."""
    found = {cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"}
    with contextlib.suppress(ImportError):
        import click

        found.add(click.UsageError)
    return tuple(found)


_USAGE_ERRORS = _usage_error_types()


def _option_value(args: list[str], name: str) -> str | None:
    """The value after ``name`` (``--json PATH`` or ``--json=PATH``) in raw arguments, if any."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def _human(*report_paths: Path | None) -> Console:
    """Where words for people go: stdout, or stderr when a report itself goes to stdout (``-``)."""
    return stderr if any(is_stdout(p) for p in report_paths) else stdout


def _one_stdout(**report_paths: Path | None) -> None:
    """At most one report may go to standard output."""
    to_stdout = [f"--{name.replace('_', '-')} -" for name, path in report_paths.items() if is_stdout(path)]
    if len(to_stdout) > 1:
        raise UsageError(f"{' and '.join(to_stdout)}: only one report can go to standard output")


def _written(path: Path) -> str:
    return "standard output" if is_stdout(path) else str(path)


app = typer.Typer(
    help="Audit whether a packed, padding-free ESM-2 forward diverges from fair-esm's padded one.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=OneLineUsageErrors,
)


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
        _expected_error(_one_line(err), err.exit_code, debug)
    except KeyboardInterrupt:
        stderr.print("interrupted: no verdict", highlight=False)
        if debug:
            stderr.print(traceback.format_exc(), highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except ImportError as err:
        package = missing_package(err)
        if package is None:  # an import inside esmdiv: a bug
            _internal_error(err, debug)
        _expected_error(package_problem(package, err), exit_code_for(err), debug)
    except Exception as err:  # noqa: BLE001 - fail closed: an unexpected error is exit 1, never ACCEPT
        _internal_error(err, debug)


def _expected_error(line: str, code: int, debug: bool) -> NoReturn:
    """An error esmdiv expects (bad input, the environment): one line, its exit code."""
    stderr.print(Text.assemble(("error: ", "red"), line), soft_wrap=True)
    if debug:
        stderr.print(traceback.format_exc(), highlight=False, markup=False)
    raise typer.Exit(code) from None


def _internal_error(err: Exception, debug: bool) -> NoReturn:
    """An unexpected error: one line, exit 1, never a verdict."""
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
def partial_report_on_failure(json_path: Path | None, partial: PartialRun) -> Iterator[None]:
    """When the run fails, write ``partial.to_dict(error)`` to ``--json`` (``"complete": false``,
    no verdict) so the path never holds a stale or invented verdict; then let the error go on.

    If that write fails too, the file an earlier run left there is removed and the error says so
    (its exit code stays the run's): a pipeline must never read a stale verdict there."""
    try:
        yield
    except typer.Exit:
        raise
    except BaseException as err:
        if json_path is None or (not is_stdout(json_path) and json_path.is_dir()):  # nothing can be written
            raise
        try:
            write_partial(partial.to_dict(err), json_path)
        except Exception as failed:  # noqa: BLE001 - whatever stopped the write, the old file must go
            raise UnwrittenPartialReport(err, failed, json_path) from err
        _human(json_path).print(Text(f"partial report written to {_written(json_path)} (complete: false, no verdict)"))
        raise


class UnwrittenPartialReport(OutputError):
    """A run failed and its partial report could not be written: one line for both, the run's exit
    code, and the report path emptied of what an earlier run left there."""

    def __init__(self, error: BaseException, failed: BaseException, path: Path):
        self.exit_code = exit_code_for(error)
        if isinstance(error, KeyboardInterrupt):
            message = "interrupted"
        elif isinstance(error, EsmdivError):
            message = _one_line(error)
        else:
            message = f"{type(error).__name__}: {_one_line(error)} (internal error)"
        message += "; no verdict"
        if not isinstance(error, OutputError):  # else the same write already said why
            why = f"{type(failed).__name__}: {_one_line(failed)}"
            message += f"; the partial report could not be written either ({why})"
        try:
            if not is_stdout(path):  # standard output cannot be taken back
                path.unlink(missing_ok=True)
                message += f"; nothing is left at {path}"
        except OSError as kept:
            message += f"; {path} could not be removed ({kept.strerror or kept}): do not trust it"
        super().__init__(message)


# --- esmdiv check ------------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def check(
    fasta: Path = typer.Argument(
        ..., help="Protein FASTA file (plain, gzip, bzip2 or xz); '-' reads standard input.", show_default=False
    ),
    model: ModelOption = "random:8M",
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    backend: BackendOption = "auto",
    compile: CompileOption = None,
    head: str = typer.Option(
        "auto",
        help="Prediction head: auto (the checkpoint's own, else proxy), model, proxy, "
        "or a head file (.pt/.safetensors).",
    ),
    long: LongOption = "truncate",
    max_tokens: int | None = typer.Option(
        None, help="Token budget per batch, padded (default: 16384 on CUDA, 4096 on CPU)."
    ),
    accept_agreement: float = typer.Option(0.99, help="ACCEPT needs label agreement above this fraction."),
    validate_agreement: float = typer.Option(0.95, help="Below this agreement fraction: FALLBACK."),
    min_cosine: float = typer.Option(0.99, help="Every sequence's pooled cosine must be above this."),
    max_mad: float = typer.Option(0.01, help="Every sequence's pooled mean abs diff must be below this."),
    evidence: Evidence = typer.Option(
        "sample",
        help="The evidence pass that tells a bug from rounding (high-precision reference, packed algorithm at its "
        "precision, other neighbours, position probe): on a 'sample' of about --evidence-tokens tokens plus every "
        "sequence that broke a gate, on 'all' sequences, or 'off' (then tanh GELU, fp16 rotary and positions "
        "that run on across a pack go unseen).",
    ),
    evidence_tokens: int = typer.Option(
        4096, help="Size of the evidence sample in tokens (the shortest and longest sequences and lengths between)."
    ),
    reference: Reference = typer.Option(
        "none",
        help="fp32: the evidence pass on every sequence, as --evidence all (kept for older scripts); "
        "the reference runs fp32 on CUDA, fp64 on CPU.",
    ),
    max_reference_ratio: float = typer.Option(
        2.0, help="With a reference: packed's mean distance to it may be at most this times the padded path's."
    ),
    max_invariance_ratio: float = typer.Option(
        2.0, help="With --invariance: packed's largest movement may be at most this times the padded path's."
    ),
    max_algorithm_error: float | None = typer.Option(
        None,
        help="With a reference: the packed algorithm at reference precision may differ from it by this "
        "rel-L2, of the residue rows and of the pooled embedding (default: 0.1 sqrt(eps) of the reference "
        "dtype: 3.5e-5 fp32, 1.5e-9 fp64).",
    ),
    trace: bool = typer.Option(False, "--trace", help="Compare the hidden states after every layer."),
    trace_threshold: float = typer.Option(1e-2, help="rel-L2 at which --trace names the first layer crossing it."),
    mlm: bool | None = typer.Option(
        None,
        "--mlm/--no-mlm",
        help="MLM metrics (token agreement, JS divergence, perplexity) (default: when the model has an LM head).",
    ),
    mlm_sample: int = typer.Option(64, help="Sequences (first in the file) in the 15 %-masked perplexity sample."),
    invariance: bool = typer.Option(
        False,
        "--invariance",
        help="The evidence pass (shuffled neighbours included) on every sequence, as --evidence all.",
    ),
    proxy_seeds: str = typer.Option("42", help="Comma-separated seeds of proxy heads; the lowest agreement gates."),
    head_activation: HeadActivation = typer.Option("relu", help="Activation between the Linears of a --head file MLP."),
    collective_timeout: float = typer.Option(
        1800.0,
        help="Under torchrun: seconds rank 0 waits at the gather for a rank that sends nothing (dead or hung) "
        "before failing the run, exit 3, naming it. Must cover the slowest rank's lag behind the fastest.",
    ),
    extra_features: Path | None = typer.Option(
        None, help=".npy (n_records, k) features concatenated before the pooled embedding for a --head file."
    ),
    gate: Gate = typer.Option(
        "point",
        help="The ACCEPT bar reads the agreement's point estimate or its lower 'bound' "
        "(the FALLBACK floor: the point).",
    ),
    confidence: float = typer.Option(0.95, help="Confidence of the agreement's Clopper-Pearson lower bound."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Write the full report as JSON here ('-': to stdout, the summary then to stderr)."
    ),
    junit_path: Path | None = typer.Option(
        None, "--junit", help="Write JUnit XML here for CI: one test case per gate and one per sequence ('-': stdout)."
    ),
    worst: int = typer.Option(10, help="Rows in the worst-sequences table."),
    debug: DebugOption = False,
) -> None:
    """Run both paths over FASTA and print the verdict; the exit code is the verdict's."""
    options = {name: plain(value) for name, value in dict(locals()).items()}  # every option, by parameter name
    partial = PartialRun({name: str(fasta) if name == "fasta" else options[name] for name in PARTIAL_OPTIONS})
    human = _human(json_path, junit_path)
    clock = StageClock(started=IMPORTED_AT)  # timings.wall_s starts when esmdiv was imported
    world = current_world()
    report_path = json_path if world is None or world.is_root else None  # under torchrun, rank 0 reports
    with guard(debug), partial_report_on_failure(report_path, partial):
        from esmdiv.report.files import check_output_path

        _one_stdout(json=json_path, junit=junit_path)
        if json_path is not None:
            check_output_path(json_path, "--json")
        with _fasta_input(fasta) as (path, name):
            options.update(fasta=path, fasta_name=name)
            result = _run_audit(_audit_config(options), partial, clock)
        partial.stage = "report"
        _write_audit_reports(result, json_path, junit_path, clock)  # a failed write shows no verdict
        console.render_summary(result, human, worst=worst)
        for label, path in (("report", json_path), ("JUnit XML", junit_path)):
            if path is not None:
                human.print(f"{label} written to {_written(path)}", highlight=False)
    raise typer.Exit(result.decision.verdict.exit_code)


@contextlib.contextmanager
def _fasta_input(fasta: Path) -> Iterator[tuple[Path, str | None]]:
    """The FASTA to read and how reports name it: a path as given, or ``-``: standard input
    spooled to a temporary file (deleted after the run), named ``<stdin>``."""
    if not is_stdin(fasta):
        yield fasta, None
        return
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):  # under torchrun
        raise UsageError("FASTA '-': torchrun's ranks cannot share standard input; give a file")
    with spooled_stdin(sys.stdin.buffer) as path:
        yield path, STDIN_NAME


#: The options a partial report records in its ``options`` block, in order.
PARTIAL_OPTIONS = (
    "fasta",
    "model",
    "device",
    "dtype",
    "backend",
    "head",
    "long",
    "max_tokens",
    "accept_agreement",
    "validate_agreement",
    "min_cosine",
    "max_mad",
)
#: check's options whose AuditConfig field has another name.
CONFIG_NAMES = {"long": "long_policy", "reference": "high_precision"}


def _audit_config(options: dict) -> AuditConfig:
    """check's options as an AuditConfig: the thresholds' options by the Thresholds field names,
    the others by AuditConfig's (through :data:`CONFIG_NAMES`), the proxy seeds parsed."""
    from dataclasses import fields

    from esmdiv.audit.run import AuditConfig
    from esmdiv.measure.decision import Thresholds
    from esmdiv.model.heads import parse_seeds

    given = {CONFIG_NAMES.get(name, name): value for name, value in options.items()}
    given["thresholds"] = Thresholds(**{f.name: options[f.name] for f in fields(Thresholds)})
    given["proxy_seeds"] = parse_seeds(options["proxy_seeds"])
    return AuditConfig(**{f.name: given[f.name] for f in fields(AuditConfig) if f.name in given})


def _run_audit(config: AuditConfig, partial: PartialRun, clock: StageClock | None = None) -> AuditResult:
    """The audit with progress bars; a non-root torchrun rank exits here (its part done: rank 0
    reports, and :func:`main` ends this rank with rank 0's code)."""
    from esmdiv.audit.results import FollowerResult
    from esmdiv.audit.run import run_audit

    with console.PathProgress(stderr) as progress:
        result = run_audit(config, progress=progress, partial=partial, clock=clock)
    if isinstance(result, FollowerResult):
        raise typer.Exit(0)
    return result


def _write_audit_reports(
    result: AuditResult, json_path: Path | None, junit_path: Path | None, clock: StageClock
) -> None:
    """JUnit first, then the JSON, whose ``timings`` end here: JUnit is its ``report`` stage and
    the wall time stops as the JSON is serialised. Called before the terminal shows a verdict, so
    a report that cannot be written leaves no verdict on the screen."""
    from esmdiv.audit.clock import STAGES
    from esmdiv.report.files import finite_or_none
    from esmdiv.report.junit import write_junit

    if json_path is None and junit_path is None:
        return
    data = result.to_dict()
    if junit_path is not None:
        write_junit(finite_or_none(data), junit_path)
    clock.lap("report")
    data["timings"].update(clock.report(STAGES))
    if json_path is not None:
        json_report.write_json(finite_or_none(data), json_path)


# --- esmdiv selftest ---------------------------------------------------------------------------------


@app.command(epilog=SELFTEST_EXIT_HELP)
def selftest(
    model: ModelOption = "random:8M",
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    backend: SelftestBackendOption = "auto",
    fasta: Path | None = typer.Option(None, help="Sequences to audit (default: the shipped seed18 fixture)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the table as JSON here ('-': stdout)."),
    debug: DebugOption = False,
) -> None:
    """Inject each known packed-path bug in turn and check that the audit catches every one."""
    from esmdiv.selftest import passed, run_selftest

    with guard(debug):
        table = console.SelftestTable(model, stderr)
        rows, settings = run_selftest(model, device, plain(dtype), backend, fasta, on_row=table.add)
        ok = passed(rows)
        console.render_selftest(table, settings, ok, _human(json_path))
        if json_path is not None:
            json_report.write_json({"passed": ok, "settings": settings, "rows": [r.to_dict() for r in rows]}, json_path)
    raise typer.Exit(0 if ok else 20)


# --- esmdiv report -----------------------------------------------------------------------------------


@app.command("report", epilog="Exit codes: 0 written, 2 unreadable report or bad options, 3 matplotlib not installed.")
def report_command(
    run_json: Path = typer.Argument(
        ..., help="A report written by esmdiv check --json ('-': read it from stdin).", show_default=False
    ),
    html_path: Path | None = typer.Option(None, "--html", help="Write one self-contained HTML page (plots embedded)."),
    markdown_path: Path | None = typer.Option(
        None, "--markdown", help="Write Markdown; its plots go to <name>_files/ beside it."
    ),
    junit_path: Path | None = typer.Option(None, "--junit", help="Write JUnit XML from the saved report."),
    plots: bool = typer.Option(
        True, "--plots/--no-plots", help="Markdown only: --no-plots writes text only (CI job summaries)."
    ),
    debug: DebugOption = False,
) -> None:
    """Turn a run's JSON into a page for people (verdict, reasons, plots) and/or JUnit XML."""
    from esmdiv.report.junit import write_junit
    from esmdiv.report.schemas import read_report

    human = _human(html_path, markdown_path, junit_path)
    with guard(debug):
        if html_path is None and markdown_path is None and junit_path is None:
            raise UsageError("nothing to write: give --html PATH, --markdown PATH and/or --junit PATH")
        _one_stdout(html=html_path, markdown=markdown_path, junit=junit_path)
        if is_stdout(markdown_path) and plots:
            raise UsageError("--markdown -: standard output takes text only; add --no-plots")
        data = read_report(run_json)
        source = STDIN_NAME if is_stdin(run_json) else str(run_json)
        if html_path is not None or markdown_path is not None:
            from esmdiv.report.pages import write_reports
            from esmdiv.report.plots import require_matplotlib

            if html_path is not None or plots:
                require_matplotlib()
            written = write_reports(data, html_path, markdown_path, plots_in_markdown=plots, source=source)
            for path in written:
                human.print(f"written {_written(path)}", highlight=False)
        if junit_path is not None:
            write_junit(data, junit_path)
            human.print(f"written {_written(junit_path)}", highlight=False)


# --- esmdiv env --------------------------------------------------------------------------------------


@app.command("env", epilog="Exit codes: 0 printed, 2 bad input or options, 3 a model or device unavailable.")
def env_command(
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    model: str | None = typer.Option(None, "--model", "-m", help="Also load this model and checksum its weights."),
    fasta: Path | None = typer.Option(None, "--fasta", help="Also count this FASTA's records and checksum it."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the fingerprint as JSON here ('-': stdout)."),
    debug: DebugOption = False,
) -> None:
    """Print this machine's fingerprint (what every report records) and which attention backends run here."""
    from esmdiv.forward.device import resolve_device, resolve_dtype
    from esmdiv.report.fingerprint import environment
    from esmdiv.report.schemas import SCHEMA_VERSION

    with guard(debug):
        dev = resolve_device(device)
        _, torch_dtype = resolve_dtype(plain(dtype), dev)
        records = None
        if fasta is not None:
            from esmdiv.input.fasta import iter_fasta

            records = sum(1 for _ in iter_fasta(fasta))
        loaded = None
        if model is not None:
            from esmdiv.model.loading import load_model

            loaded = load_model(model, dev, torch_dtype)
        env = environment(dev, torch_dtype, None, loaded, fasta, records)
        console.render_environment(env, _human(json_path))
        if json_path is not None:
            json_report.write_json({"schema_version": SCHEMA_VERSION, "environment": env}, json_path)
            _human(json_path).print(f"fingerprint written to {_written(json_path)}", highlight=False)


# --- esmdiv bench ------------------------------------------------------------------------------------


@app.command(epilog=BENCH_EXIT_HELP)
def bench(
    fasta: Path | None = typer.Argument(
        None, help="Protein FASTA to time (default: the lognormal workload).", show_default=False
    ),
    model: ModelOption = "random:8M",
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    backend: BackendOption = "auto",
    max_tokens: int | None = typer.Option(
        None,
        help="Token budget per batch, padded; the same batches for every path (default: 16384 on CUDA, 4096 on CPU).",
    ),
    workload: Workload | None = typer.Option(
        None, help="lognormal (seeded synthetic) or fasta (default: fasta when a FASTA is given, else lognormal)."
    ),
    n: int = typer.Option(256, "--n", help="Sequences in the lognormal workload."),
    seed: int = typer.Option(0, help="Seed of the lognormal workload (n=256 seed=0: 75,807 tokens)."),
    long: LongOption = "truncate",
    repeats: int = typer.Option(5, help="Timed passes over the whole workload per path (the median is reported)."),
    warmup: int = typer.Option(1, help="Untimed passes per path before timing."),
    compile: CompileOption = None,
    compile_mode: str | None = typer.Option(
        None,
        help="torch.compile mode for the packed path's dense regions (e.g. max-autotune-no-cudagraphs: "
        "Triton GEMMs with fused epilogues; default: torch's default).",
    ),
    paths: str | None = typer.Option(
        None,
        help="Paths to time, comma-separated: padded,packed,hf "
        "(default: all three; hf only where transformers imports).",
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the results as JSON here ('-': stdout)."),
    write_fasta: Path | None = typer.Option(
        None, "--write-fasta", help="Write the workload as FASTA here and exit (nothing is timed; .gz compresses)."
    ),
    debug: DebugOption = False,
) -> None:
    """Time fair-esm's padded forward, the packed forward and Hugging Face EsmModel (sdpa) on one workload."""
    from esmdiv.bench import BenchConfig, make_workload, parse_paths, run_bench
    from esmdiv.forward.device import default_compile, resolve_device
    from esmdiv.input.workloads import write_fasta as write_workload_fasta

    with guard(debug):
        config = BenchConfig(
            model=model,
            device=device,
            dtype=plain(dtype),
            backend=backend,
            max_tokens=max_tokens,
            fasta=fasta,
            workload=plain(workload),
            n=n,
            seed=seed,
            long_policy=plain(long),
            repeats=repeats,
            warmup=warmup,
            paths=parse_paths(paths) if paths is not None else None,
            packed_kwargs={
                "compile": default_compile(resolve_device(device)) if compile is None else compile,
                **({"compile_mode": compile_mode} if compile_mode else {}),
            },
            command="esmdiv " + shlex.join(sys.argv[1:]),
        )
        if write_fasta is not None:
            chosen = make_workload(config)
            count = write_workload_fasta(chosen.sequences, write_fasta)
            stdout.print(f"wrote {count:,} sequences ({chosen.tokens:,} tokens, {chosen.describe()}) to {write_fasta}")
            raise typer.Exit(0)
        result = run_bench(config, log=lambda message: stderr.print(message, highlight=False))
        if json_path is not None:
            json_report.write_json(result.to_dict(), json_path)
        console.render_bench(result, _human(json_path))
        if json_path is not None:
            _human(json_path).print(f"results written to {_written(json_path)}")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    code = _run_app()
    # From here the code is final (the reports are written): a SIGTERM, such as torchrun stopping
    # this rank once another has exited, ends the process with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: exit_now(code))
    # A torchrun rank ends with rank 0's code, once rank 0 is done (see esmdiv.distributed.finish).
    final = finish(code)
    # Ignored, not handled, from here: the interpreter's shutdown resets Python handlers to the
    # default, and a SIGTERM then (torchrun stopping rank 0 the moment another rank exits) would
    # end the process as -15 instead of its code. An ignored signal stays ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(final)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM before the command is done: fail as Ctrl-C does (no verdict, a partial report, exit
    143). Further SIGTERMs are ignored while that report is written."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated (SIGTERM): no verdict")


def _run_app() -> int:
    """The command's exit code."""
    try:
        app(prog_name="esmdiv")
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        sys.stderr.write(f"{done.code}\n")  # what sys.exit would have printed
        return EXIT_INTERNAL
    except KeyboardInterrupt:  # before or after any command's guard: still the documented code
        sys.stderr.write("interrupted: no verdict\n")
        return EXIT_INTERRUPTED
    except Terminated as err:  # likewise
        sys.stderr.write(f"{err}\n")
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
