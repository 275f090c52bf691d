"""Hugging Face ``transformers.EsmModel`` (sdpa attention) over the same weights, as a timing peer.

:func:`build_hf_peer` builds an ``EsmModel`` whose configuration is read off fair-esm's ``ESM2``
and whose parameters *are* that model's tensors: the HF modules are created on the meta device
and the fair-esm tensors assigned to them (the reverse of the HF -> fair-esm key map in
:mod:`esmdiv.model.loading`), so the peer runs the same weights in the same dtype on the same device and
costs no second copy of them in memory. Only the rotary ``inv_freq`` is new: fp32, as HF computes it.

``transformers`` is optional: :func:`hf_unavailable` says why the peer cannot run, or ``None``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from esmdiv.errors import EnvironmentUnavailable
from esmdiv.model.loading import _HF_LAYER_MAP, _HF_TOP_MAP, LoadedModel

# HF module path inside a layer -> fair-esm's, and HF top-level key -> fair-esm's.
_LAYER_TO_FAIR = dict(_HF_LAYER_MAP)
_TOP_TO_FAIR = {hf: fair for hf, fair in _HF_TOP_MAP.items() if not hf.startswith("lm_head.")}
_TOP_TO_FAIR.update(
    {f"contact_head.regression.{kind}": f"contact_head.regression.{kind}" for kind in ("weight", "bias")}
)


def hf_unavailable() -> str | None:
    """``None`` when ``transformers`` (with ``EsmModel``) can be imported, else why not."""
    if importlib.util.find_spec("transformers") is None:
        return "transformers not installed"
    try:
        from transformers import EsmConfig, EsmModel  # noqa: F401
    except Exception as err:  # noqa: BLE001 - a broken install is "not available", whatever it raises
        first_line = str(err).splitlines()[0][:120] if str(err) else ""
        return f"transformers cannot be imported ({type(err).__name__}: {first_line})"
    return None


@dataclass
class HFPeer:
    """``EsmModel`` sharing ``loaded``'s weights, and the transformers version that built it."""

    model: Any  # transformers.EsmModel, eval mode, attn_implementation "sdpa"
    transformers_version: str
    attn_implementation: str


def hf_config(loaded: LoadedModel, attn_implementation: str = "sdpa"):
    """``EsmConfig`` describing fair-esm's ``ESM2`` in ``loaded`` (ESM-2: rotary, no embedding layer norm)."""
    from transformers import EsmConfig

    model, alphabet = loaded.model, loaded.alphabet
    first = model.layers[0]
    config = EsmConfig(
        vocab_size=model.embed_tokens.num_embeddings,
        hidden_size=model.embed_dim,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.attention_heads,
        intermediate_size=first.fc1.out_features,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        layer_norm_eps=first.self_attn_layer_norm.eps,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=bool(model.token_dropout),
        pad_token_id=alphabet.padding_idx,
        mask_token_id=alphabet.mask_idx,
    )
    config._attn_implementation = attn_implementation
    return config


def fair_key(hf_key: str) -> str | None:
    """The fair-esm ``ESM2`` state-dict key holding an HF ``EsmModel`` parameter, or ``None``."""
    if hf_key in _TOP_TO_FAIR:
        return _TOP_TO_FAIR[hf_key]
    parts = hf_key.split(".")
    # encoder.layer.<i>.<module path>.<weight|bias>
    if len(parts) >= 5 and parts[:2] == ["encoder", "layer"] and parts[2].isdigit():
        module = ".".join(parts[3:-1])
        if module in _LAYER_TO_FAIR:
            return f"layers.{parts[2]}.{_LAYER_TO_FAIR[module]}.{parts[-1]}"
    return None


def build_hf_peer(loaded: LoadedModel, attn_implementation: str = "sdpa") -> HFPeer:
    """An ``EsmModel`` without pooler whose parameters are ``loaded.model``'s own tensors.

    Raises ``EnvironmentUnavailable`` without transformers, or when this transformers version's
    ``EsmModel`` has a parameter or buffer that the mapping does not know.
    """
    why = hf_unavailable()
    if why:
        raise EnvironmentUnavailable(f"the Hugging Face peer is not available: {why}")
    import transformers
    from transformers import EsmModel

    model = loaded.model
    fair_state = model.state_dict()
    device = model.embed_tokens.weight.device
    with torch.device("meta"):
        peer = EsmModel(hf_config(loaded, attn_implementation), add_pooling_layer=False)
    state: dict[str, torch.Tensor] = {}
    for key, meta_tensor in peer.state_dict().items():
        if key.endswith("inv_freq"):
            head_dim = model.embed_dim // model.attention_heads
            state[key] = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
            continue
        source = fair_key(key)
        if source is None or source not in fair_state:
            raise EnvironmentUnavailable(
                f"transformers {transformers.__version__}: EsmModel key '{key}' has no fair-esm counterpart"
            )
        tensor = fair_state[source]
        if tuple(tensor.shape) != tuple(meta_tensor.shape):
            raise EnvironmentUnavailable(
                f"transformers {transformers.__version__}: EsmModel '{key}' {tuple(meta_tensor.shape)} does not "
                f"match fair-esm '{source}' {tuple(tensor.shape)}"
            )
        state[key] = tensor
    # assign=True: the HF parameters become views of fair-esm's tensors (no copy, same dtype/device).
    peer.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers are not in the state dict; rebuild them off the meta device.
    for name, buffer in list(peer.named_buffers()):
        if buffer.is_meta:
            owner = peer.get_submodule(name.rpartition(".")[0]) if "." in name else peer
            leaf = name.rpartition(".")[2]
            if leaf == "position_ids":
                owner.register_buffer(
                    leaf, torch.arange(buffer.shape[-1], device=device).expand((1, -1)), persistent=False
                )
            else:
                raise EnvironmentUnavailable(
                    f"transformers {transformers.__version__}: EsmModel buffer '{name}' is not handled by esmdiv"
                )
    peer.eval()
    return HFPeer(peer, transformers.__version__, peer.config._attn_implementation)


@torch.inference_mode()
def hf_forward(peer: HFPeer, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state ``(B, L, C)`` for right-padded ``tokens`` ``(B, L)`` and ``attention_mask`` ``(B, L)``
    (1 on real tokens, 0 on padding). Position ids are HF's default 0..L-1, right padding keeps them right."""
    return peer.model(input_ids=tokens, attention_mask=attention_mask).last_hidden_state
