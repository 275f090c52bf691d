"""The report for people as Markdown, made from a run's JSON: the same content as the HTML page,
its plots as PNG files linked beside it (or left out, for a CI job summary)."""

from __future__ import annotations

from esmdiv.report.gates import incomplete_reason
from esmdiv.report.plots import Plot
from esmdiv.report.text import (
    KERNEL_COLUMNS,
    VERDICT_MEANING,
    finite_number,
    fmt,
    kernel_rows,
    provenance_line,
    run_rows,
    summary_rows,
    worst_sequences,
)


def _md(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[tuple[str, str]], header=("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {_md(k)} | {_md(v)} |" for k, v in rows])


def _reasons_table(reasons: list[dict]) -> list[str]:
    if not reasons:
        return []
    out = ["| gate | result | value | threshold | why |", "|---|---|---:|---:|---|"]
    for r in reasons:
        out.append(
            f"| {_md(r.get('gate'))} | {'✓ pass' if r.get('passed') else '✗ **fail**'} "
            f"| {fmt(r.get('value'), '.6g')} "
            f"| {fmt(r.get('threshold'), '.6g')} | {_md(r.get('message'))} |"
        )
    return out + [""]


def _kernels_section(report: dict) -> list[str]:
    """Several kernels: their verdicts side by side, then a verdict section per kernel."""
    out = [
        "## Kernels",
        "",
        f"{len(report['kernels'])} kernels audited against the same padded path; the overall verdict is the "
        f"worst. The plots and tables below are {_md(report.get('worst_kernel'))}'s.",
        "",
        "| " + " | ".join(_md(c) for c in KERNEL_COLUMNS) + " |",
        "|---|---|" + "---:|" * (len(KERNEL_COLUMNS) - 2),
    ]
    out += ["| " + " | ".join(_md(v) for v in row) + " |" for row in kernel_rows(report)]
    out.append("")
    for kernel in report["kernels"]:
        verdict = kernel.get("verdict")
        out += [
            f"## Verdict: {_md(kernel.get('backend'))}",
            "",
            f"**{verdict}** (exit code {kernel.get('exit_code')}): {VERDICT_MEANING.get(verdict, '')}.",
            "",
            f"`{provenance_line(kernel.get('provenance') or {})}`",
            "",
        ]
        out += _reasons_table(kernel.get("reasons") or [])
    return out


def render_markdown(
    report: dict, plots: list[Plot] | None = None, image_paths: dict[str, str] | None = None, source: str | None = None
) -> str:
    """Markdown with the same content; ``image_paths`` maps a plot key to the link to its PNG
    (plots without a path are left out, so ``plots=[]`` gives a text-only page for CI summaries)."""
    plots = plots or []
    image_paths = image_paths or {}
    verdict = report.get("verdict") if report.get("complete") else None
    model = (report.get("model") or {}).get("spec", "unknown model")
    out = [f"# esmdiv divergence audit: {_md(model)}", ""]
    if verdict:
        out.append(f"**Verdict: {verdict}**: {VERDICT_MEANING[verdict]}.")
    else:
        out.append(f"**No verdict**: the run did not finish ({_md(incomplete_reason(report))}).")
    out.append("")
    kernels = report.get("kernels") or []
    if kernels:
        out += _kernels_section(report)
    else:
        out += _reasons_table(report.get("reasons") or [])
    for warning in report.get("warnings") or []:
        out.append(f"> **warning:** {_md(warning)}")
    if report.get("warnings"):
        out.append("")
    if plots:
        out += ["## Plots", ""]
        for plot in plots:
            if plot.png is None:
                out += [f"*{plot.title}: {plot.caption}*", ""]
            elif plot.key in image_paths:
                out += [f"![{plot.title}]({image_paths[plot.key]})", "", f"*{plot.title}.* {plot.caption}", ""]
    rows = summary_rows(report)
    if rows:
        out += ["## Summary", "", _md_table(rows, ("metric", "value")), ""]
    worst = worst_sequences(report)
    if worst:
        out += [
            f"## Worst {len(worst)} of {len(report.get('sequences') or [])} sequences (lowest cosine first)",
            "",
            "| id | length | cosine | 1 − cos | MAD | max \\|diff\\| | label v1/v2 | conf v1 | conf v2 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in worst:
            cos = finite_number(s.get("cosine"))
            flip = s.get("label_v1") != s.get("label_v2")
            out.append(
                f"| {_md(s.get('id'))} | {s.get('length')} | {fmt(cos, '.9f')} "
                f"| {'n/a' if cos is None else format(1 - cos, '.2e')} "
                f"| {fmt(s.get('mad'), '.2e')} | {fmt(s.get('max_abs_diff'), '.2e')} "
                f"| {s.get('label_v1')}/{s.get('label_v2')}{' ✗' if flip else ''} "
                f"| {fmt(s.get('confidence_v1'), '.4f')} | {fmt(s.get('confidence_v2'), '.4f')} |"
            )
        out.append("")
    if report.get("thresholds"):
        out += [
            "## Thresholds",
            "",
            _md_table([(k, str(v)) for k, v in report["thresholds"].items()], ("threshold", "value")),
            "",
        ]
    out += ["## Run and environment", "", _md_table(run_rows(report), ("", "")), ""]
    from esmdiv import __version__

    out.append(
        f"Made by esmdiv {__version__}"
        + (f" from `{source}`" if source else "")
        + f" (report schema {report.get('schema_version')})."
    )
    return "\n".join(out) + "\n"
