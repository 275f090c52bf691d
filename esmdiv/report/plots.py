"""The plots of the pages for people, drawn with matplotlib on Agg canvases (no display needed).

Each is drawn only when the run has what it needs:

1. ``length``: 1 − pooled cosine and pooled MAD against sequence length, both gates' thresholds
   drawn, sequences that break a gate in red, label flips ringed.
2. ``mad_hist``: the distribution of pooled MAD (log bins) with the ``max_mad`` threshold.
3. ``confidence``: v2 against v1 confidence with the identity line, and their difference.
4. ``trace``: per-layer divergence (max abs diff, relative L2, 1 − cosine) when the report has a
   ``trace`` section (a list of ``{layer, max_abs_diff, rel_l2, cosine}``); a note otherwise.
"""

from __future__ import annotations

import io
import math
import re
import sys
from dataclasses import dataclass, field

from esmdiv.errors import EnvironmentUnavailable
from esmdiv.report.gates import agreement_gate_failed, sequence_problems
from esmdiv.report.text import finite_number, sequence_names

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
        {
            "title": ax.get_title(),
            "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(),
            "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
        }
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
    agreement_failed = agreement_gate_failed(report)
    ok, bad, nonfinite = [], [], []
    for seq in report.get("sequences") or []:
        if finite_number(seq.get("cosine")) is None or finite_number(seq.get("mad")) is None:
            nonfinite.append(seq)
        elif thresholds and sequence_problems(seq, thresholds, agreement_failed):
            bad.append(seq)
        else:
            ok.append(seq)
    return ok, bad, nonfinite


# --- the plots -------------------------------------------------------------------------------------


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
        (
            ax_cos,
            _one_minus_cos,
            cos_floor,
            1 - t["min_cosine"] if "min_cosine" in t else None,
            "1 − pooled cosine (log; lower is closer)",
            f"gate --min-cosine {t.get('min_cosine')}: fails on or above",
        ),
        (
            ax_mad,
            lambda s: s["mad"],
            mad_floor,
            t.get("max_mad"),
            "pooled MAD (log; lower is closer)",
            f"gate --max-mad {t.get('max_mad')}: fails on or above",
        ),
    ):
        for group, colour, marker, name in ((ok, _PASS, "o", "passes every gate"), (bad, _FAIL, "X", "breaks a gate")):
            if not group:
                continue
            ys = [max(metric(s), floor) for s in group]
            ax.scatter(
                [s["length"] for s in group],
                ys,
                s=22 if colour == _PASS else 46,
                c=colour,
                marker=marker,
                alpha=0.75,
                linewidths=0,
                label=f"{name} ({len(group)})",
                zorder=3,
            )
        flips = [s for s in everything if s.get("label_v1") != s.get("label_v2")]
        if flips:
            ax.scatter(
                [s["length"] for s in flips],
                [max(metric(s), floor) for s in flips],
                s=110,
                facecolors="none",
                edgecolors=_FLIP,
                linewidths=1.6,
                label=f"label flipped ({len(flips)})",
                zorder=4,
            )
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
    notes = [
        f"{len(everything)} sequences; dashed red lines are the gates (--min-cosine {t.get('min_cosine')}, "
        f"--max-mad {t.get('max_mad')}): a point on or above its line fails that gate."
    ]
    if zero_cos:
        notes.append(f"{zero_cos} sequence(s) with cosine exactly 1 drawn at {cos_floor:.0e}.")
    if nonfinite:
        notes.append(f"{len(nonfinite)} sequence(s) with non-finite output not plotted: {sequence_names(nonfinite)}.")
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
    left, right = 10**lo / 2, 10**hi * 2
    if "max_mad" in t:
        gate = t["max_mad"]
        ax.axvline(
            gate, color=_THRESH, linestyle="--", linewidth=1.5, label=f"gate --max-mad {gate:g}: fails on or above"
        )
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
        caption += (
            f" Headroom: the largest MAD is {t['max_mad'] / max(mads):.3g}× below the gate."
            if max(mads) < t["max_mad"]
            else ""
        )
    if nonfinite:
        caption += f" {len(nonfinite)} non-finite sequence(s) left out."
    return _drawn("mad_hist", title, caption, fig)


def _confidence_plot(report: dict) -> Plot:
    title = "Classifier confidence: v1 (padded) against v2 (packed)"
    seqs = [
        s
        for s in report.get("sequences") or []
        if finite_number(s.get("confidence_v1")) is not None and finite_number(s.get("confidence_v2")) is not None
    ]
    if not seqs:
        return Plot("confidence", title, "No finite confidences: nothing to plot.", None)
    fig, (ax, ax_diff) = _figure(10.5, 4.2, cols=2)
    same = [s for s in seqs if s.get("label_v1") == s.get("label_v2")]
    flips = [s for s in seqs if s.get("label_v1") != s.get("label_v2")]
    for group, colour, marker, name in ((same, _PASS, "o", "same label"), (flips, _FAIL, "X", "label flipped")):
        if group:
            ax.scatter(
                [s["confidence_v1"] for s in group],
                [s["confidence_v2"] for s in group],
                s=24 if colour == _PASS else 50,
                c=colour,
                marker=marker,
                alpha=0.75,
                linewidths=0,
                label=f"{name} ({len(group)})",
                zorder=3,
            )
            ax_diff.scatter(
                [s["confidence_v1"] for s in group],
                [s["confidence_v2"] - s["confidence_v1"] for s in group],
                s=24 if colour == _PASS else 50,
                c=colour,
                marker=marker,
                alpha=0.75,
                linewidths=0,
                zorder=3,
            )
    values = [s["confidence_v1"] for s in seqs] + [s["confidence_v2"] for s in seqs]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.05, 0.01)
    ax.plot(
        [lo - pad, hi + pad],
        [lo - pad, hi + pad],
        color="#57606a",
        linestyle="--",
        linewidth=1,
        label="v2 = v1",
        zorder=2,
    )
    binary = _binary_head(report.get("head") or "")
    if binary:
        for a in (ax, ax_diff):
            a.axvline(
                0.5,
                color=_THRESH,
                linestyle=":",
                linewidth=1.2,
                label="label boundary 0.5 (binary head)" if a is ax else None,
            )
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
    caption = (
        f"Confidence is P(class 1) for a binary head, else the probability of v1's label. "
        f"Label agreement {p.get('agreement', float('nan')):.2%}"
        + (
            f", largest confidence difference {p['max_conf_diff']:.2e}"
            if finite_number(p.get("max_conf_diff")) is not None
            else ""
        )
        + (". Points near the 0.5 boundary are the ones a small difference can flip." if binary else ".")
    )
    return _drawn("confidence", title, caption, fig)


def _binary_head(head: str) -> bool:
    return bool(re.search(r"\b2 classes\b|Linear\(\d+, 2\)", head))


def _trace_plot(report: dict) -> Plot:
    title = "Divergence layer by layer"
    layers = _trace_layers(report)
    if layers is None:
        return Plot(
            "trace", title, "This run did not trace per-layer divergence (the report has no 'trace' section).", None
        )
    layers = sorted(layers, key=lambda t: t["layer"])
    xs = [t["layer"] for t in layers]
    fig, (ax_abs, ax_rel) = _figure(10.5, 4.0, cols=2)
    series = [("max_abs_diff", ax_abs, "max |v2 − v1|", _FAIL, "o")]
    series += [
        ("rel_l2", ax_rel, "relative L2 ‖v2 − v1‖ / ‖v1‖", _PASS, "o"),
        ("one_minus_cos", ax_rel, "1 − cosine", _FLIP, "s"),
    ]
    for key, ax, label, colour, marker in series:
        if key == "one_minus_cos":
            ys = [None if finite_number(t.get("cosine")) is None else max(0.0, 1 - t["cosine"]) for t in layers]
        else:
            ys = [finite_number(t.get(key)) for t in layers]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=colour,
                marker=marker,
                markersize=4,
                linewidth=1.5,
                label=label,
            )
    for ax, ylabel in ((ax_abs, "max absolute difference (log)"), (ax_rel, "relative divergence (log)")):
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=8, framealpha=0.85)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=10)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_abs.set_title("Largest elementwise difference per layer", fontsize=11)
    ax_rel.set_title("Relative L2 and 1 − cosine per layer", fontsize=11)
    worst = max(layers, key=lambda t: finite_number(t.get("rel_l2")) or 0.0)
    caption = (
        f"{len(layers)} layers traced. Growth with depth shows where the paths part; the largest relative L2 "
        f"is at layer {worst['layer']}" + (f" ({worst['rel_l2']:.2e})." if finite_number(worst.get("rel_l2")) else ".")
    )
    return _drawn("trace", title, caption, fig)
