"""Rendering a benchmark: the rich table ``esmdiv bench`` prints."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from esmdiv.bench import BenchResult

_LABELS = {"padded": "padded (fair-esm)", "packed": "packed (esmdiv)", "hf": "HF EsmModel sdpa"}


def render_bench(result: BenchResult, console: Console) -> None:
    """Header (model, device, workload), one row per path, then the speed-ups."""
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
            table.add_row(_LABELS[name], Text(path["note"] or path["status"], style="yellow"), "", "", "", "", "")
            continue
        peak = "—" if path["peak_gpu_memory_gib"] is None else (
            f"{path['peak_gpu_memory_gib']:.2f} (+{path['peak_above_resident_gib']:.2f})"
        )
        check = path["check"]
        diff = "reference" if check is None else Text(
            f"{check['max_abs_diff']:.2e}" + ("" if check["ok"] else " ✗"), style="" if check["ok"] else "red"
        )
        table.add_row(
            _LABELS[name], f"{path['median_s']:.3f}", f"{path['min_s']:.3f}–{path['max_s']:.3f}",
            f"{path['tokens_per_s']:,.0f}", f"{path['sequences_per_s']:,.1f}", peak, diff,
        )
    console.print(table)
    if data["timing"]["synchronised"]:
        console.print("peak GPU GiB: max allocated during the timed passes (+ above the resident weights and batches)")
    speedups = data["speedups"]
    parts = [
        f"packed is {value:.2f}× {label}"
        for key, label in (("packed_over_padded", "fair-esm padded"), ("packed_over_hf", "HF EsmModel sdpa"))
        if (value := speedups[key]) is not None
    ]
    if parts:
        console.print("[bold]speed-up[/]  " + "; ".join(parts) + " (ratio of medians)")
