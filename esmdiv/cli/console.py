"""Everything esmdiv prints with rich: the audit summary and verdict, progress bars, the benchmark
table, the self-test table and the environment table. The library returns data; this renders it."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from esmdiv.report.text import describe, environment_table_rows, provenance_line

if TYPE_CHECKING:  # the renderers take results; importing them here would load torch
    from esmdiv.audit.results import AuditResult
    from esmdiv.bench import BenchResult
    from esmdiv.selftest import SelftestRow

stdout = Console(width=None if sys.stdout.isatty() else 120)
stderr = Console(stderr=True)

VERDICT_STYLE = {"ACCEPT": "bold green", "VALIDATE": "bold yellow", "FALLBACK": "bold red"}


def render_summary(result: AuditResult, console: Console, worst: int = 10) -> None:
    """Header, warnings, the worst sequences first, the summary and the verdict panel."""
    s = result.summary
    console.print(f"[bold]model[/]   {_model_label(result.model)}")
    console.print(
        f"[bold]run[/]     device {result.device}, dtype {result.dtype}, attention backend [bold]{result.backend}[/]"
        f"{' (compiled)' if result.compiled else ''}, "
        f"max {result.max_tokens} tokens per batch"
    )
    if result.compile_reason:
        compiled = "compiled" if result.compiled else "not compiled"
        console.print(f"[bold]compile[/] packed path {compiled}: {escape(result.compile_reason)}", highlight=False)
    if result.compiled and result.fc1:
        console.print(f"[bold]fc1[/]     {escape(result.fc1)}", highlight=False)
    for kernel in [k.provenance for k in result.kernels] or ([result.kernel] if result.kernel else []):
        console.print(f"[bold]kernel[/]  {escape(provenance_line(kernel))}", highlight=False)
    if result.kernels:
        console.print(
            f"[bold]kernels[/] {len(result.kernels)} audited against the same padded path; the tables below are "
            f"[bold]{result.kernel['backend']}[/]'s (the worst verdict), one verdict per kernel at the end"
        )
    for name in result.heads:
        console.print(f"[bold]head[/]    {name}")
    if result.environment:
        console.print(f"[bold]env[/]     {escape(describe(result.environment))}", highlight=False)
    inputs = result.inputs
    console.print(
        f"[bold]input[/]   {escape(inputs.path)}: {inputs.records} records, {s['n']} audited, "
        f"{len(inputs.truncated)} truncated, {len(inputs.skipped)} skipped"
    )
    for warning in result.warnings:
        console.print(Text("warning: " + warning, style="yellow"))

    table = Table(
        title=f"Worst {min(worst, len(result.sequences))} of {len(result.sequences)} sequences (lowest cosine first)"
    )
    for column in ("id", "len", "cosine", "MAD", "max |Δ|", "label v1/v2", "conf v1", "conf v2"):
        table.add_column(column, justify="left" if column == "id" else "right")
    ranked = sorted(result.sequences, key=lambda r: (_nan_low(r.metrics.cosine), -_nan_high(r.metrics.mad)))
    for r in ranked[:worst]:
        m = r.metrics
        labels = f"{r.label_v1}/{r.label_v2}" + (" ✗" if r.label_v1 != r.label_v2 else "")
        table.add_row(
            Text(r.id),
            str(r.length),
            f"{m.cosine:.7f}",
            f"{m.mad:.2e}",
            f"{m.max_abs_diff:.2e}",
            labels,
            f"{r.confidence_v1:.4f}",
            f"{r.confidence_v2:.4f}",
        )
    console.print(table)

    p = s["prediction"]
    summary = Table(title="Summary", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("label agreement", f"{p['agreement']:.2%} ({p['n'] - p['disagreements']}/{p['n']})")
    summary.add_row(
        "confidence Pearson r", f"{p['pearson']:.6f}" if p["pearson"] is not None else f"n/a ({p['pearson_note']})"
    )
    summary.add_row("confidence diff mean / max", f"{p['mean_conf_diff']:.2e} / {p['max_conf_diff']:.2e}")
    summary.add_row("cosine min / mean / max", " / ".join(f"{s['cosine'][k]:.7f}" for k in ("min", "mean", "max")))
    summary.add_row("MAD min / mean / max", " / ".join(f"{s['mad'][k]:.2e}" for k in ("min", "mean", "max")))
    summary.add_row("max |Δ| any element", f"{s['max_abs_diff']:.2e}")
    t = result.timings
    if t.get("padded_tokens_per_s") and t.get("packed_tokens_per_s"):
        summary.add_row(
            "tokens/s padded / packed",
            f"{t['padded_tokens_per_s']:,.0f} / {t['packed_tokens_per_s']:,.0f} (audit timing, not a benchmark)",
        )
    console.print(summary)
    details = _details(result)
    if details.row_count:
        console.print(details)
    if result.kernels:
        render_kernel_verdicts(result, console)
    else:
        render_verdict(result.decision, console)


class PathProgress:
    """Progress of the main pass: a bar per path with its tokens/s on a terminal; elsewhere (a CI
    log) a plain line every ``ESMDIV_PROGRESS_EVERY`` seconds (default 5; 0: none) with the stage,
    the tokens done, each path's tokens/s and the time left."""

    def __init__(self, console: Console, every: float | None = None, clock=None):
        import os
        import time

        self.clock = clock or time.perf_counter
        self.console = console
        self.enabled = console.is_terminal
        self.every = float(os.environ.get("ESMDIV_PROGRESS_EVERY", "5")) if every is None else every
        self.bars = Progress(
            TextColumn("{task.description:>7}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.done: dict[str, int] = {}
        self.total = 0
        self.last_line = 0.0

    def __enter__(self) -> PathProgress:
        if self.enabled:
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bars.stop()

    def start(self, total_tokens: int) -> None:
        self.total = total_tokens
        self.last_line = self.clock()
        for path in ("padded", "packed"):
            self.tasks[path] = self.bars.add_task(path, total=total_tokens, rate="")
            self.seconds[path] = 0.0
            self.done[path] = 0

    def stage(self, name: str) -> None:
        """A new stage began (the evidence pass): one plain line when not on a terminal."""
        if not self.enabled and self.every > 0:
            self.console.print(f"esmdiv: {name}", highlight=False)

    def advance(self, path: str, tokens: int, seconds: float) -> None:
        if path not in self.tasks:
            return
        self.seconds[path] += seconds
        self.done[path] += tokens
        rate = f"{self.done[path] / self.seconds[path]:,.0f} tokens/s" if self.seconds[path] > 0 else ""
        if self.enabled:
            self.bars.update(self.tasks[path], advance=tokens, rate=rate)
        else:
            self._line()

    def _line(self) -> None:
        now = self.clock()
        if self.every <= 0 or now - self.last_line < self.every:
            return
        self.last_line = now
        done = min(self.done.values())
        rates = {p: self.done[p] / self.seconds[p] for p in self.done if self.seconds[p] > 0}
        left = sum((self.total - self.done[p]) / rates[p] for p in rates) if len(rates) == len(self.done) else None
        self.console.print(
            f"esmdiv: main pass {done:,} of {self.total:,} tokens ({done / max(self.total, 1):.0%}), "
            + ", ".join(f"{p} {r:,.0f} tokens/s" for p, r in rates.items())
            + (f", about {left:,.0f} s left" if left is not None else ""),
            highlight=False,
            soft_wrap=True,
        )


def render_verdict(decision, console: Console, title: str = "verdict") -> None:
    verdict = decision.verdict.value
    lines = [Text(verdict, style=VERDICT_STYLE[verdict])]
    for reason in decision.reasons:
        lines.append(
            Text(("✓ " if reason.passed else "✗ ") + reason.message, style="green" if reason.passed else "red")
        )
    console.print(Panel(Group(*lines), title=title, expand=False, border_style=VERDICT_STYLE[verdict].split()[-1]))


def render_kernel_verdicts(result: AuditResult, console: Console) -> None:
    """Several kernels: one verdict panel per kernel (with its headline numbers), then the overall."""
    for kernel in result.kernels:
        s, p = kernel.summary, kernel.summary["prediction"]
        speed = kernel.timings.get("packed_tokens_per_s")
        console.print(
            f"[bold]{escape(kernel.backend)}[/]: agreement {p['agreement']:.2%}, cosine min {s['cosine']['min']:.7f}, "
            f"MAD max {s['mad']['max']:.2e}, max |Δ| {s['max_abs_diff']:.2e}"
            + (f", {speed:,.0f} tokens/s (audit timing)" if speed else ""),
            highlight=False,
        )
        render_verdict(kernel.decision, console, title=f"verdict: {escape(kernel.backend)}")
    verdict, code = result.decision.verdict.value, result.decision.verdict.exit_code
    each = ", ".join(f"{k.backend} {k.decision.verdict.value}" for k in result.kernels)
    console.print(
        Panel(
            Group(
                Text(verdict, style=VERDICT_STYLE[verdict]),
                Text(f"the worst of {len(result.kernels)} kernels ({each}); exit code {code}"),
            ),
            title="overall verdict",
            expand=False,
            border_style=VERDICT_STYLE[verdict].split()[-1],
        )
    )


def _details(result: AuditResult) -> Table:
    """One row per measurement beyond the gates: residue level, and what the flags turned on."""
    s = result.summary
    table = Table(title="Details", show_header=False)
    table.add_column("measurement")
    table.add_column("value")
    r = s["residue"]
    table.add_row("residue cosine min / mean", f"{r['cosine_min']:.7f} / {r['cosine_mean']:.7f}")
    table.add_row("residue rel-L2 mean / max", f"{r['rel_l2']['mean']:.2e} / {r['rel_l2']['max']:.2e}")
    table.add_row("|Δ| 99.9th percentile, max", f"{r['p999_abs_diff']['max']:.2e}")
    table.add_row("elements within 1e-3 / 1e-2", f"{r['allclose_1e3']:.1%} / {r['allclose_1e2']:.1%}")
    for head in s["heads"][1:]:
        table.add_row(
            "agreement, " + head["head"].split(" (")[0] + head["head"][head["head"].rfind(",") :].rstrip(")"),
            f"{head['agreement']:.2%}",
        )
    b = s["bound"]
    table.add_row(
        f"agreement {b['confidence']:.0%} lower bound",
        f"{b['lower_bound']:.2%} ({b['agreeing']}/{b['n']}, gate on {b['gate']})",
    )
    ev = result.evidence or {}
    if ev.get("mode") == "off":
        table.add_row("evidence pass", f"off: cannot see {', '.join(ev['unseen_faults'])}")
    elif ev:
        sample = ev["sample"]
        table.add_row(
            f"evidence pass ({ev['mode']})",
            f"{ev['rerun']} sequences rerun: a sample of {sample['sequences']} ({sample['tokens']:,} tokens, "
            f"{sample['shortest_residues']} to {sample['longest_residues']} residues) and {ev['flagged']} flagged",
        )
    ref = s.get("reference")
    if ref:
        table.add_row(
            f"{ref['dtype']} reference: rel-L2 padded / packed",
            f"{ref['v1']['rel_l2']['mean']:.2e} / {ref['v2']['rel_l2']['mean']:.2e} (ratio {ref['ratio']:.3g}); "
            f"packed nearer on {ref['packed_nearer']}/{ref['n']}",
        )
        table.add_row(
            "label agreement with the reference", f"padded {ref['agreement_v1']:.2%}, packed {ref['agreement_v2']:.2%}"
        )
        table.add_row(
            f"packed algorithm in {ref['dtype']}: rel-L2 to the reference",
            f"max {ref['algorithm']['rel_l2']['max']:.2e}",
        )
    mlm = s.get("mlm", {})
    if "skipped" in mlm:
        table.add_row("MLM metrics", f"skipped: {mlm['skipped']}")
    elif mlm:
        ppl = mlm["perplexity"]
        table.add_row(
            "MLM top-1 agreement min / mean",
            f"{mlm['top1_agreement']['min']:.2%} / {mlm['top1_agreement']['mean']:.2%}",
        )
        table.add_row("MLM Jensen-Shannon mean / max", f"{mlm['js']['mean']:.2e} / {mlm['js']['max']:.2e} nats")
        if ppl.get("sequences"):
            table.add_row(
                "masked perplexity padded / packed",
                f"{ppl['perplexity_v1']:.6g} / {ppl['perplexity_v2']:.6g} ({ppl['relative_delta']:+.2e}, "
                f"{ppl['masked_tokens']} tokens of {ppl['sequences']} sequences)",
            )
    if result.trace:
        t = result.trace
        first = "none" if t["first_layer_over"] is None else f"layer {t['first_layer_over']}"
        table.add_row(
            "trace",
            f"first layer over rel-L2 {t['threshold']:g}: {first}; "
            f"first differing layer {t.get('first_differing_layer')}; "
            f"largest growth at layer {t['largest_jump_layer']} (x{t['largest_jump_ratio']:.3g}); "
            f"last layer rel-L2 {t['layers'][-1]['rel_l2']:.2e}",
        )
    if result.invariance:
        inv = result.invariance
        table.add_row(
            "neighbour invariance (max moved)",
            f"padded {inv['padded']['max_moved']:.2e} ({inv['padded']['sequences_moved']} moved), "
            f"packed {inv['packed']['max_moved']:.2e} ({inv['packed']['sequences_moved']} moved)",
        )
    position = ev.get("position")
    if position:
        table.add_row(
            f"position probe ({position['offset']:,} positions later, {position['dtype']})",
            f"moved {position['max_moved']:.2e} (relative) over {position['sequences']} sequences; a change of "
            f"pack shape alone moved {position['rounding']:.2e}; threshold {position['threshold']:.2e}",
        )
    needed = "; ".join(v["passes_if"] for v in result.decision.tolerances.values())
    table.add_row("would still pass with", needed)
    return table


def _model_label(model: dict) -> str:
    label = (
        f"{escape(model['spec'])} "
        f"({model['num_layers']} layers, {model['embed_dim']} dims, {model['attention_heads']} heads)"
    )
    if model.get("random_weights"):
        label += " [bold yellow]RANDOM WEIGHTS[/]"
    return label


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _nan_high(x: float) -> float:
    return math.inf if math.isnan(x) else x


# --- esmdiv bench ---------------------------------------------------------------------------------

_LABELS = {"padded": "padded (fair-esm)", "packed": "packed (esmdiv)", "hf": "HF EsmModel sdpa"}


def _bench_label(name: str) -> str:
    if name.startswith("packed["):
        return f"packed {name[len('packed[') : -1]} (esmdiv)"
    return _LABELS[name]


def render_bench(result: BenchResult, console: Console) -> None:
    """Header (model, device, workload), one row per path (per kernel of the packed path), then the speed-ups."""
    env, data = result.environment, result.to_dict()
    w = data["workload"]
    model = result.model
    label = f"{model['spec']} ({model['num_layers']} layers, {model['embed_dim']} dims)"
    if model["random_weights"]:
        label += " [bold yellow]RANDOM WEIGHTS[/]"
    memory = f", {env['gpu_memory_gib']:.0f} GiB" if env["gpu_memory_gib"] else ""
    console.print(f"[bold]model[/]     {label}")
    console.print(
        f"[bold]device[/]    {env['device']} ({env['device_name']}{memory}), dtype {result.dtype}, "
        f"packed attention [bold]{result.backend}[/], torch {env['torch']}"
    )
    for kernel in data.get("kernels", {}).values():
        console.print(f"[bold]kernel[/]    {escape(provenance_line(kernel))}", highlight=False)
    console.print(
        f"[bold]workload[/]  {w['description']}: {w['sequences']:,} sequences, {w['tokens']:,} tokens, "
        f"{w['batches']} batches of ≤ {w['max_tokens']:,} tokens ({w['padding_fraction']:.1%} padding when padded)"
    )
    console.print(
        f"[bold]timing[/]    {result.config.warmup} warm-up pass(es), median of {result.config.repeats} timed pass(es) "
        "over the whole workload" + (", CUDA-synchronised" if data["timing"]["synchronised"] else "")
    )
    for warning in result.warnings:
        console.print(Text("warning: " + warning, style="yellow"))

    table = Table(title="Throughput")
    for column in ("path", "median s", "min–max s", "tokens/s", "sequences/s", "peak GPU GiB", "vs padded: max |Δ|"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, path in data["paths"].items():
        if path["status"] != "ok":
            table.add_row(_bench_label(name), Text(path["note"] or path["status"], style="yellow"), "", "", "", "", "")
            continue
        peak = (
            "—"
            if path["peak_gpu_memory_gib"] is None
            else (f"{path['peak_gpu_memory_gib']:.2f} (+{path['peak_above_resident_gib']:.2f})")
        )
        check = path["check"]
        diff = (
            "reference"
            if check is None
            else Text(
                f"{check['max_abs_diff']:.2e}" + ("" if check["ok"] else " ✗"), style="" if check["ok"] else "red"
            )
        )
        table.add_row(
            _bench_label(name),
            f"{path['median_s']:.3f}",
            f"{path['min_s']:.3f}–{path['max_s']:.3f}",
            f"{path['tokens_per_s']:,.0f}",
            f"{path['sequences_per_s']:,.1f}",
            peak,
            diff,
        )
    console.print(table)
    if data["timing"]["synchronised"]:
        console.print("peak GPU GiB: max allocated during the timed passes (+ above the resident weights and batches)")
    speedups = data["speedups"]
    rows = [name for name in data["paths"] if name.startswith("packed")]
    parts = [
        f"{_bench_label(row).removesuffix(' (esmdiv)')} is {value:.2f}× {label}"
        for row in rows
        for key, label in ((f"{row}_over_padded", "fair-esm padded"), (f"{row}_over_hf", "HF EsmModel sdpa"))
        if (value := speedups.get(key)) is not None
    ]
    if parts:
        console.print("[bold]speed-up[/]  " + "; ".join(parts) + " (ratio of medians)")


# --- esmdiv selftest ------------------------------------------------------------------------------


class SelftestTable:
    """The self-test's rows: one line on ``progress`` as each run ends, a table at the end."""

    def __init__(self, model: str, progress: Console):
        self.model = model
        self.progress = progress
        self.table = Table(title=f"esmdiv selftest: {model}")
        for column in ("config", "bug", "verdict", "caught by (x clean run)", "value / threshold / clean"):
            self.table.add_column(column, overflow="fold")

    def add(self, row: SelftestRow) -> None:
        from esmdiv.selftest import shown_gate  # torch-backed: imported only once a self-test runs

        style = "green" if row.ok else "red"
        shown = shown_gate(row)
        if row.bug == "none":
            caught, numbers = ", ".join(row.caught_by) or "-", row.evidence
        elif shown is None:
            caught, numbers = "-", row.evidence
        else:
            caught = f"{shown.gate} x{_margin(shown.margin)}"
            numbers = " / ".join(_number(v) for v in (shown.value, shown.threshold, shown.clean_value))
        self.table.add_row(row.configuration, row.bug, f"[{style}]{row.verdict}[/]", caught, numbers)
        self.progress.print(f"  {row.configuration} {row.bug}: {row.verdict} {caught}", highlight=False)


def _margin(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def render_selftest(table: SelftestTable, settings: dict, ok: bool, console: Console) -> None:
    """The settings line, the table and PASSED or FAILED."""
    configs = "; ".join(
        f"{name}: {' '.join(f'{k}={v}' for k, v in options.items()) or 'what check runs by default'}"
        for name, options in settings["configurations"].items()
    )
    console.print(
        f"model {table.model}, device {settings['device']}, dtype {settings['dtype']}, "
        f"backend {settings['backend']}, fixture {settings['fasta']}; configurations: {configs}"
    )
    console.print(table.table)
    console.print(
        f"[bold green]PASSED[/]: clean runs ACCEPT, every injected bug caught by a gate at least "
        f"{settings['required_margin']:g}x its clean value"
        if ok
        else "[bold red]FAILED[/]: see the red rows"
    )


# --- esmdiv env ------------------------------------------------------------------------------------


def render_environment(env: dict, console: Console) -> None:
    """The fingerprint as a two-column table; unavailable attention backends in red."""
    table = Table(title="esmdiv environment", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in environment_table_rows(env):
        style = "red" if key.startswith("backend ") and value.startswith("unavailable") else None
        table.add_row(key, value, style=style)
    console.print(table)
