"""v2, the packed path: fair-esm's ``ESM2`` computation on a packed batch with no padding.

:func:`packed_forward` runs the same module and weights as :func:`~esmdiv.forward.padded.padded_forward`
on ``input_ids (T,)`` and ``cu_seqlens (B+1,)``: varlen attention, fp32 rotary embeddings whose
positions restart per sequence, one fused q/k/v GEMM. It calls the model's own submodules; it never
copies a weight.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from functools import cache, lru_cache

import torch
import torch.nn.functional as F

from esmdiv.forward.attention import varlen_attention
from esmdiv.forward.faults import Fault
from esmdiv.forward.mlp import fc1_gelu, fc1_kernel
from esmdiv.forward.packing import Packed
from esmdiv.forward.padded import ForwardOutput
from esmdiv.model.loading import fused_qkv

# fair-esm trains with 15 % of tokens chosen, 80 % of those masked (esm/model/esm2.py).
MASK_RATIO_TRAIN = 0.15 * 0.8


@torch.inference_mode()
def packed_forward(
    model,
    packed: Packed,
    backend: str,
    repr_layers=None,
    need_logits: bool = False,
    faults: AbstractSet[Fault] = frozenset(),
    compile: bool = False,
    compile_mode: str | None = None,
) -> ForwardOutput:
    """The padding-free forward. Reads top to bottom like fair-esm's ``ESM2.forward``.

    Args:
        packed: a :class:`~esmdiv.forward.packing.Packed` batch on the model's device.
        backend: attention backend name (:func:`esmdiv.forward.attention.resolve_backend`).
        repr_layers: layers whose ``(T, C)`` hidden states to return (default: the last).
        faults: known bugs to inject on purpose (:mod:`esmdiv.forward.faults`); empty in a normal run.
        compile: run each layer's two dense regions through ``torch.compile`` (CUDA): layer
            norm (with the previous layer's MLP residual), fused q/k/v projection and fp32 rotary in
            one; output projection, residual, layer norm and the erf-GELU MLP in the other, whose
            fc1 and GELU are one quack GEMM where that runs (:mod:`esmdiv.forward.mlp`).
        compile_mode: ``torch.compile``'s mode for those regions (None: its default).
    """
    layers_wanted = {model.num_layers} if repr_layers is None else set(repr_layers)
    ids, cu_seqlens, max_seqlen = packed.input_ids, packed.cu_seqlens, packed.max_seqlen
    # positions restart per sequence, so each is below max_seqlen: the rotary tables are sized from
    # the host, with no device-to-host sync that would stall the GPU between packs
    positions, n_positions = packed.position_ids, max_seqlen
    if Fault.GLOBAL_POSITIONS in faults:
        positions, n_positions = torch.arange(len(ids), device=ids.device), len(ids)
    if Fault.CU_SEQLENS_OFF_BY_ONE in faults:
        cu_seqlens, max_seqlen = _shift_boundaries(cu_seqlens)
    attention_in, attention_out = (
        (_compiled(_attention_in, compile_mode), _compiled(_attention_out, compile_mode))
        if compile
        else (_attention_in, _attention_out)
    )
    gelu = "tanh" if Fault.TANH_GELU in faults else "none"
    fc1 = fc1_kernel(ids.device, model.embed_tokens.weight.dtype) if compile else "torch"

    x = model.embed_scale * model.embed_tokens(ids)  # (T, C)
    if model.token_dropout:
        is_mask = ids == model.mask_idx
        x = x.masked_fill(is_mask[:, None], 0.0)
        if Fault.NO_TOKEN_DROPOUT_SCALE not in faults:
            # Same ops in the same order as fair-esm, per sequence rather than per padded row.
            n_masked = torch.zeros(len(cu_seqlens) - 1, device=ids.device, dtype=torch.int64)
            n_masked.index_add_(0, packed.seq_index, is_mask.to(torch.int64))
            lengths = (packed.cu_seqlens[1:] - packed.cu_seqlens[:-1]).to(torch.int64)
            mask_ratio_observed = n_masked.to(x.dtype) / lengths
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - mask_ratio_observed)[packed.seq_index, None]

    hidden = {0: x} if 0 in layers_wanted else {}
    cos, sin = _rotary(model, positions, n_positions, fp16=Fault.FP16_ROTARY in faults)
    mlp_out = torch.zeros_like(x)  # each layer's last residual add is done by the next layer's first region
    for index, layer in enumerate(model.layers):
        attn = layer.self_attn
        w_qkv, b_qkv = fused_qkv(attn)
        norm1, norm2 = layer.self_attn_layer_norm, layer.final_layer_norm
        x, q, k, v = attention_in(
            x, mlp_out, norm1.weight, norm1.bias, norm1.eps, w_qkv, b_qkv, cos, sin, attn.num_heads
        )
        o = varlen_attention(q, k, v, cu_seqlens, max_seqlen, backend, scale=attn.scaling)
        x, mlp_out = attention_out(
            x,
            o.flatten(1),
            attn.out_proj.weight,
            attn.out_proj.bias,
            norm2.weight,
            norm2.bias,
            norm2.eps,
            layer.fc1.weight,
            layer.fc1.bias,
            layer.fc2.weight,
            layer.fc2.bias,
            gelu,
            fc1,
        )
        if index + 1 in layers_wanted and index + 1 < model.num_layers:  # the last one is kept after the final norm
            hidden[index + 1] = x + mlp_out
    x = x + mlp_out

    if Fault.NO_FINAL_LAYER_NORM not in faults:
        x = model.emb_layer_norm_after(x)
    if model.num_layers in layers_wanted:
        hidden[model.num_layers] = x
    return ForwardOutput(hidden, model.lm_head(x) if need_logits else None)


def _attention_in(x, mlp_out, ln_w, ln_b, eps: float, w_qkv, b_qkv, cos, sin, num_heads: int):
    """The previous layer's MLP residual, layer norm, one q/k/v GEMM, rotary on q and k:
    ``(T, C)`` -> the residual stream ``(T, C)`` and three ``(T, H, D)``."""
    x = x + mlp_out  # fused with the layer norm's read: one kernel fewer per layer than a separate add
    h = F.layer_norm(x, x.shape[-1:], ln_w, ln_b, eps)
    q, k, v = F.linear(h, w_qkv, b_qkv).view(len(x), 3, num_heads, -1).unbind(1)
    # v stays a strided view of the GEMM output: the kernels need only a contiguous last dim.
    return x, _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin), v


def _attention_out(x, o, w_o, b_o, ln_w, ln_b, eps: float, w1, b1, w2, b2, gelu: str, fc1: str):
    """Output projection and residual, then layer norm and the erf-GELU MLP (fc1 and its GELU by
    kernel ``fc1``): the residual stream ``(T, C)`` and the MLP's output ``(T, C)``, which the
    caller adds to it."""
    x = x + F.linear(o, w_o, b_o)
    h = F.layer_norm(x, x.shape[-1:], ln_w, ln_b, eps)
    return x, F.linear(fc1_gelu(h, w1, b1, fc1, approximate=gelu), w2, b2)


@cache
def _compiled(fn, mode: str | None = None):
    # Weights are arguments, so one graph serves every layer. Shapes: automatic dynamic, so
    # after the first new pack length only the token dimension becomes symbolic; the widths
    # stay static and the kernels keep simple index arithmetic. Room for the fault variants
    # of the self-test (each is its own graph).
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    # ``mode``: torch.compile's (esmdiv bench --compile-mode), e.g. "max-autotune-no-cudagraphs" for
    # Triton GEMMs with the bias, GELU and residual adds fused into their epilogues.
    return torch.compile(fn, mode=mode)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(T, H, D)`` by per-token angles, in the tables' precision.

    ``cos``/``sin``: ``(T, 1, D/2)``. The same arithmetic as fair-esm's
    ``x * cos + rotate_half(x) * sin`` with its duplicated tables, reading half the table.
    """
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def _rotary(model, positions: torch.Tensor, n_positions: int, fp16: bool = False):
    """cos and sin ``(T, 1, head_dim / 2)`` for each token's position (each below ``n_positions``):
    fp32 (fp64 for an fp64 model).

    With ``fp16`` the tables are built as fair-esm's half model builds them (the
    ``inv_freq`` buffer and positions in fp16): the known fp16-rotary bug.
    """
    head_dim = model.layers[0].self_attn.head_dim
    if fp16:
        inv_freq = _inv_freq(head_dim, positions.device, torch.float32).half()
        freqs = torch.outer(positions.half(), inv_freq)
        return freqs.cos()[:, None, :], freqs.sin()[:, None, :]
    dtype = torch.float64 if model.embed_tokens.weight.dtype == torch.float64 else torch.float32
    cos, sin = _rotary_tables(head_dim, _table_size(n_positions), positions.device, dtype)
    return cos[positions][:, None, :], sin[positions][:, None, :]


def _table_size(n: int) -> int:
    return max(1024, 1 << (n - 1).bit_length())


@lru_cache(maxsize=16)
def _rotary_tables(head_dim: int, n_positions: int, device: torch.device, dtype: torch.dtype):
    freqs = torch.outer(torch.arange(n_positions, device=device, dtype=dtype), _inv_freq(head_dim, device, dtype))
    return freqs.cos(), freqs.sin()


def _inv_freq(head_dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Recomputed rather than read from the module, whose buffer is half in a half model.
    return 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim))


def _shift_boundaries(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, int]:
    shifted = cu_seqlens.clone()
    shifted[1:-1] += 1
    shifted = torch.minimum(shifted, cu_seqlens[-1])
    return shifted, int((shifted[1:] - shifted[:-1]).max())
