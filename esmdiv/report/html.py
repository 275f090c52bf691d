"""The report for people as one self-contained HTML page, made from a run's JSON.

Verdict and reasons first, then the plots (:mod:`esmdiv.report.plots`), then the numbers:
summary, worst sequences, run and environment. The page embeds its images as ``data:`` URIs and
loads nothing else, so it can be mailed or archived as one file; it is also well-formed XML
(polyglot HTML5), which the tests check by parsing it.
"""

from __future__ import annotations

import base64
import html

from esmdiv.report.gates import incomplete_reason
from esmdiv.report.plots import Plot, make_plots
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

VERDICT_COLOUR = {"ACCEPT": "#1a7f37", "VALIDATE": "#9a6700", "FALLBACK": "#cf222e", None: "#57606a"}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1120px;margin:2em auto;padding:0 1em;color:#1f2328;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.8em}
.verdict{color:#fff;padding:.7em 1em;border-radius:6px;font-size:1.35em;font-weight:600}
.verdict small{font-weight:400;font-size:.7em;display:block}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-family:ui-monospace,Menlo,Consolas,monospace}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.4em .8em;border-radius:6px;margin:.3em 0}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #d0d7de;border-radius:4px}figcaption{font-size:.9em;color:#57606a}
.note{color:#57606a;font-style:italic}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
footer{margin-top:2em;color:#57606a;font-size:.85em}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _reasons_table(reasons: list[dict], heading: str) -> str:
    if not reasons:
        return ""
    out = [heading, "<table><tr><th>gate</th><th>result</th><th>value</th><th>threshold</th><th>why</th></tr>"]
    for r in reasons:
        cls, word = ("pass", "✓ pass") if r.get("passed") else ("fail", "✗ fail")
        out.append(
            f'<tr><td>{_e(r.get("gate"))}</td><td class="{cls}">{word}</td><td class="num">{_e(fmt(r.get("value"), ".6g"))}</td>'
            f'<td class="num">{_e(fmt(r.get("threshold"), ".6g"))}</td><td>{_e(r.get("message"))}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _kernels_section(report: dict) -> str:
    """Several kernels: a table of their verdicts and headline numbers, then a verdict section per
    kernel (its provenance and reasons). The plots and tables after it are the worst kernel's."""
    out = [
        "<h2>Kernels</h2>",
        f'<p class="note">{len(report["kernels"])} kernels audited against the same padded path; the overall '
        f"verdict is the worst. The plots and tables below are {_e(report.get('worst_kernel'))}'s.</p>",
        "<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in KERNEL_COLUMNS) + "</tr>",
    ]
    for row in kernel_rows(report):
        out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    for kernel in report["kernels"]:
        verdict = kernel.get("verdict")
        out.append(
            f'<h2 id="kernel-{_e(kernel.get("backend"))}">Verdict: {_e(kernel.get("backend"))}</h2>'
            f'<div class="verdict" style="background:{VERDICT_COLOUR.get(verdict, VERDICT_COLOUR[None])}">{_e(verdict)}'
            f"<small>{_e(VERDICT_MEANING.get(verdict, ''))} (exit code {_e(kernel.get('exit_code'))})</small></div>"
            f"<p><code>{_e(provenance_line(kernel.get('provenance') or {}))}</code></p>"
        )
        out.append(_reasons_table(kernel.get("reasons") or [], ""))
    return "\n".join(out)


def render_html(report: dict, plots: list[Plot] | None = None, source: str | None = None) -> str:
    """The whole page as a string; ``plots`` from :func:`make_plots` (drawn here when omitted)."""
    plots = make_plots(report) if plots is None else plots
    verdict = report.get("verdict") if report.get("complete") else None
    model = (report.get("model") or {}).get("spec", "unknown model")
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>esmdiv: {_e(verdict or 'no verdict')} for {_e(model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>esmdiv divergence audit: {_e(model)}</h1>",
    ]
    if verdict:
        out.append(
            f'<div class="verdict" style="background:{VERDICT_COLOUR[verdict]}">{_e(verdict)}'
            f"<small>{_e(VERDICT_MEANING[verdict])} (exit code {_e({'ACCEPT': 0, 'VALIDATE': 10, 'FALLBACK': 20}[verdict])})</small></div>"
        )
    else:
        out.append(
            f'<div class="verdict" style="background:{VERDICT_COLOUR[None]}">NO VERDICT'
            f"<small>the run did not finish: {_e(incomplete_reason(report))}</small></div>"
        )
    kernels = report.get("kernels") or []
    if kernels:
        out.append(_kernels_section(report))
    else:
        out.append(_reasons_table(report.get("reasons") or [], "<h2>Reasons</h2>"))
    for warning in report.get("warnings") or []:
        out.append(f'<div class="warn">warning: {_e(warning)}</div>')

    out.append("<h2>Plots</h2>")
    for plot in plots:
        if plot.png is None:
            out.append(f'<p class="note">{_e(plot.title)}: {_e(plot.caption)}</p>')
            continue
        data = base64.b64encode(plot.png).decode("ascii")
        out.append(
            f'<figure id="plot-{_e(plot.key)}"><img alt="{_e(plot.title)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption><b>{_e(plot.title)}.</b> {_e(plot.caption)}</figcaption></figure>"
        )

    rows = summary_rows(report)
    if rows:
        out.append("<h2>Summary</h2>" + _table(rows))
    worst = worst_sequences(report)
    if worst:
        n = len(report.get("sequences") or [])
        out.append(f"<h2>Worst {len(worst)} of {n} sequences (lowest cosine first)</h2>")
        out.append(
            "<table><tr><th>id</th><th>length</th><th>cosine</th><th>1 − cos</th><th>MAD</th><th>max |diff|</th>"
            "<th>label v1/v2</th><th>conf v1</th><th>conf v2</th></tr>"
        )
        for s in worst:
            flip = s.get("label_v1") != s.get("label_v2")
            cos = finite_number(s.get("cosine"))
            out.append(
                f'<tr><td>{_e(s.get("id"))}</td><td class="num">{_e(s.get("length"))}</td>'
                f'<td class="num">{_e(fmt(cos, ".9f"))}</td><td class="num">{_e("n/a" if cos is None else format(1 - cos, ".2e"))}</td>'
                f'<td class="num">{_e(fmt(s.get("mad"), ".2e"))}</td><td class="num">{_e(fmt(s.get("max_abs_diff"), ".2e"))}</td>'
                f'<td class="num{" fail" if flip else ""}">{_e(s.get("label_v1"))}/{_e(s.get("label_v2"))}{" ✗" if flip else ""}</td>'
                f'<td class="num">{_e(fmt(s.get("confidence_v1"), ".4f"))}</td><td class="num">{_e(fmt(s.get("confidence_v2"), ".4f"))}</td></tr>'
            )
        out.append("</table>")
    if report.get("thresholds"):
        out.append("<h2>Thresholds</h2>" + _table([(k, str(v)) for k, v in report["thresholds"].items()]))
    out.append("<h2>Run and environment</h2>" + _table(run_rows(report)))
    from esmdiv import __version__

    out.append(
        f"<footer>Made by esmdiv {_e(__version__)}"
        + (f" from <code>{_e(source)}</code>" if source else "")
        + f" (report schema {_e(report.get('schema_version'))}).</footer></body></html>"
    )
    return "\n".join(out) + "\n"
