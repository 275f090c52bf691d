"""Candidate speed-ups of the packed path (issue 14), timed against the current one in one process.

    python benchmarks/packed_variants.py --model random:3B --variants current,repacked,gemms --out $OUT

Variants (each on the lognormal workload, fp16, the same model and kernel):

- ``current``: :func:`esmdiv.forward.packed.packed_forward`, compiled, on the bench's batches
  (since run 23, fc1 and its GELU through quack where it runs: :mod:`esmdiv.forward.mlp`).
- ``torch-fc1``: the same with ``ESMDIV_FC1_KERNEL=torch`` (the path before run 23).
- ``deferred`` (run 9, commit 8e337d6; since commit that followed it, the packed path itself):
  the residual add after fc2 moved into the next layer's first compiled region, where it fuses
  with that layer norm (one kernel fewer per layer).
- ``repacked``: the current path on packs cut by real tokens (at most ``--max-tokens`` each)
  instead of the padded path's batches: fewer, fuller packs.
- ``autotune``: the current path compiled with ``max-autotune-no-cudagraphs`` (Triton GEMM
  templates, which may take the bias, erf-GELU and residual into their epilogues).
- ``gemms``: the four GEMMs of each layer alone on the bench's batches (the ceiling).
- ``quack``, ``quack-break``, ``quack-tuned`` (run 23): fc1 and the erf GELU as one GEMM of the
  ``quack-kernels`` package (CUTLASS DSL; bias and exact-erf GELU in the epilogue, the pre-activation
  never written), in place of cuBLAS then Inductor's GELU kernel. ``quack``: its custom op traced
  inside the compiled region; ``quack-break``: called between two compiled regions; ``-tuned``:
  quack's autotuner picks the tile (its default heuristic otherwise).
- ``quack-pinned``: the same with the tile quack's autotuner chose in run 23, without tuning.
- ``quack-all``, ``quack-all-tuned`` (run 23): every GEMM of a layer through quack (q/k/v; the
  output projection with the residual in its epilogue; fc1 with the erf GELU; fc2), between
  compiled regions.
- ``fc1-cublas``, ``fc1-quack``: fc1 and the GELU alone, every layer's weights, on each pack's shape.

``rounding`` in the JSON: the current path compiled against the same path eager on the smallest
batch, the scale a variant's ``max_abs_diff_vs_current`` is read against.

Prints a table and writes ``packed-variants.json``; each variant's output on the smallest batch is
compared with the current path's (max |diff|) so a fast but wrong variant shows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import esmdiv.forward.packed as packed_module
from esmdiv.forward.attention import resolve_backend
from esmdiv.forward.mlp import FC1_KERNEL_VARIABLE, QUACK_TILE
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import Packed, batches_by_tokens, encode, encoder_table, pack
from esmdiv.input.workloads import lognormal_workload
from esmdiv.model.loading import fused_qkv, load_model

QUACK_VARIANTS = [
    ("quack", False, False),
    ("quack-break", False, True),
    ("quack-tuned", True, True),
    ("quack-pinned", "pinned", True),
]


@torch.inference_mode()
def gemms_only(model, packed: Packed) -> None:
    # random, not zeros: a GPU multiplying zeros draws less power and clocks higher
    x = torch.randn(len(packed.input_ids), model.embed_dim, device=packed.input_ids.device, dtype=torch.float16)
    for layer in model.layers:
        w_qkv, b_qkv = fused_qkv(layer.self_attn)
        F.linear(x, w_qkv, b_qkv)
        F.linear(x, layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias)
        F.linear(F.linear(x, layer.fc1.weight, layer.fc1.bias), layer.fc2.weight, layer.fc2.bias)


def _quack_out(tuned: bool | str, break_graph: bool):
    """``_attention_out`` with fc1 + erf GELU as one quack GEMM (``quack-kernels``); ``tuned``:
    quack's autotuner, its default tile (False) or ``"pinned"`` (:data:`esmdiv.forward.mlp.QUACK_TILE`, no tuning)."""

    def fc1_gelu(h, w1, b1):
        from quack.gemm_interface import gemm_act  # only where asked for: most machines lack it

        if tuned == "pinned":
            from quack.gemm_config import GemmConfig

            config = GemmConfig(**QUACK_TILE)  # the tile the packed path now runs with
            return gemm_act(h, w1.T, bias=b1, activation="gelu_erf", store_preact=False, config=config)[1]
        return gemm_act(h, w1.T, bias=b1, activation="gelu_erf", store_preact=False, tuned=tuned)[1]

    if break_graph:
        fc1_gelu = torch.compiler.disable(fc1_gelu)

    def attention_out(x, o, w_o, b_o, ln_w, ln_b, eps, w1, b1, w2, b2, gelu, fc1):
        x = x + F.linear(o, w_o, b_o)
        h = F.layer_norm(x, x.shape[-1:], ln_w, ln_b, eps)
        return x, F.linear(fc1_gelu(h, w1, b1), w2, b2)

    return attention_out


def _quack_all(tuned: bool):
    """``_attention_in`` and ``_attention_out`` with every GEMM a quack one, called between compiled
    regions (the layer norms, rotary and adds stay Inductor's)."""

    @torch.compiler.disable
    def gemm(a, w, b, act=None, residual=None):
        from quack.gemm_interface import gemm, gemm_act, gemm_add

        if act:
            return gemm_act(a, w.T, bias=b, activation=act, store_preact=False, tuned=tuned)[1]
        if residual is not None:
            return gemm_add(a, w.T, residual, bias=b, tuned=tuned)
        return gemm(a, w.T, bias=b, tuned=tuned)

    def attention_in(x, mlp_out, ln_w, ln_b, eps, w_qkv, b_qkv, cos, sin, num_heads):
        x = x + mlp_out
        h = F.layer_norm(x, x.shape[-1:], ln_w, ln_b, eps)
        q, k, v = gemm(h, w_qkv, b_qkv).view(len(x), 3, num_heads, -1).unbind(1)
        return x, packed_module._apply_rotary(q, cos, sin), packed_module._apply_rotary(k, cos, sin), v

    def attention_out(x, o, w_o, b_o, ln_w, ln_b, eps, w1, b1, w2, b2, gelu, fc1):
        x = gemm(o, w_o, b_o, residual=x)
        h = F.layer_norm(x, x.shape[-1:], ln_w, ln_b, eps)
        return x, gemm(gemm(h, w1, b1, act="gelu_erf"), w2, b2)

    return attention_in, attention_out


def quack_tuned_configs() -> dict[str, str]:
    """The tile configs quack's autotuner chose in this process (or read from its disk cache)."""
    import sys

    tuners = getattr(sys.modules.get("quack.gemm_runtime.autotune"), "_MOD_TUNERS", {})
    return {f"{i}: {key}": str(config) for i, t in enumerate(tuners.values()) for key, config in t.cache.items()}


@torch.inference_mode()
def fc1_gelu_only(model, packed: Packed, quack: bool) -> None:
    h = torch.randn(len(packed.input_ids), model.embed_dim, device=packed.input_ids.device, dtype=torch.float16)
    if quack:
        from quack.gemm_interface import gemm_act
    for layer in model.layers:
        if quack:
            gemm_act(h, layer.fc1.weight.T, bias=layer.fc1.bias, activation="gelu_erf", store_preact=False, tuned=False)
        else:
            _gelu(F.linear(h, layer.fc1.weight, layer.fc1.bias))


_gelu = torch.compile(F.gelu)  # Inductor's erf-GELU kernel, as in the compiled region


def packs_by_real_tokens(tokens: list[torch.Tensor], max_tokens: int) -> list[list[int]]:
    order = sorted(range(len(tokens)), key=lambda i: (-len(tokens[i]), i))
    groups, current, used = [], [], 0
    for i in order:
        if current and used + len(tokens[i]) > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += len(tokens[i])
    return groups + [current] if current else groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:3B")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--variants", default="current,repacked,gemms")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--inductor", action="append", default=[], help="KEY=VALUE: a torch._inductor.config setting")
    args = parser.parse_args()
    for setting in args.inductor:  # before any compile: the settings are read when a graph compiles
        key, value = setting.split("=")
        target = torch._inductor.config
        *path, name = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, name, type(getattr(target, name))(int(value)) if value.isdigit() else value)
    args.out.mkdir(parents=True, exist_ok=True)
    device, dtype = torch.device("cuda"), torch.float16
    loaded = load_model(args.model, device, dtype)
    model = loaded.model
    backend = resolve_backend(args.backend, device, dtype)
    table = encoder_table(loaded.alphabet)
    tokens = [encode(s.sequence, loaded.alphabet, table) for s in lognormal_workload(args.n)]
    n_tokens = sum(len(t) for t in tokens)
    by_slots = batches_by_tokens([len(t) for t in tokens], args.max_tokens)
    bench = [pack([tokens[i] for i in g]).to(device) for g in by_slots]
    fuller = [pack([tokens[i] for i in g]).to(device) for g in packs_by_real_tokens(tokens, args.max_tokens)]
    smallest = min(range(len(bench)), key=lambda i: len(bench[i].input_ids))

    def last(p: Packed, **kw) -> torch.Tensor:
        return packed_forward(model, p, backend, compile=True, **kw).representations[model.num_layers]

    def with_out(attention_out, p: Packed, attention_in=None) -> torch.Tensor:
        # packed_forward compiles whatever ``_attention_in``/``_out`` are when it runs (one graph cache per function)
        kept = packed_module._attention_in, packed_module._attention_out
        packed_module._attention_in = attention_in or kept[0]
        packed_module._attention_out = attention_out
        try:
            return last(p)
        finally:
            packed_module._attention_in, packed_module._attention_out = kept

    quack_all = {"quack-all": _quack_all(False), "quack-all-tuned": _quack_all(True)}

    quack_out = {name: _quack_out(tuned, brk) for name, tuned, brk in QUACK_VARIANTS}

    def torch_fc1(p: Packed) -> torch.Tensor:
        kept = os.environ.get(FC1_KERNEL_VARIABLE)
        os.environ[FC1_KERNEL_VARIABLE] = "torch"
        try:
            return last(p)
        finally:
            if kept is None:
                del os.environ[FC1_KERNEL_VARIABLE]
            else:
                os.environ[FC1_KERNEL_VARIABLE] = kept

    runs = {
        "current": (bench, lambda p: last(p)),
        "torch-fc1": (bench, torch_fc1),
        "repacked": (fuller, lambda p: last(p)),
        "autotune": (bench, lambda p: last(p, compile_mode="max-autotune-no-cudagraphs")),
        "gemms": (bench, lambda p: gemms_only(model, p)),
        **{name: (bench, lambda p, f=f: with_out(f, p)) for name, f in quack_out.items()},
        **{name: (bench, lambda p, f=f: with_out(f[1], p, f[0])) for name, f in quack_all.items()},
        "fc1-cublas": (bench, lambda p: fc1_gelu_only(model, p, quack=False)),
        "fc1-quack": (bench, lambda p: fc1_gelu_only(model, p, quack=True)),
    }
    expected = last(bench[smallest]).float()
    eager = packed_forward(model, bench[smallest], backend).representations[model.num_layers].float()
    results = {"model": args.model, "backend": backend, "tokens": n_tokens, "gpu": torch.cuda.get_device_name()}
    results["rounding"] = float((eager - expected).abs().max())
    print(f"rounding: compiled vs eager current path, max |diff| {results['rounding']:.3g}")
    results["torch"] = torch.__version__
    results["inductor"] = args.inductor
    settings = [s.split("=")[0].split(".")[-1] for s in args.inductor]
    backend_tag = [] if args.backend == "auto" else [args.backend]
    tag = "-".join([*dict.fromkeys(args.variants.split(",")), *settings, *backend_tag])
    for name in args.variants.split(","):
        key = name if name not in results else f"{name} (again)"  # a baseline named twice: before and after
        try:
            results[key] = timed(name, *runs[name], args.repeats, n_tokens, bench[smallest], expected)
        except Exception as error:  # a candidate that fails is a result; the others still run
            results[key] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            print(f"{key:12} failed: {results[key]['error'][:300]}")
        if "tuned" in name:
            results[key]["quack_configs"] = quack_tuned_configs()
        (args.out / f"packed-variants-{tag}.json").write_text(json.dumps(results, indent=1))


def timed(name, packs, run, repeats: int, n_tokens: int, smallest: Packed, expected: torch.Tensor) -> dict:
    start = time.perf_counter()
    for p in packs:  # warm-up: every pack shape once (compiles happen here)
        run(p)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in packs:
            run(p)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    diff = None
    if name not in ("gemms", "repacked") and not name.startswith("fc1"):
        diff = float((run(smallest).float() - expected).abs().max())
    rate = n_tokens / median
    print(f"{name:12} {len(packs):2} packs {rate:10,.0f} tokens/s  warm-up {warm_s:6.1f} s  diff {diff}")
    return {
        "packs": len(packs),
        "median_s": median,
        "tokens_per_s": rate,
        "warm_up_s": warm_s,
        "max_abs_diff_vs_current": diff,
        "seconds": times,
    }


if __name__ == "__main__":
    main()
