"""Plain-text pieces of the reports, shared by every renderer: the pages for people (HTML and
Markdown), the terminal (``esmdiv check`` and ``esmdiv env``) and JUnit.

Everything here reads a report dict (what ``--json`` writes) or an environment fingerprint and
returns strings or ``(label, value)`` rows; nothing here imports torch, rich or matplotlib.
"""

from __future__ import annotations

import math

VERDICT_MEANING = {
    "ACCEPT": "the packed path may replace the padded one",
    "VALIDATE": "the paths differ enough that a person must look before shipping",
    "FALLBACK": "keep the padded path",
}
WORST_ROWS = 20


def finite_number(value) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def sequence_names(seqs: list[dict], limit: int = 5) -> str:
    """The first ``limit`` sequences' ids, and how many more."""
    shown = ", ".join(s["id"] for s in seqs[:limit])
    return shown + (f" (+{len(seqs) - limit} more)" if len(seqs) > limit else "")


def fmt(value, spec: str, missing: str = "n/a") -> str:
    """``value`` formatted by ``spec``; ``missing`` where it is not a finite number."""
    v = finite_number(value)
    return missing if v is None else format(v, spec)


def provenance_line(provenance: dict) -> str:
    """A kernel's provenance in one line: backend, package and version, the function, what it was
    built or is compiled for, and the GPU's compute capability."""
    p = provenance or {}
    line = f"{p.get('backend')}: {p.get('package')} {p.get('version') or '(version unknown)'}, {p.get('function')}"
    if p.get("built_for"):
        line += f"; {p['built_for']}"
    if p.get("device_capability"):
        line += f"; GPU compute capability {p['device_capability']}"
    return line


def kernel_provenances(report: dict) -> list[dict]:
    """The provenance of every kernel a report audited (several, or the one)."""
    kernels = report.get("kernels") or []
    if kernels:
        return [k.get("provenance") or {"backend": k.get("backend")} for k in kernels]
    return [report["kernel"]] if report.get("kernel") else []


KERNEL_COLUMNS = ("kernel", "verdict", "agreement", "cosine min", "MAD max", "max |diff|", "packed tokens/s")


def kernel_rows(report: dict) -> list[tuple[str, ...]]:
    """One row per kernel of a multi-kernel report (:data:`KERNEL_COLUMNS`): its verdict and headline
    numbers, so a team picks the kernel it ships from one table."""
    rows = []
    for k in report.get("kernels") or []:
        s = k.get("summary") or {}
        agreement = (s.get("prediction") or {}).get("agreement")
        rows.append(
            (
                str(k.get("backend")),
                f"{k.get('verdict')} (exit {k.get('exit_code')})",
                fmt(agreement, ".2%"),
                fmt((s.get("cosine") or {}).get("min"), ".9f"),
                fmt((s.get("mad") or {}).get("max"), ".2e"),
                fmt(s.get("max_abs_diff"), ".2e"),
                fmt((k.get("timings") or {}).get("packed_tokens_per_s"), ",.0f"),
            )
        )
    return rows


def worst_sequences(report: dict, n: int = WORST_ROWS) -> list[dict]:
    """The ``n`` sequences of a report with the lowest pooled cosine (then the largest MAD)."""

    def key(s):
        cos = finite_number(s.get("cosine"))
        return (-math.inf if cos is None else cos, -(finite_number(s.get("mad")) or math.inf))

    return sorted(report.get("sequences") or [], key=key)[:n]


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The summary table of the pages for people, as (label, value) rows."""
    s = report.get("summary") or {}
    if not s:
        return []
    p = s.get("prediction") or {}
    rows = [
        ("sequences audited", str(s.get("n"))),
        (
            "label agreement",
            f"{fmt(p.get('agreement'), '.2%')} ({p.get('n', 0) - p.get('disagreements', 0)}/{p.get('n')})",
        ),
        ("confidence Pearson r", fmt(p.get("pearson"), ".7f", f"n/a ({p.get('pearson_note')})")),
        ("confidence diff mean / max", f"{fmt(p.get('mean_conf_diff'), '.2e')} / {fmt(p.get('max_conf_diff'), '.2e')}"),
        (
            "pooled cosine min / mean / max",
            " / ".join(fmt((s.get("cosine") or {}).get(k), ".9f") for k in ("min", "mean", "max")),
        ),
        (
            "pooled MAD min / mean / max",
            " / ".join(fmt((s.get("mad") or {}).get(k), ".2e") for k in ("min", "mean", "max")),
        ),
        ("max |diff| of any residue element", fmt(s.get("max_abs_diff"), ".2e")),
    ]
    if s.get("nonfinite"):
        rows.append(("non-finite outputs", "; ".join(s["nonfinite"][:10])))
    t = report.get("timings") or {}
    if finite_number(t.get("padded_tokens_per_s")) and finite_number(t.get("packed_tokens_per_s")):
        rows.append(
            (
                "tokens/s padded / packed",
                f"{t['padded_tokens_per_s']:,.0f} / {t['packed_tokens_per_s']:,.0f} (audit timing, not a benchmark)",
            )
        )
    return rows


def run_rows(report: dict) -> list[tuple[str, str]]:
    """The run-and-environment table of the pages for people, as (label, value) rows."""
    model = report.get("model") or {}
    env = report.get("environment") or {}
    inp = report.get("input") or {}
    rows = []
    if model:
        label = (
            f"{model.get('spec')} ({model.get('num_layers')} layers, {model.get('embed_dim')} dims, "
            f"{model.get('attention_heads')} heads)"
        )
        rows.append(
            ("model", label + (" — RANDOM WEIGHTS, not a trained model" if model.get("random_weights") else ""))
        )
    weights = ((env.get("model") or {}).get("weights")) or {}
    if weights:
        rows.append(("weights sha256", f"{weights.get('value')} ({weights.get('scope')})"))
    if "head" in report:
        rows.append(("prediction head", str(report["head"])))
    run = env.get("run") or {}
    rows.append(
        (
            "device / dtype / backend",
            f"{report.get('device', run.get('device'))} / {report.get('dtype', run.get('dtype'))} / "
            f"{report.get('backend', run.get('backend'))}",
        )
    )
    if inp:
        rows.append(
            (
                "input",
                f"{inp.get('path')}: {inp.get('records')} records, {inp.get('audited')} audited, "
                f"{len(inp.get('truncated') or [])} truncated, {len(inp.get('skipped') or [])} skipped",
            )
        )
    for provenance in kernel_provenances(report):
        rows.append((f"kernel {provenance.get('backend')}", provenance_line(provenance)))
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
    source = f" (from {e['commit_from']})" if e.get("commit_from") and e["commit_from"] != "git checkout" else ""
    rows = [
        (
            "esmdiv",
            f"{e.get('version')}"
            + (
                f", commit {commit}{source}" + (" (with uncommitted changes)" if e.get("git_dirty") else "")
                if commit
                else ", commit unknown" + (f": {e['commit_unknown_reason']}" if e.get("commit_unknown_reason") else "")
            ),
        ),
        ("Python", f"{py.get('version')} ({py.get('implementation')})"),
        (
            "torch / fair-esm / flash-attn / flash-attn-4",
            f"{pk.get('torch')} / {pk.get('fair-esm') or 'absent'} / {pk.get('flash-attn') or 'absent'} / "
            f"{pk.get('flash-attn-4') or 'absent'}",
        ),
        ("platform", f"{plat.get('system')} {plat.get('release')} {plat.get('machine')}"),
    ]
    libraries = {k: v for k, v in pk.items() if k == "triton" or k.startswith(("nvidia-cublas", "nvidia-cudnn"))}
    if libraries:
        rows.append(("triton / cuBLAS / cuDNN", ", ".join(f"{k} {v or 'absent'}" for k, v in libraries.items())))
    if env.get("numerics"):
        rows.append(("numerics", numerics_line(env["numerics"])))
    if cuda.get("available"):
        rows.append(
            (
                "CUDA",
                f"torch built for {cuda.get('torch_cuda')}, driver {cuda.get('driver') or 'unknown'}"
                + (f" (supports CUDA {cuda['driver_cuda']})" if cuda.get("driver_cuda") else "")
                + (f", cuDNN {cuda['cudnn']}" if cuda.get("cudnn") else ""),
            )
        )
        for gpu in cuda.get("gpus") or []:
            rows.append(
                (
                    f"GPU {gpu['index']}",
                    f"{gpu['name']}, {gpu['memory_gib']} GiB, compute capability {gpu['capability']}",
                )
            )
    else:
        rows.append(
            ("CUDA", "not available" + (f" (torch built for {cuda['torch_cuda']})" if cuda.get("torch_cuda") else ""))
        )
    run = env.get("run") or {}
    if include_run:
        rows.append(("device / dtype", f"{run.get('device')} / {run.get('dtype')}"))
    elif run.get("gpu"):
        rows.append(("GPU that ran", f"{run['gpu']['name']} ({run['gpu']['memory_gib']} GiB)"))
    backends = env.get("attention_backends") or {}
    for name, b in (backends.get("backends") or {}).items():
        what = provenance_line(b["provenance"]).split(": ", 1)[1] if b.get("provenance") else None
        if b.get("available"):
            value = (
                "available"
                + (" (auto picks it)" if backends.get("auto") == name else "")
                + (f": {what}" if what else "")
            )
        else:
            value = f"unavailable: {b.get('why_not')}" + (f" — installed: {what}" if what else "")
        rows.append((f"backend {name}", value))
    rows.append(("captured", str(env.get("captured_at"))))
    return rows


def numerics_line(n: dict) -> str:
    """The numerics block in one line: TF32, float32 matmul precision, determinism, threads, and
    the environment variables that are set."""

    def on(value) -> str:
        return "unknown" if value is None else "on" if value else "off"

    parts = [
        f"TF32 matmul {on(n.get('matmul_allow_tf32'))}, cuDNN {on(n.get('cudnn_allow_tf32'))}",
        f"float32 matmul precision {n.get('float32_matmul_precision')}",
        f"deterministic algorithms {on(n.get('deterministic_algorithms'))}",
        f"{n.get('torch_threads')} torch threads",
    ]
    parts += [f"{k}={v}" for k, v in (n.get("env") or {}).items() if v is not None]
    return "; ".join(parts)


def environment_table_rows(env: dict) -> list[tuple[str, str]]:
    """What ``esmdiv env`` prints: the fingerprint's rows, then the model and input when given,
    and the capture time last."""
    rows = environment_rows(env)
    captured = rows.pop()  # stays last
    if env["model"]:
        w = env["model"]["weights"]
        rows += [
            ("model", f"{env['model']['spec']} ({env['model']['source']})"),
            ("weights sha256", f"{w['value']} ({w['scope']})"),
        ]
    if env["input"]:
        i = env["input"]
        rows += [
            ("input", f"{i['path']}: {i['records']} records, {i['bytes']:,} bytes"),
            ("input sha256", i["sha256"]),
        ]
    return rows + [captured]


def describe(env: dict) -> str:
    """One line for logs: versions, GPU and the weights digest."""
    p = env["packages"]
    parts = [
        f"esmdiv {env['esmdiv']['version']}"
        + (
            f" ({env['esmdiv']['git_commit'][:10]}" + ("+dirty" if env["esmdiv"].get("git_dirty") else "") + ")"
            if env["esmdiv"].get("git_commit")
            else ""
        ),
        f"torch {p['torch']}",
        f"fair-esm {p['fair-esm'] or 'absent'}",
        f"flash-attn {p['flash-attn'] or 'absent'}",
        *([f"flash-attn-4 {p['flash-attn-4']}"] if p.get("flash-attn-4") else []),
        f"Python {env['python']['version']}",
    ]
    gpu = env["run"].get("gpu")
    if gpu:
        parts.append(
            f"{gpu['name']} ({gpu['memory_gib']} GiB, driver {env['cuda']['driver'] or '?'}, "
            f"CUDA {env['cuda']['torch_cuda']})"
        )
    if env.get("model"):
        w = env["model"]["weights"]
        parts.append(f"weights sha256 {w['value'][:12]}… ({w['scope']})")
    return ", ".join(parts)
