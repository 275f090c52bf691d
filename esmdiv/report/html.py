"""The report for people: one self-contained HTML page (or Markdown) made from a run's JSON.

Verdict and reasons first, then the plots (matplotlib, Agg, no display needed), then the
numbers: summary, worst sequences, run and environment. The HTML embeds its images as
``data:`` URIs and loads nothing else, so it can be mailed or archived as one file; it is also
well-formed XML (polyglot HTML5), which the tests check by parsing it.

Plots, each drawn only when the run has what it needs:

1. ``length``: 1 − pooled cosine and pooled MAD against sequence length, both gates' thresholds
   drawn, sequences that break a gate in red, label flips ringed.
2. ``mad_hist``: the distribution of pooled MAD (log bins) with the ``max_mad`` threshold.
3. ``confidence``: v2 against v1 confidence with the identity line, and their difference.
4. ``trace``: per-layer divergence (max abs diff, relative L2, 1 − cosine) when the report has a
   ``trace`` section (a list of ``{layer, max_abs_diff, rel_l2, cosine}``); a note otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from esmdiv.errors import EnvironmentUnavailable
from esmdiv.report.junit import AGREEMENT_GATES, incomplete_reason, sequence_problems

VERDICT_MEANING = {
    "ACCEPT": "the packed path may replace the padded one",
    "VALIDATE": "the paths differ enough that a person must look before shipping",
    "FALLBACK": "keep the padded path",
}
VERDICT_COLOUR = {"ACCEPT": "#1a7f37", "VALIDATE": "#9a6700", "FALLBACK": "#cf222e", None: "#57606a"}
WORST_ROWS = 20
INSTALL_HINT = "pip install 'esmdiv[report]'"

_PASS, _FAIL, _FLIP, _THRESH = "#0969da", "#cf222e", "#bf8700", "#cf222e"


@dataclass
class Plot:
    key: str
    title: str
    caption: str
    png: bytes | None  # None: not drawn, ``caption`` says why
    axes: list[dict] = field(default_factory=list)  # per panel: title, xlabel, ylabel, legend texts


def _drawn(key: str, title: str, caption: str, fig) -> Plot:
    """Render ``fig`` to PNG and keep what each panel says (the tests read it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    axes = [
        {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
         "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
        for ax in fig.axes
    ]
    return Plot(key, title, caption, buf.getvalue(), axes)


def require_matplotlib():
    """matplotlib, or exit 3 with the install hint. Figures are drawn on Agg canvases only."""
    try:
        import matplotlib
    except ImportError:
        raise EnvironmentUnavailable(f"plots need matplotlib, which is not installed: {INSTALL_HINT}") from None
    if "matplotlib.pyplot" not in sys.modules:  # headless: never pick a GUI backend (a caller's pyplot is left alone)
        matplotlib.use("Agg")
    return matplotlib


# --- data ----------------------------------------------------------------------------------------

def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _trace_layers(report: dict) -> list[dict] | None:
    trace = report.get("trace")
    if isinstance(trace, dict):
        trace = trace.get("layers")
    if isinstance(trace, list) and trace and all(isinstance(t, dict) and "layer" in t for t in trace):
        return trace
    return None


def _classified(report: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Finite sequences split into (pass, break a gate) and the non-finite ones."""
    thresholds = report.get("thresholds") or {}
    failed = {r["gate"] for r in report.get("reasons") or [] if not r.get("passed")}
    ok, bad, nonfinite = [], [], []
    for seq in report.get("sequences") or []:
        if _num(seq.get("cosine")) is None or _num(seq.get("mad")) is None:
            nonfinite.append(seq)
        elif thresholds and sequence_problems(seq, thresholds, bool(failed & set(AGREEMENT_GATES))):
            bad.append(seq)
        else:
            ok.append(seq)
    return ok, bad, nonfinite


# --- plots ---------------------------------------------------------------------------------------

def make_plots(report: dict) -> list[Plot]:
    """Every plot this report supports, as PNG bytes (or a note where there is nothing to draw)."""
    require_matplotlib()
    return [_length_plot(report), _mad_hist(report), _confidence_plot(report), _trace_plot(report)]


def _figure(width: float, height: float, cols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=9)
    return fig, axes


def _one_minus_cos(seq: dict) -> float:
    return max(0.0, 1.0 - seq["cosine"])


def _floor(values: list[float], *others: float) -> float:
    """Where to draw exact zeros on a log axis: a decade under the smallest positive value."""
    positive = [v for v in list(values) + list(others) if v > 0]
    return 10 ** math.floor(math.log10(min(positive)) - 1) if positive else 1e-16


def _length_plot(report: dict) -> Plot:
    title = "Divergence against sequence length"
    ok, bad, nonfinite = _classified(report)
    t = report.get("thresholds") or {}
    if not ok and not bad:
        return Plot("length", title, "No sequence with finite output: nothing to plot.", None)
    fig, (ax_cos, ax_mad) = _figure(10.5, 4.2, cols=2)
    everything = ok + bad
    lengths = [s["length"] for s in everything]
    cos_floor = _floor([_one_minus_cos(s) for s in everything], 1 - t.get("min_cosine", 1))
    mad_floor = _floor([s["mad"] for s in everything], t.get("max_mad", 0))
    zero_cos = 0
    for ax, metric, floor, threshold, label, gate in (
        (ax_cos, _one_minus_cos, cos_floor, 1 - t["min_cosine"] if "min_cosine" in t else None,
         "1 − pooled cosine (log; lower is closer)", f"gate --min-cosine {t.get('min_cosine')}: fails on or above"),
        (ax_mad, lambda s: s["mad"], mad_floor, t.get("max_mad"), "pooled MAD (log; lower is closer)",
         f"gate --max-mad {t.get('max_mad')}: fails on or above"),
    ):
        for group, colour, marker, name in ((ok, _PASS, "o", "passes every gate"), (bad, _FAIL, "X", "breaks a gate")):
            if not group:
                continue
            ys = [max(metric(s), floor) for s in group]
            ax.scatter([s["length"] for s in group], ys, s=22 if colour == _PASS else 46, c=colour, marker=marker,
                       alpha=0.75, linewidths=0, label=f"{name} ({len(group)})", zorder=3)
        flips = [s for s in everything if s.get("label_v1") != s.get("label_v2")]
        if flips:
            ax.scatter([s["length"] for s in flips], [max(metric(s), floor) for s in flips], s=110, facecolors="none",
                       edgecolors=_FLIP, linewidths=1.6, label=f"label flipped ({len(flips)})", zorder=4)
        ax.set_yscale("log")
        if threshold is not None and threshold > 0:
            ax.axhline(threshold, color=_THRESH, linestyle="--", linewidth=1.3, label=gate, zorder=2)
            top = max(ax.get_ylim()[1], threshold * 10)
            ax.axhspan(threshold, top, color=_THRESH, alpha=0.07, zorder=1)
            ax.set_ylim(top=top)
        ax.set_ylabel(label, fontsize=10)
        if metric is _one_minus_cos:
            zero_cos = sum(1 for s in everything if _one_minus_cos(s) <= 0)
    for ax in (ax_cos, ax_mad):
        ax.set_xlabel("sequence length (residues audited" + (", log)" if _log_x(lengths) else ")"), fontsize=10)
        if _log_x(lengths):
            ax.set_xscale("log")
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax_cos.set_title("Pooled cosine: 1 − cosine per sequence", fontsize=11)
    ax_mad.set_title("Pooled mean absolute difference per sequence", fontsize=11)
    notes = [f"{len(everything)} sequences; dashed red lines are the gates (--min-cosine {t.get('min_cosine')}, "
             f"--max-mad {t.get('max_mad')}): a point on or above its line fails that gate."]
    if zero_cos:
        notes.append(f"{zero_cos} sequence(s) with cosine exactly 1 drawn at {cos_floor:.0e}.")
    if nonfinite:
        notes.append(f"{len(nonfinite)} sequence(s) with non-finite output not plotted: {_names(nonfinite)}.")
    return _drawn("length", title, " ".join(notes), fig)


def _log_x(lengths: list[int]) -> bool:
    """Lengths spanning 50x or more read better on a log axis."""
    return bool(lengths) and min(lengths) > 0 and max(lengths) / min(lengths) >= 50


def _mad_hist(report: dict) -> Plot:
    import numpy as np

    title = "Distribution of pooled MAD"
    ok, bad, nonfinite = _classified(report)
    mads = [s["mad"] for s in ok + bad]
    t = report.get("thresholds") or {}
    if not mads:
        return Plot("mad_hist", title, "No sequence with finite output: nothing to plot.", None)
    fig, (ax,) = _figure(7.5, 4.0)
    floor = _floor(mads, t.get("max_mad", 0))
    values = np.maximum(np.asarray(mads), floor)
    lo, hi = math.log10(values.min()), math.log10(values.max())  # bins span the data; the axis also shows the gate
    if hi - lo < 0.2:
        lo, hi = lo - 0.1, hi + 0.1
    bins = np.logspace(lo, hi, int(min(50, max(8, 2 * math.ceil(math.sqrt(len(values)))))) + 1)
    ax.hist(values, bins=bins, color=_PASS, alpha=0.85, edgecolor="white", label=f"sequences ({len(values)})", zorder=3)
    ax.set_xscale("log")
    left, right = 10 ** lo / 2, 10 ** hi * 2
    if "max_mad" in t:
        gate = t["max_mad"]
        ax.axvline(gate, color=_THRESH, linestyle="--", linewidth=1.5, label=f"gate --max-mad {gate:g}: fails on or above")
        right = max(right, gate * 3)
        ax.axvspan(gate, right, color=_THRESH, alpha=0.07, zorder=1)
    ax.set_xlim(left, right)
    median = float(np.median(values))
    ax.axvline(median, color="#57606a", linestyle=":", linewidth=1.2, label=f"median {median:.2e}")
    ax.set_xlabel("pooled mean absolute difference, v2 vs v1 (log)", fontsize=10)
    ax.set_ylabel("number of sequences", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Distribution of pooled MAD", fontsize=11)
    ax.legend(fontsize=8, framealpha=0.85)
    caption = f"Median {median:.2e}, max {max(mads):.2e} against the gate {t.get('max_mad')}."
    if t.get("max_mad") and max(mads) > 0:
        caption += f" Headroom: the largest MAD is {t['max_mad'] / max(mads):.3g}× below the gate." if max(mads) < t["max_mad"] else ""
    if nonfinite:
        caption += f" {len(nonfinite)} non-finite sequence(s) left out."
    return _drawn("mad_hist", title, caption, fig)


def _confidence_plot(report: dict) -> Plot:
    title = "Classifier confidence: v1 (padded) against v2 (packed)"
    seqs = [s for s in report.get("sequences") or []
            if _num(s.get("confidence_v1")) is not None and _num(s.get("confidence_v2")) is not None]
    if not seqs:
        return Plot("confidence", title, "No finite confidences: nothing to plot.", None)
    fig, (ax, ax_diff) = _figure(10.5, 4.2, cols=2)
    same = [s for s in seqs if s.get("label_v1") == s.get("label_v2")]
    flips = [s for s in seqs if s.get("label_v1") != s.get("label_v2")]
    for group, colour, marker, name in ((same, _PASS, "o", "same label"), (flips, _FAIL, "X", "label flipped")):
        if group:
            ax.scatter([s["confidence_v1"] for s in group], [s["confidence_v2"] for s in group], s=24 if colour == _PASS else 50,
                       c=colour, marker=marker, alpha=0.75, linewidths=0, label=f"{name} ({len(group)})", zorder=3)
            ax_diff.scatter([s["confidence_v1"] for s in group], [s["confidence_v2"] - s["confidence_v1"] for s in group],
                            s=24 if colour == _PASS else 50, c=colour, marker=marker, alpha=0.75, linewidths=0, zorder=3)
    values = [s["confidence_v1"] for s in seqs] + [s["confidence_v2"] for s in seqs]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.05, 0.01)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#57606a", linestyle="--", linewidth=1, label="v2 = v1", zorder=2)
    binary = _binary_head(report.get("head") or "")
    if binary:
        for a in (ax, ax_diff):
            a.axvline(0.5, color=_THRESH, linestyle=":", linewidth=1.2, label="label boundary 0.5 (binary head)" if a is ax else None)
        ax.axhline(0.5, color=_THRESH, linestyle=":", linewidth=1.2)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("confidence, v1 (padded)", fontsize=10)
    ax.set_ylabel("confidence, v2 (packed)", fontsize=10)
    p = (report.get("summary") or {}).get("prediction") or {}
    r = p.get("pearson")
    ax.set_title("v2 against v1" + (f" (Pearson r = {r:.7f})" if r is not None else ""), fontsize=11)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.85)
    ax_diff.axhline(0, color="#57606a", linestyle="--", linewidth=1)
    ax_diff.set_xlabel("confidence, v1 (padded)", fontsize=10)
    ax_diff.set_ylabel("v2 − v1 confidence", fontsize=10)
    ax_diff.set_title("Difference (what the left panel hides)", fontsize=11)
    from matplotlib.ticker import FuncFormatter

    ax_diff.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:.1e}"))
    caption = (f"Confidence is P(class 1) for a binary head, else the probability of v1's label. "
               f"Label agreement {p.get('agreement', float('nan')):.2%}"
               + (f", largest confidence difference {p['max_conf_diff']:.2e}" if _num(p.get("max_conf_diff")) is not None else "")
               + (". Points near the 0.5 boundary are the ones a small difference can flip." if binary else "."))
    return _drawn("confidence", title, caption, fig)


def _binary_head(head: str) -> bool:
    return bool(re.search(r"\b2 classes\b|Linear\(\d+, 2\)", head))


def _trace_plot(report: dict) -> Plot:
    title = "Divergence layer by layer"
    layers = _trace_layers(report)
    if layers is None:
        return Plot("trace", title, "This run did not trace per-layer divergence (the report has no 'trace' section).", None)
    layers = sorted(layers, key=lambda t: t["layer"])
    xs = [t["layer"] for t in layers]
    fig, (ax_abs, ax_rel) = _figure(10.5, 4.0, cols=2)
    series = [("max_abs_diff", ax_abs, "max |v2 − v1|", _FAIL, "o")]
    series += [("rel_l2", ax_rel, "relative L2 ‖v2 − v1‖ / ‖v1‖", _PASS, "o"),
               ("one_minus_cos", ax_rel, "1 − cosine", _FLIP, "s")]
    for key, ax, label, colour, marker in series:
        if key == "one_minus_cos":
            ys = [None if _num(t.get("cosine")) is None else max(0.0, 1 - t["cosine"]) for t in layers]
        else:
            ys = [_num(t.get(key)) for t in layers]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, markersize=4, linewidth=1.5, label=label)
    for ax, ylabel in ((ax_abs, "max absolute difference (log)"), (ax_rel, "relative divergence (log)")):
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=8, framealpha=0.85)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=10)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_abs.set_title("Largest elementwise difference per layer", fontsize=11)
    ax_rel.set_title("Relative L2 and 1 − cosine per layer", fontsize=11)
    worst = max(layers, key=lambda t: _num(t.get("rel_l2")) or 0.0)
    caption = (f"{len(layers)} layers traced. Growth with depth shows where the paths part; the largest relative L2 "
               f"is at layer {worst['layer']}" + (f" ({worst['rel_l2']:.2e})." if _num(worst.get("rel_l2")) else "."))
    return _drawn("trace", title, caption, fig)


# --- text helpers --------------------------------------------------------------------------------

def _names(seqs: list[dict], limit: int = 5) -> str:
    shown = ", ".join(s["id"] for s in seqs[:limit])
    return shown + (f" (+{len(seqs) - limit} more)" if len(seqs) > limit else "")


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    v = _num(value)
    return missing if v is None else format(v, spec)


def _worst(report: dict, n: int = WORST_ROWS) -> list[dict]:
    def key(s):
        cos = _num(s.get("cosine"))
        return (-math.inf if cos is None else cos, -(_num(s.get("mad")) or math.inf))

    return sorted(report.get("sequences") or [], key=key)[:n]


def _summary_rows(report: dict) -> list[tuple[str, str]]:
    s = report.get("summary") or {}
    if not s:
        return []
    p = s.get("prediction") or {}
    rows = [
        ("sequences audited", str(s.get("n"))),
        ("label agreement", f"{_fmt(p.get('agreement'), '.2%')} ({p.get('n', 0) - p.get('disagreements', 0)}/{p.get('n')})"),
        ("confidence Pearson r", _fmt(p.get("pearson"), ".7f", f"n/a ({p.get('pearson_note')})")),
        ("confidence diff mean / max", f"{_fmt(p.get('mean_conf_diff'), '.2e')} / {_fmt(p.get('max_conf_diff'), '.2e')}"),
        ("pooled cosine min / mean / max", " / ".join(_fmt((s.get("cosine") or {}).get(k), ".9f") for k in ("min", "mean", "max"))),
        ("pooled MAD min / mean / max", " / ".join(_fmt((s.get("mad") or {}).get(k), ".2e") for k in ("min", "mean", "max"))),
        ("max |diff| of any residue element", _fmt(s.get("max_abs_diff"), ".2e")),
    ]
    if s.get("nonfinite"):
        rows.append(("non-finite outputs", "; ".join(s["nonfinite"][:10])))
    t = report.get("timings") or {}
    if _num(t.get("padded_tokens_per_s")) and _num(t.get("packed_tokens_per_s")):
        rows.append(("tokens/s padded / packed",
                     f"{t['padded_tokens_per_s']:,.0f} / {t['packed_tokens_per_s']:,.0f} (audit timing, not a benchmark)"))
    return rows


def _run_rows(report: dict) -> list[tuple[str, str]]:
    model = report.get("model") or {}
    env = report.get("environment") or {}
    inp = report.get("input") or {}
    rows = []
    if model:
        label = f"{model.get('spec')} ({model.get('num_layers')} layers, {model.get('embed_dim')} dims, {model.get('attention_heads')} heads)"
        rows.append(("model", label + (" — RANDOM WEIGHTS, not a trained model" if model.get("random_weights") else "")))
    weights = ((env.get("model") or {}).get("weights")) or {}
    if weights:
        rows.append(("weights sha256", f"{weights.get('value')} ({weights.get('scope')})"))
    if "head" in report:
        rows.append(("prediction head", str(report["head"])))
    run = env.get("run") or {}
    rows.append(("device / dtype / backend", f"{report.get('device', run.get('device'))} / {report.get('dtype', run.get('dtype'))} / "
                 f"{report.get('backend', run.get('backend'))}"))
    if inp:
        rows.append(("input", f"{inp.get('path')}: {inp.get('records')} records, {inp.get('audited')} audited, "
                     f"{len(inp.get('truncated') or [])} truncated, {len(inp.get('skipped') or [])} skipped"))
    if env.get("input"):
        rows.append(("input sha256", f"{env['input']['sha256']} ({env['input']['bytes']:,} bytes)"))
    if env:
        rows += environment_rows(env, include_run=False)
    if report.get("faults"):
        rows.append(("faults injected", ", ".join(report["faults"])))
    return rows


def environment_rows(env: dict, include_run: bool = True) -> list[tuple[str, str]]:
    """The fingerprint as (label, value) rows; shared by the reports and ``esmdiv env``."""
    e = env.get("esmdiv") or {}
    pk = env.get("packages") or {}
    cuda = env.get("cuda") or {}
    py = env.get("python") or {}
    plat = env.get("platform") or {}
    commit = e.get("git_commit")
    rows = [
        ("esmdiv", f"{e.get('version')}" + (f", commit {commit}" + (" (with uncommitted changes)" if e.get("git_dirty") else "")
                                             if commit else ", commit unknown")),
        ("Python", f"{py.get('version')} ({py.get('implementation')})"),
        ("torch / fair-esm / flash-attn", f"{pk.get('torch')} / {pk.get('fair-esm') or 'absent'} / {pk.get('flash-attn') or 'absent'}"),
        ("platform", f"{plat.get('system')} {plat.get('release')} {plat.get('machine')}"),
    ]
    if cuda.get("available"):
        rows.append(("CUDA", f"torch built for {cuda.get('torch_cuda')}, driver {cuda.get('driver') or 'unknown'}"
                     + (f" (supports CUDA {cuda['driver_cuda']})" if cuda.get("driver_cuda") else "")
                     + (f", cuDNN {cuda['cudnn']}" if cuda.get("cudnn") else "")))
        for gpu in cuda.get("gpus") or []:
            rows.append((f"GPU {gpu['index']}", f"{gpu['name']}, {gpu['memory_gib']} GiB, compute capability {gpu['capability']}"))
    else:
        rows.append(("CUDA", "not available" + (f" (torch built for {cuda['torch_cuda']})" if cuda.get("torch_cuda") else "")))
    run = env.get("run") or {}
    if include_run:
        rows.append(("device / dtype", f"{run.get('device')} / {run.get('dtype')}"))
    elif run.get("gpu"):
        rows.append(("GPU that ran", f"{run['gpu']['name']} ({run['gpu']['memory_gib']} GiB)"))
    backends = env.get("attention_backends") or {}
    for name, b in (backends.get("backends") or {}).items():
        rows.append((f"backend {name}", "available" + (" (auto picks it)" if backends.get("auto") == name else "")
                     if b.get("available") else f"unavailable: {b.get('why_not')}"))
    rows.append(("captured", str(env.get("captured_at"))))
    return rows


# --- HTML ----------------------------------------------------------------------------------------

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


def render_html(report: dict, plots: list[Plot] | None = None, source: str | None = None) -> str:
    """The whole page as a string; ``plots`` from :func:`make_plots` (drawn here when omitted)."""
    plots = make_plots(report) if plots is None else plots
    verdict = report.get("verdict") if report.get("complete") else None
    model = (report.get("model") or {}).get("spec", "unknown model")
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
           '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
           f"<title>esmdiv: {_e(verdict or 'no verdict')} for {_e(model)}</title><style>{_CSS}</style></head><body>",
           f"<h1>esmdiv divergence audit: {_e(model)}</h1>"]
    if verdict:
        out.append(f'<div class="verdict" style="background:{VERDICT_COLOUR[verdict]}">{_e(verdict)}'
                   f"<small>{_e(VERDICT_MEANING[verdict])} (exit code {_e({'ACCEPT': 0, 'VALIDATE': 10, 'FALLBACK': 20}[verdict])})</small></div>")
    else:
        out.append(f'<div class="verdict" style="background:{VERDICT_COLOUR[None]}">NO VERDICT'
                   f"<small>the run did not finish: {_e(incomplete_reason(report))}</small></div>")
    reasons = report.get("reasons") or []
    if reasons:
        out.append("<h2>Reasons</h2><table><tr><th>gate</th><th>result</th><th>value</th><th>threshold</th><th>why</th></tr>")
        for r in reasons:
            cls, word = ("pass", "✓ pass") if r.get("passed") else ("fail", "✗ fail")
            out.append(f'<tr><td>{_e(r.get("gate"))}</td><td class="{cls}">{word}</td><td class="num">{_e(_fmt(r.get("value"), ".6g"))}</td>'
                       f'<td class="num">{_e(_fmt(r.get("threshold"), ".6g"))}</td><td>{_e(r.get("message"))}</td></tr>')
        out.append("</table>")
    for warning in report.get("warnings") or []:
        out.append(f'<div class="warn">warning: {_e(warning)}</div>')

    out.append("<h2>Plots</h2>")
    for plot in plots:
        if plot.png is None:
            out.append(f'<p class="note">{_e(plot.title)}: {_e(plot.caption)}</p>')
            continue
        data = base64.b64encode(plot.png).decode("ascii")
        out.append(f'<figure id="plot-{_e(plot.key)}"><img alt="{_e(plot.title)}" src="data:image/png;base64,{data}"/>'
                   f"<figcaption><b>{_e(plot.title)}.</b> {_e(plot.caption)}</figcaption></figure>")

    rows = _summary_rows(report)
    if rows:
        out.append("<h2>Summary</h2>" + _table(rows))
    worst = _worst(report)
    if worst:
        n = len(report.get("sequences") or [])
        out.append(f"<h2>Worst {len(worst)} of {n} sequences (lowest cosine first)</h2>")
        out.append("<table><tr><th>id</th><th>length</th><th>cosine</th><th>1 − cos</th><th>MAD</th><th>max |diff|</th>"
                   "<th>label v1/v2</th><th>conf v1</th><th>conf v2</th></tr>")
        for s in worst:
            flip = s.get("label_v1") != s.get("label_v2")
            cos = _num(s.get("cosine"))
            out.append(
                f"<tr><td>{_e(s.get('id'))}</td><td class=\"num\">{_e(s.get('length'))}</td>"
                f"<td class=\"num\">{_e(_fmt(cos, '.9f'))}</td><td class=\"num\">{_e('n/a' if cos is None else format(1 - cos, '.2e'))}</td>"
                f"<td class=\"num\">{_e(_fmt(s.get('mad'), '.2e'))}</td><td class=\"num\">{_e(_fmt(s.get('max_abs_diff'), '.2e'))}</td>"
                f"<td class=\"num{' fail' if flip else ''}\">{_e(s.get('label_v1'))}/{_e(s.get('label_v2'))}{' ✗' if flip else ''}</td>"
                f"<td class=\"num\">{_e(_fmt(s.get('confidence_v1'), '.4f'))}</td><td class=\"num\">{_e(_fmt(s.get('confidence_v2'), '.4f'))}</td></tr>")
        out.append("</table>")
    if report.get("thresholds"):
        out.append("<h2>Thresholds</h2>" + _table([(k, str(v)) for k, v in report["thresholds"].items()]))
    out.append("<h2>Run and environment</h2>" + _table(_run_rows(report)))
    from esmdiv import __version__

    out.append(f"<footer>Made by esmdiv {_e(__version__)}" + (f" from <code>{_e(source)}</code>" if source else "")
               + f" (report schema {_e(report.get('schema_version'))}).</footer></body></html>")
    return "\n".join(out) + "\n"


# --- Markdown ------------------------------------------------------------------------------------

def _md(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[tuple[str, str]], header=("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {_md(k)} | {_md(v)} |" for k, v in rows])


def render_markdown(report: dict, plots: list[Plot] | None = None, image_paths: dict[str, str] | None = None,
                    source: str | None = None) -> str:
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
    reasons = report.get("reasons") or []
    if reasons:
        out += ["| gate | result | value | threshold | why |", "|---|---|---:|---:|---|"]
        for r in reasons:
            out.append(f"| {_md(r.get('gate'))} | {'✓ pass' if r.get('passed') else '✗ **fail**'} | {_fmt(r.get('value'), '.6g')} "
                       f"| {_fmt(r.get('threshold'), '.6g')} | {_md(r.get('message'))} |")
        out.append("")
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
    rows = _summary_rows(report)
    if rows:
        out += ["## Summary", "", _md_table(rows, ("metric", "value")), ""]
    worst = _worst(report)
    if worst:
        out += [f"## Worst {len(worst)} of {len(report.get('sequences') or [])} sequences (lowest cosine first)", "",
                "| id | length | cosine | 1 − cos | MAD | max \\|diff\\| | label v1/v2 | conf v1 | conf v2 |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in worst:
            cos = _num(s.get("cosine"))
            flip = s.get("label_v1") != s.get("label_v2")
            out.append(f"| {_md(s.get('id'))} | {s.get('length')} | {_fmt(cos, '.9f')} | {'n/a' if cos is None else format(1 - cos, '.2e')} "
                       f"| {_fmt(s.get('mad'), '.2e')} | {_fmt(s.get('max_abs_diff'), '.2e')} | {s.get('label_v1')}/{s.get('label_v2')}"
                       f"{' ✗' if flip else ''} | {_fmt(s.get('confidence_v1'), '.4f')} | {_fmt(s.get('confidence_v2'), '.4f')} |")
        out.append("")
    if report.get("thresholds"):
        out += ["## Thresholds", "", _md_table([(k, str(v)) for k, v in report["thresholds"].items()], ("threshold", "value")), ""]
    out += ["## Run and environment", "", _md_table(_run_rows(report), ("", "")), ""]
    from esmdiv import __version__

    out.append(f"Made by esmdiv {__version__}" + (f" from `{source}`" if source else "") + f" (report schema {report.get('schema_version')}).")
    return "\n".join(out) + "\n"


def write_reports(report: dict, html_path: str | Path | None = None, markdown_path: str | Path | None = None,
                  plots_in_markdown: bool = True, source: str | None = None) -> list[Path]:
    """Write the HTML page and/or the Markdown (its PNGs in ``<name>_files/`` beside it)."""
    from esmdiv.report.files import write_text

    written: list[Path] = []
    need_plots = html_path is not None or (markdown_path is not None and plots_in_markdown)
    plots = make_plots(report) if need_plots else []
    if html_path is not None:
        write_text(render_html(report, plots, source), html_path, option="--html")
        written.append(Path(html_path))
    if markdown_path is not None:
        markdown_path = Path(markdown_path)
        links: dict[str, str] = {}
        if plots_in_markdown:
            folder = markdown_path.with_name(markdown_path.stem + "_files")
            for plot in plots:
                if plot.png is not None:
                    target = folder / f"{plot.key}.png"
                    write_text(plot.png, target, option="--markdown")
                    links[plot.key] = f"{folder.name}/{target.name}"
                    written.append(target)
        write_text(render_markdown(report, plots if plots_in_markdown else [], links, source), markdown_path, option="--markdown")
        written.append(markdown_path)
    return written
