"""Known bugs of packed ESM-2 forwards, injectable on purpose.

Each one once made a real fast path disagree with fair-esm. The tests and ``esmdiv selftest``
force them into the packed path to prove the audit notices; a normal run injects none.
"""

from __future__ import annotations

import enum


class Fault(str, enum.Enum):
    EOS_IN_POOLING = "eos-in-pooling"  # mean-pool over EOS as well as the residues
    NO_TOKEN_DROPOUT_SCALE = "no-token-dropout-scale"  # skip fair-esm's 0.88 / (1 - mask ratio)
    TANH_GELU = "tanh-gelu"  # tanh approximation instead of fair-esm's erf GELU
    FP16_ROTARY = "fp16-rotary"  # rotary tables built and applied in fp16
    GLOBAL_POSITIONS = "global-positions"  # rotary positions run on across the pack
    CU_SEQLENS_OFF_BY_ONE = "cu-seqlens-off-by-one"  # every inner boundary one token late
    NO_FINAL_LAYER_NORM = "no-final-layer-norm"  # last representation without emb_layer_norm_after

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Fault.EOS_IN_POOLING: "EOS included in mean pooling",
    Fault.NO_TOKEN_DROPOUT_SCALE: "token-dropout scaling skipped",
    Fault.TANH_GELU: "tanh GELU instead of erf GELU",
    Fault.FP16_ROTARY: "rotary embeddings computed in fp16",
    Fault.GLOBAL_POSITIONS: "rotary positions not restarting per sequence",
    Fault.CU_SEQLENS_OFF_BY_ONE: "cu_seqlens boundaries off by one",
    Fault.NO_FINAL_LAYER_NORM: "final layer norm missing",
}
