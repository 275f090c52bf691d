"""Loading an ESM-2 model from whatever a user names, always onto fair-esm's own ``ESM2`` module.

A spec is one of:

- ``random:<arch>[:<seed>]``: a fair-esm architecture (8M, 35M, 150M, 650M, 3B, 15B) with seeded
  random weights (seed 0 unless given). Never a trained model, and every report says so.
- a fair-esm model name (``esm2_t33_650M_UR50D``): read from the torch hub cache, downloaded
  there by fair-esm's URL scheme when the network allows.
- a fair-esm checkpoint file (``.pt``) or a ``.safetensors`` state dict, or the
  ``*.index.json`` of a sharded one (each shard read as its format is read).
- a Hugging Face ESM checkpoint folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, either possibly sharded with its ``*.index.json``), mapped key by key
  onto ``ESM2``.
- a Hugging Face model id (``facebook/esm2_t33_650M_UR50D``): resolved to a folder in the
  Hugging Face cache by :mod:`esmdiv.model.hub`, then read as a folder.

Every ``torch.load`` is ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from esmdiv.errors import CheckpointError, EnvironmentUnavailable, InputError
from esmdiv.model.hub import looks_like_hub_id, resolve_hub_id

#: fair-esm's ESM-2 architectures: name -> (layers, embed_dim, attention_heads).
ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "8M": (6, 320, 20),
    "35M": (12, 480, 20),
    "150M": (30, 640, 20),
    "650M": (33, 1280, 20),
    "3B": (36, 2560, 40),
    "15B": (48, 5120, 40),
}
FAIR_ESM_NAMES: dict[str, str] = {
    "esm2_t6_8M_UR50D": "8M",
    "esm2_t12_35M_UR50D": "35M",
    "esm2_t30_150M_UR50D": "150M",
    "esm2_t33_650M_UR50D": "650M",
    "esm2_t36_3B_UR50D": "3B",
    "esm2_t48_15B_UR50D": "15B",
}
FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"


@dataclass
class ModelInfo:
    """What was loaded, for reports."""

    spec: str
    # "random" | "fair-esm-name" | "fair-esm-checkpoint" | "safetensors" | "sharded-checkpoint" | "hf-folder" | "hf-hub"
    source: str
    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool
    random_weights: bool
    has_lm_head: bool
    path: str | None = None
    notes: list[str] = field(default_factory=list)
    #: Every file the weights were read from (config, shard index and shards included), in the
    #: order the fingerprint hashes them; empty for ``random:``.
    files: list[str] = field(default_factory=list)
    #: The Hugging Face Hub commit of the cached snapshot, for ``hf-hub`` models.
    revision: str | None = None

    def to_dict(self) -> dict:
        """The report's ``model`` block (a benchmark's leaves out ``has_lm_head`` and ``notes``)."""
        return {
            "spec": self.spec,
            "source": self.source,
            "path": self.path,
            "revision": self.revision,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "attention_heads": self.attention_heads,
            "random_weights": self.random_weights,
            "has_lm_head": self.has_lm_head,
            "notes": self.notes,
        }

    @property
    def description(self) -> str:
        label = f"{self.spec} ({self.num_layers} layers, {self.embed_dim} dims, {self.attention_heads} heads)"
        if self.random_weights:
            label += " RANDOM WEIGHTS, not a trained model"
        return label


@dataclass
class LoadedModel:
    """fair-esm ``ESM2`` in eval mode on its device and dtype, plus what came with the checkpoint.

    ``classifier`` holds a Hugging Face ``EsmClassificationHead`` state dict (fp32, CPU) when the
    checkpoint has one.
    """

    model: Any  # esm.model.esm2.ESM2
    alphabet: Any  # esm.data.Alphabet
    info: ModelInfo
    classifier: dict[str, torch.Tensor] | None = None


def load_model(spec: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Build fair-esm's ``ESM2`` for ``spec`` on ``device`` in ``dtype``, in eval mode."""
    build = _Build(torch.device(device), dtype)
    if not spec.strip():
        raise InputError("--model is empty: name a model (see --help)")
    if spec.startswith("random:"):
        loaded = _random_model(spec, build)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            loaded = _hf_folder(spec, path, build)
        elif path.is_file():
            loaded = _checkpoint_file(spec, path, build)
        elif spec in FAIR_ESM_NAMES:
            loaded = _fair_esm_name(spec, build)
        elif looks_like_hub_id(spec):
            loaded = _hf_hub(spec, build)
        elif "/" in spec or spec.endswith((".pt", ".pth", ".bin", ".safetensors", ".json")):
            raise InputError(f"{spec}: no such model file or folder")
        else:
            names = ", ".join(FAIR_ESM_NAMES)
            raise InputError(
                f"{spec}: not a model file, a Hugging Face folder or id, random:<arch> or a fair-esm ESM-2 name "
                f"({names})"
            )
    loaded.model.eval()
    for layer in loaded.model.layers:  # q/k/v become views of one weight; see fused_qkv
        fused_qkv(layer.self_attn)
    return loaded


def fused_qkv(attn) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(3C, C)`` weight and ``(3C,)`` bias for the q/k/v projections, without a copy.

    The first call allocates the fused tensors, copies q, k, v in, and rebinds the three
    modules' parameters as views of them: fair-esm's own forward keeps working on the very
    same numbers and the model holds no second set of weights.
    """
    fused = getattr(attn, "_esmdiv_fused_qkv", None)
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    if (
        fused is not None
        and fused[0].data_ptr() == attn.q_proj.weight.data_ptr()
        and fused[0].dtype == attn.q_proj.weight.dtype
    ):
        return fused  # still the views made below (not replaced by .to() or a reload)
    weight = attn.q_proj.weight
    # Never inference tensors, even when first called inside packed_forward's inference mode:
    # the parameters must stay usable by any later caller.
    with torch.inference_mode(False), torch.no_grad():
        fused_w = torch.cat([p.weight for p in projections])
        fused_b = torch.cat([p.bias for p in projections])
        size = weight.shape[0]
        for i, p in enumerate(projections):
            p.weight = torch.nn.Parameter(fused_w[i * size : (i + 1) * size], requires_grad=False)
            p.bias = torch.nn.Parameter(fused_b[i * size : (i + 1) * size], requires_grad=False)
    attn._esmdiv_fused_qkv = (fused_w, fused_b)
    return fused_w, fused_b


@dataclass(frozen=True)
class _Build:
    """Where and in what precision to build the model."""

    device: torch.device
    dtype: torch.dtype


def _new_esm2(
    num_layers: int,
    embed_dim: int,
    heads: int,
    token_dropout: bool,
    build: _Build,
    seed: int = 0,
    where: str | Path = "model",
):
    """fair-esm's ``ESM2`` built directly on the run's device and dtype (a 3B model initialises in
    a second on a GPU, not a minute on the CPU), its initial weights drawn from ``seed``."""
    import esm

    if min(num_layers, embed_dim, heads) < 1:
        raise CheckpointError(
            f"{where}: sizes must be positive (layers {num_layers}, embed_dim {embed_dim}, heads {heads})"
        )
    if embed_dim % heads:
        raise CheckpointError(f"{where}: embed_dim {embed_dim} is not divisible by {heads} attention heads")
    default_dtype = torch.get_default_dtype()
    devices = [build.device.index or 0] if build.device.type == "cuda" else []
    try:
        torch.set_default_dtype(build.dtype)
        with torch.random.fork_rng(devices=devices), build.device:
            torch.manual_seed(seed)
            model = esm.model.esm2.ESM2(
                num_layers=num_layers,
                embed_dim=embed_dim,
                attention_heads=heads,
                alphabet="ESM-1b",
                token_dropout=token_dropout,
            )
            _randomise_constants(model)
    finally:
        torch.set_default_dtype(default_dtype)
    # As fair-esm's model.half() does, buffers (the rotary inv_freq) follow the run's dtype too.
    return model.to(device=build.device, dtype=build.dtype)


@torch.no_grad()
def _randomise_constants(model: torch.nn.Module) -> None:
    """Draw every parameter that fair-esm initialises to a constant (LayerNorm weights 1 and biases
    0, the attention output and LM-head biases 0): with them constant, a LayerNorm or bias wired to
    the wrong layer would change no number, and no test of a random model could see it.
    LayerNorm weights become U(0.5, 1.5), every other such parameter U(-0.1, 0.1)."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    param.uniform_(0.5, 1.5)
                else:
                    param.uniform_(-0.1, 0.1)


def _random_model(spec: str, build: _Build) -> LoadedModel:
    parts = spec.split(":")
    arch = parts[1] if len(parts) > 1 else ""
    if arch not in ARCHITECTURES or len(parts) > 3:
        raise InputError(f"{spec}: expected random:<arch>[:<seed>] with arch one of {', '.join(ARCHITECTURES)}")
    try:
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise InputError(f"{spec}: the seed after the architecture must be an integer") from None
    if not -(2**63) <= seed < 2**64:  # what torch.manual_seed takes
        raise InputError(f"{spec}: the seed must fit in 64 bits")
    layers, dim, heads = ARCHITECTURES[arch]
    model = _new_esm2(layers, dim, heads, True, build, seed)
    info = ModelInfo(spec, "random", layers, dim, heads, True, random_weights=True, has_lm_head=True)
    return LoadedModel(model, model.alphabet, info)


# --- fair-esm checkpoints ------------------------------------------------------------------------

# fair-esm pickles its training config next to the weights. These modules hold plain config
# objects; their classes are replaced by an inert stand-in while unpickling, so nothing from the
# file runs. Anything else (os.system, builtins.eval, ...) is refused.
_CONFIG_MODULES = ("omegaconf", "typing", "enum", "pathlib", "collections", "copyreg")


class _InertConfig:
    """Stand-in for a config class found in a checkpoint: absorbs any state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _InertConfig:
        return _InertConfig(*args, **kwargs)


#: What torch's readers raise on a truncated or garbled file (its opcode scanner unpacks raw bytes).
_UNREADABLE = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    struct.error,
    IndexError,
    KeyError,
    OverflowError,
)


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` that also reads fair-esm's pickled configs.

    ``argparse.Namespace`` is allowed as itself; config classes from :data:`_CONFIG_MODULES`
    load as inert stand-ins; any other global makes the load fail with ``CheckpointError``.
    """
    if not zipfile.is_zipfile(path):
        return _load_legacy_weights_only(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except _UNREADABLE as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    allowed: list[Any] = [argparse.Namespace]
    refused = []
    for name in unsafe:
        if name == "argparse.Namespace":
            continue
        if name.startswith(_CONFIG_MODULES):
            allowed.append((_InertConfig, name))
        else:
            refused.append(name)
    if refused:
        raise CheckpointError(
            f"{path}: refused: the file would run or build Python objects ({', '.join(sorted(refused))}); "
            "esmdiv loads tensors only"
        )
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_unpickler_reason(err)})") from None


def _load_legacy_weights_only(path: Path) -> Any:
    """A pre-zip (torch < 1.6) checkpoint: no globals can be listed before loading, so torch's
    ``weights_only`` unpickler alone decides; any global beyond tensors and ``argparse.Namespace``
    stops the load before it is built."""
    try:
        # torch warns about the pickle protocol of files it is about to refuse: the error says enough.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if found := re.search(r"unsupported GLOBAL (\S+)", str(err)):
            raise CheckpointError(
                f"{path}: refused: the file would run or build Python objects ({found.group(1)}); "
                "esmdiv loads tensors only"
            ) from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_unpickler_reason(err)})") from None
    except Exception as err:  # noqa: BLE001 - the legacy reader fails on arbitrary bytes in arbitrary ways
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _unpickler_reason(err: BaseException) -> str:
    """The useful line of torch's weights-only error (its first line suggests weights_only=False)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Unsupported", "Trying to load"))]
    return (useful or lines or [type(err).__name__])[0][:200]


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None


def load_state_file(path: Path) -> dict:
    """A dict from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    data = _load_safetensors(path) if path.suffix == ".safetensors" else load_weights_only(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(data).__name__}")
    return data


def is_shard_index(path: Path) -> bool:
    """A sharded checkpoint's index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``)."""
    return path.name.endswith((".safetensors.index.json", ".bin.index.json", ".pt.index.json"))


def shard_files(index: Path) -> list[Path]:
    """The shards an index names (``weight_map`` values), sorted, each checked to exist beside it."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{index}: not a readable shard index ({_first_line(err)})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: a shard index needs a 'weight_map' of tensor name -> shard file")
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if Path(name).name != name or not shard.is_file():
            raise CheckpointError(f"{index}: shard '{name}' is not a file beside the index")
        shards.append(shard)
    return shards


def load_sharded(index: Path) -> dict[str, torch.Tensor]:
    """Every shard of a sharded checkpoint merged into one state dict (safetensors, or torch files
    read with ``weights_only=True``); a tensor in two shards is an error."""
    state: dict[str, torch.Tensor] = {}
    for shard in shard_files(index):
        part = load_state_file(shard)
        if isinstance(part.get("model"), dict) and not shard.name.endswith(".safetensors"):
            raise CheckpointError(f"{shard}: a shard must hold tensors by name, not a whole fair-esm checkpoint")
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"{shard}: tensor '{twice[0]}' is also in another shard")
        state.update(part)
    return state


def _checkpoint_file(spec: str, path: Path, build: _Build, source: str = "fair-esm-checkpoint") -> LoadedModel:
    if is_shard_index(path):
        return _sharded_file(spec, path, build)
    data = load_state_file(path)
    state, cfg = data, None
    if path.suffix == ".safetensors":
        source = "safetensors"
    elif isinstance(data.get("model"), dict):  # fair-esm's {"model": ..., "cfg"/"args": ...}
        state = data["model"]
        cfg = (data.get("cfg") or {}).get("model") if isinstance(data.get("cfg"), dict) else data.get("args")
    if not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{path}: weights keyed by something other than names: not a state dict")
    if any(key.startswith(("esm.", "encoder.layer.", "embeddings.")) for key in state):
        return _from_hf_state(spec, path, state, _hf_like_config(state, path), source, build)
    state = {re.sub(r"^(encoder\.sentence_encoder\.|encoder\.)", "", k): v for k, v in state.items()}
    return _from_fair_esm_state(spec, path, state, cfg, source, build)


def _sharded_file(spec: str, index: Path, build: _Build) -> LoadedModel:
    """``--model path/to/*.index.json``: with ``config.json`` beside it, the Hugging Face folder it
    belongs to (this index); without, the merged state dict read as a single file would be."""
    if (index.parent / "config.json").is_file():
        return _hf_folder(spec, index.parent, build, weights=index)
    state = load_sharded(index)
    files = [str(index), *map(str, shard_files(index))]
    if any(key.startswith(("esm.", "encoder.layer.", "embeddings.")) for key in state):
        loaded = _from_hf_state(spec, index, state, _hf_like_config(state, index), "sharded-checkpoint", build)
    else:
        state = {re.sub(r"^(encoder\.sentence_encoder\.|encoder\.)", "", k): v for k, v in state.items()}
        loaded = _from_fair_esm_state(spec, index, state, None, "sharded-checkpoint", build)
    loaded.info.files = files
    return loaded


def _from_fair_esm_state(spec: str, path: Path, state: dict, cfg: Any, source: str, build: _Build) -> LoadedModel:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if "embed_tokens.weight" not in tensors:
        raise CheckpointError(f"{path}: no 'embed_tokens.weight': not an ESM-2 checkpoint")
    layer_ids = {int(m.group(1)) for k in tensors if (m := re.match(r"layers\.(\d+)\.", k))}
    if not layer_ids or layer_ids != set(range(len(layer_ids))):
        raise CheckpointError(f"{path}: no consecutive 'layers.<i>.' weights: not an ESM-2 checkpoint")
    if tensors["embed_tokens.weight"].dim() != 2:
        raise CheckpointError(
            f"{path}: 'embed_tokens.weight' has shape {tuple(tensors['embed_tokens.weight'].shape)}, "
            "not (vocabulary, embed_dim)"
        )
    num_layers, embed_dim = len(layer_ids), tensors["embed_tokens.weight"].shape[1]
    heads = getattr(cfg, "encoder_attention_heads", None) if isinstance(cfg, argparse.Namespace) else None
    token_dropout = getattr(cfg, "token_dropout", True) if isinstance(cfg, argparse.Namespace) else True
    notes = []
    if heads is None:
        heads = _heads_for(embed_dim, path)
        notes.append(f"attention heads not readable from the checkpoint config; {heads} by ESM-2's table")
    try:
        heads = int(heads)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: the config's encoder_attention_heads {heads!r} is not a number") from None
    model = _new_esm2(num_layers, embed_dim, int(heads), bool(token_dropout), build, where=path)
    has_lm_head = _fill(model, tensors, path, optional=("contact_head.", "lm_head."))
    info = ModelInfo(
        spec,
        source,
        num_layers,
        embed_dim,
        int(heads),
        bool(token_dropout),
        False,
        has_lm_head,
        str(path),
        notes,
        files=[str(path)],
    )
    return LoadedModel(model, model.alphabet, info)


def _heads_for(embed_dim: int, path: Path) -> int:
    for _layers, dim, heads in ARCHITECTURES.values():
        if dim == embed_dim:
            return heads
    raise CheckpointError(
        f"{path}: embed_dim {embed_dim} matches no ESM-2 architecture and the checkpoint does not say its heads"
    )


def _fill(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, optional: tuple[str, ...]) -> bool:
    """Copy ``state`` into ``model``; return whether the LM head was filled. Unmatched keys are errors."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: keys that ESM-2 does not have: {', '.join(unexpected[:5])}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, ESM-2 built from the checkpoint's sizes "
                f"expects {tuple(expected[key].shape)} (a checkpoint of another architecture?)"
            )
    # lm_head.weight is tied to embed_tokens.weight; rotary inv_freq is recomputed by the module.
    missing = sorted(
        k
        for k in set(expected) - set(state) - {"lm_head.weight"}
        if not k.startswith(optional) and not k.endswith("rot_emb.inv_freq")
    )
    if missing:
        raise CheckpointError(f"{path}: missing weights: {', '.join(missing[:5])}")
    model.load_state_dict(state, strict=False)
    lm_keys = {k for k in expected if k.startswith("lm_head.") and k != "lm_head.weight"}
    return lm_keys <= set(state)


def _fair_esm_name(name: str, build: _Build) -> LoadedModel:
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"
    if not checkpoint.is_file():
        url = FAIR_ESM_URL.format(name=name)
        try:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(checkpoint), progress=False)
        except Exception as err:  # noqa: BLE001 - any network failure means the same thing here
            checkpoint.unlink(missing_ok=True)
            raise EnvironmentUnavailable(
                f"{name}: not in the torch hub cache ({checkpoint}) and could not be downloaded from {url} "
                f"({_first_line(err)}); put the file there or pass a checkpoint path"
            ) from None
    return _checkpoint_file(name, checkpoint, build, source="fair-esm-name")


# --- Hugging Face folders ------------------------------------------------------------------------

_HF_LAYER_MAP = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
_HF_TOP_MAP = {
    "embeddings.word_embeddings.weight": "embed_tokens.weight",
    "encoder.emb_layer_norm_after.weight": "emb_layer_norm_after.weight",
    "encoder.emb_layer_norm_after.bias": "emb_layer_norm_after.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "lm_head.bias": "lm_head.bias",
}
# transformers 5 writes LayerNorm parameters by their pre-PyTorch names (gamma, beta), as the
# original BERT checkpoints did; they are the LayerNorm's weight and bias.
_LEGACY_NORM = re.compile(r"(LayerNorm|layer_norm|emb_layer_norm_after)\.(gamma|beta)$")


def _legacy_norm_name(match: re.Match) -> str:
    return f"{match.group(1)}.{'weight' if match.group(2) == 'gamma' else 'bias'}"


# Keys with no fair-esm counterpart that a rotary ESM-2 never uses.
_HF_IGNORED = re.compile(
    r"^(embeddings\.position_ids|embeddings\.position_embeddings\.weight|.*rotary_embeddings\.inv_freq"
    r"|contact_head\..*|pooler\..*|lm_head\.decoder\.weight)$"
)


#: A Hugging Face folder's weights, in the order they are looked for.
HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _hf_folder(
    spec: str, folder: Path, build: _Build, weights: Path | None = None, source: str = "hf-folder"
) -> LoadedModel:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: a folder without config.json is not a Hugging Face checkpoint")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_path}: not readable JSON ({_first_line(err)})") from None
    if weights is None:
        weights = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{folder}: has config.json but neither model.safetensors nor pytorch_model.bin (nor a sharded "
            "*.index.json of either)"
        )
    if is_shard_index(weights):
        state = load_sharded(weights)
        files = [config_path, weights, *shard_files(weights)]
    else:
        state = _load_safetensors(weights) if weights.suffix == ".safetensors" else load_weights_only(weights)
        files = [config_path, weights]
    loaded = _from_hf_state(spec, weights, state, config, source, build)
    loaded.info.files = [str(f) for f in files]
    return loaded


def _hf_hub(spec: str, build: _Build) -> LoadedModel:
    """A Hugging Face model id: its folder in the Hugging Face cache (see :mod:`esmdiv.model.hub`)."""
    snapshot = resolve_hub_id(spec)
    loaded = _hf_folder(spec, snapshot.folder, build, source="hf-hub")
    loaded.info.revision = snapshot.commit
    return loaded


def _check_hf_sizes(path: Path, state: dict, layers: int, dim: int) -> None:
    """The config's sizes against the weights, before building: a wrong or hostile config.json must
    not make esmdiv allocate a model the weights cannot fill."""
    found = {
        int(m.group(1))
        for k in state
        if isinstance(k, str) and (m := re.match(r"(?:esm\.)?encoder\.layer\.(\d+)\.", k))
    }
    if layers != len(found):
        raise CheckpointError(
            f"{path}: config says {layers} layers, the weights hold {len(found)} "
            "(a checkpoint of another architecture?)"
        )
    embeddings = state.get("esm.embeddings.word_embeddings.weight", state.get("embeddings.word_embeddings.weight"))
    if isinstance(embeddings, torch.Tensor) and embeddings.dim() == 2 and embeddings.shape[1] != dim:
        raise CheckpointError(
            f"{path}: config says hidden_size {dim}, the weights have {embeddings.shape[1]} "
            "(a checkpoint of another architecture?)"
        )


def _hf_like_config(state: dict, path: Path) -> dict:
    """Sizes of a Hugging Face ESM state dict found outside a folder (no config.json)."""
    prefix = "esm." if any(k.startswith("esm.") for k in state) else ""
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}encoder\.layer\.(\d+)\.", k))}
    embeddings = state.get(f"{prefix}embeddings.word_embeddings.weight")
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise CheckpointError(f"{path}: no 2-D '{prefix}embeddings.word_embeddings.weight': not an ESM checkpoint")
    dim = embeddings.shape[1]
    return {"num_hidden_layers": len(layers), "hidden_size": dim, "num_attention_heads": _heads_for(dim, path)}


def _map_once(mapped: dict[str, torch.Tensor], target: str, key: Any, value: torch.Tensor, path: Path) -> None:
    """``mapped[target] = value``, refused when another key of the checkpoint already holds ``target``
    (a LayerNorm under both its names, a weight with and without the ``esm.`` prefix)."""
    if target in mapped:
        raise CheckpointError(f"{path}: key '{key}' and another key both hold '{target}'")
    mapped[target] = value


def _from_hf_state(spec: str, path: Path, state: dict, config: dict, source: str, build: _Build) -> LoadedModel:
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: config.json holds a {type(config).__name__}, not the model's settings")
    if config.get("position_embedding_type", "rotary") != "rotary" or config.get("emb_layer_norm_before"):
        raise CheckpointError(f"{path}: not an ESM-2 checkpoint (absolute positions or embedding layer norm: ESM-1b?)")
    if config.get("vocab_size", 33) != 33:
        raise CheckpointError(f"{path}: vocab_size {config.get('vocab_size')} is not ESM-2's 33 tokens")
    try:
        layers, dim, heads = (int(config[k]) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: config lacks the ESM sizes ({err})") from None
    _check_hf_sizes(path, state, layers, dim)
    mapped: dict[str, torch.Tensor] = {}
    classifier: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = _LEGACY_NORM.sub(_legacy_norm_name, key) if isinstance(key, str) else str(key)  # messages: key
        bare = name[4:] if name.startswith("esm.") else name
        if name.startswith("classifier."):
            classifier[name[len("classifier.") :]] = value.float()
        elif _HF_IGNORED.match(bare):
            continue
        elif bare in _HF_TOP_MAP:
            _map_once(mapped, _HF_TOP_MAP[bare], key, value, path)
        elif m := re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", bare):
            index, module, kind = m.groups()
            if module not in _HF_LAYER_MAP:
                raise CheckpointError(f"{path}: key '{key}' has no fair-esm counterpart")
            _map_once(mapped, f"layers.{index}.{_HF_LAYER_MAP[module]}.{kind}", key, value, path)
        else:
            raise CheckpointError(f"{path}: key '{key}' has no fair-esm counterpart")
    model = _new_esm2(layers, dim, heads, bool(config.get("token_dropout", True)), build, where=path)
    has_lm_head = _fill(model, mapped, path, optional=("contact_head.", "lm_head."))
    info = ModelInfo(
        spec,
        source,
        layers,
        dim,
        heads,
        bool(config.get("token_dropout", True)),
        False,
        has_lm_head,
        str(path),
        files=[str(path)],
    )
    if classifier and set(classifier) != {"dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"}:
        raise CheckpointError(f"{path}: classifier keys {sorted(classifier)} are not an EsmClassificationHead")
    return LoadedModel(model, model.alphabet, info, classifier or None)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]
