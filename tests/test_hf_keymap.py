"""The Hugging Face -> fair-esm key map, checked against transformers itself with no shared file.

Each test builds a tiny ``EsmModel`` / ``EsmForSequenceClassification`` / ``EsmForMaskedLM`` with
every parameter drawn at random (LayerNorm weights and biases included, each one different), saves
it with ``save_pretrained``, loads the folder through esmdiv and compares esmdiv's padded forward
(fair-esm's ``ESM2`` filled by the key map) with transformers' own forward. A weight mapped onto
the wrong module (the two LayerNorms of a layer swapped, q and k swapped, ...) changes the
numbers far beyond fp32 rounding. Then every refusal of the loader, each with its message.
"""

import json
import re

import pytest
import torch

from esmdiv.errors import CheckpointError
from esmdiv.forward.packing import encode, pad
from esmdiv.forward.padded import padded_forward
from esmdiv.model.heads import build_heads
from esmdiv.model.loading import load_model

from helpers import random_sequences

transformers = pytest.importorskip("transformers")

LAYERS, DIM, HEADS = 2, 32, 4
SEQUENCES = random_sequences([7, 19, 3, 12], seed=5)
# Both forwards are fp32 on the CPU, in this process, on the same batch, but through different
# code (fair-esm's bmm attention vs transformers' sdpa): equal to fp32 rounding, not bit for bit.
# A mis-mapped weight moves them by O(1) (measured: > 0.1).
ATOL = 1e-4


def tiny_config(**overrides):
    settings = dict(
        vocab_size=33,
        mask_token_id=32,
        pad_token_id=1,
        hidden_size=DIM,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * DIM,  # fair-esm's FFN is 4 x embed_dim
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        layer_norm_eps=1e-5,  # fair-esm's LayerNorms
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        num_labels=2,
    )
    settings.update(overrides)
    return transformers.EsmConfig(**settings)


@torch.no_grad()
def randomise(model, seed=0):
    """Every parameter random and distinct: LayerNorm weights U(0.5, 1.5), everything else
    N(0, 0.1) (biases included), so no two LayerNorms or biases hold the same numbers."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("weight") and ("LayerNorm" in name or "layer_norm" in name):
            param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def hf_model(kind, tmp_path, seed=0, **config):
    model = randomise(getattr(transformers, kind)(tiny_config(**config)), seed)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    return model, folder


def batch(alphabet):
    tokens = [encode(s, alphabet) for s in SEQUENCES]
    return pad(tokens, alphabet.padding_idx), [len(t) for t in tokens]


def hf_hidden(model, tokens, pad_idx):
    with torch.no_grad():
        out = model(input_ids=tokens, attention_mask=(tokens != pad_idx).long(), output_hidden_states=False)
    return out


def assert_same_rows(ours, theirs, lengths):
    for i, n in enumerate(lengths):  # padding rows differ by design (fair-esm zeroes them)
        torch.testing.assert_close(ours[i, :n], theirs[i, :n], atol=ATOL, rtol=0)


def test_the_layer_norms_are_random_and_distinct(tmp_path):
    """Precondition of every test below: a swap of two modules' weights would change the numbers."""
    model, _ = hf_model("EsmModel", tmp_path)
    norms = {n: p for n, p in model.named_parameters() if "LayerNorm" in n or "layer_norm" in n}
    assert len(norms) == 2 * 2 * LAYERS + 2  # two per layer (weight, bias each) and the final one
    values = list(norms.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1 :] if a.shape == b.shape)
    assert all(float(v.detach().std()) > 0.05 for v in values)


def test_an_hf_esm_model_loads_as_the_same_network(tmp_path):
    model, folder = hf_model("EsmModel", tmp_path)
    loaded = load_model(str(folder))
    assert loaded.info.source == "hf-folder" and not loaded.info.has_lm_head and loaded.classifier is None
    assert (loaded.info.spec, loaded.info.path) == (str(folder), str(folder / "model.safetensors"))
    assert loaded.info.random_weights is False and loaded.info.token_dropout is True
    assert (loaded.info.num_layers, loaded.info.embed_dim, loaded.info.attention_heads) == (LAYERS, DIM, HEADS)
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    theirs = hf_hidden(model, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert_same_rows(ours, theirs, lengths)


def test_the_classifier_head_gives_transformers_logits(tmp_path):
    model, folder = hf_model("EsmForSequenceClassification", tmp_path, seed=1)
    loaded = load_model(str(folder))
    assert loaded.classifier is not None and set(loaded.classifier) == {
        "dense.weight",
        "dense.bias",
        "out_proj.weight",
        "out_proj.bias",
    }
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    with torch.no_grad():
        theirs = model.esm(input_ids=tokens, attention_mask=(tokens != loaded.alphabet.padding_idx).long())
        logits = model(input_ids=tokens, attention_mask=(tokens != loaded.alphabet.padding_idx).long()).logits
    assert_same_rows(ours, theirs.last_hidden_state, lengths)
    [head] = build_heads("auto", loaded)
    assert head.input == "cls"
    with torch.no_grad():
        our_logits = head.module(ours[:, 0].float())
    torch.testing.assert_close(our_logits, logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(head.probabilities(ours[:, 0]), torch.softmax(logits, -1), atol=ATOL, rtol=0)
    assert float(logits.std()) > 0.01  # the logits differ from sequence to sequence: the check can fail


def test_the_language_model_head_gives_transformers_logits(tmp_path):
    model, folder = hf_model("EsmForMaskedLM", tmp_path, seed=2)
    loaded = load_model(str(folder))
    assert loaded.info.has_lm_head
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens, need_logits=True).logits
    with torch.no_grad():
        theirs = model(input_ids=tokens, attention_mask=(tokens != loaded.alphabet.padding_idx).long()).logits
    assert_same_rows(ours, theirs, lengths)


def test_the_check_sees_a_swapped_layer_norm(tmp_path):
    """Control: the two LayerNorms of layer 0 swapped in the saved file are caught by the comparison."""
    model, folder = hf_model("EsmModel", tmp_path)

    def swap(state):
        for kind in ("weight", "bias"):
            a, b = f"encoder.layer.0.attention.LayerNorm.{kind}", f"encoder.layer.0.LayerNorm.{kind}"
            state[a], state[b] = state[b], state[a]

    edit_state(folder, swap)
    loaded = load_model(str(folder))
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    theirs = hf_hidden(model, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert max(float((ours[i, :n] - theirs[i, :n]).abs().max()) for i, n in enumerate(lengths)) > 100 * ATOL


# --- the loader's refusals, each with its own message --------------------------------------------------


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def hub_names(state):
    """transformers 5 saves a layer's LayerNorms as ``LayerNorm.gamma``/``.beta``; published ESM-2
    checkpoints (and older transformers) as ``.weight``/``.bias``. The edits below use the latter."""
    return {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
            for k, v in state.items()}  # fmt: skip


def edit_state(folder, change=None):
    from safetensors.torch import load_file, save_file

    state = hub_names(load_file(folder / "model.safetensors"))
    if change is not None:
        change(state)
    save_file(state, folder / "model.safetensors")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved EsmForSequenceClassification; each test edits a copy of it."""
    tmp = tmp_path_factory.mktemp("hf")
    _, folder = hf_model("EsmForSequenceClassification", tmp)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    return copy


def test_the_unedited_copy_loads(folder):
    """Control for the refusals below: each is caused by its one edit."""
    assert load_model(str(folder)).classifier is not None
    edit_state(folder)
    assert load_model(str(folder)).classifier is not None


def test_both_layer_norm_namings_load_the_same_weights(folder):
    from safetensors.torch import load_file

    saved = load_file(folder / "model.safetensors")
    assert any(k.endswith("LayerNorm.gamma") for k in saved)  # as transformers 5 writes them
    as_saved = load_model(str(folder)).model.state_dict()
    edit_state(folder)  # as published checkpoints name them
    renamed = load_model(str(folder)).model.state_dict()
    assert as_saved.keys() == renamed.keys() and all(torch.equal(as_saved[k], renamed[k]) for k in as_saved)


def test_legacy_names_only_on_layer_norms_and_never_twice(folder):
    edit_state(folder, _rename("esm.encoder.layer.0.output.dense.bias", "esm.encoder.layer.0.output.dense.beta"))
    with pytest.raises(CheckpointError, match=r"key 'esm.encoder.layer.0.output.dense.beta' has no fair-esm"):
        load_model(str(folder))


def test_a_layer_norm_under_both_names_is_refused(folder):
    def both(state):
        state["esm.encoder.layer.1.LayerNorm.gamma"] = state["esm.encoder.layer.1.LayerNorm.weight"] + 1

    edit_state(folder, both)
    with pytest.raises(CheckpointError, match=r"both hold 'layers.1.final_layer_norm.weight'"):
        load_model(str(folder))


ANOTHER = r" \(a checkpoint of another architecture\?\)$"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"vocab_size": 34}, r"vocab_size 34 is not ESM-2's 33 tokens"),
        ({"emb_layer_norm_before": True}, r"not an ESM-2 checkpoint \(absolute positions or embedding layer norm"),
        ({"position_embedding_type": "absolute"}, r"not an ESM-2 checkpoint \(absolute positions"),
        ({"num_hidden_layers": 3}, r"config says 3 layers, the weights hold 2" + ANOTHER),
        ({"hidden_size": 64}, r"config says hidden_size 64, the weights have 32" + ANOTHER),
        ({"num_attention_heads": "many"}, r"config lacks the ESM sizes"),
        ({"num_attention_heads": 5}, r"embed_dim 32 is not divisible by 5 attention heads"),
    ],
    ids=["vocab", "emb-layer-norm-before", "absolute", "layers", "hidden", "heads-text", "heads-divide"],
)
def test_a_config_that_is_not_this_esm2_is_refused(folder, changes, message):
    edit_config(folder, **changes)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(folder / 'model.safetensors'))}: {message}"):
        load_model(str(folder))


def test_a_config_without_a_size_is_refused(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["num_attention_heads"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config lacks the ESM sizes \('num_attention_heads'\)"):
        load_model(str(folder))


def test_a_config_that_is_not_an_object_is_refused(folder):
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json holds a list, not the model's settings"):
        load_model(str(folder))


def _rename(old, new):
    def change(state):
        state[new] = state.pop(old)

    return change


def _drop(key):
    def change(state):
        del state[key]

    return change


def _add(key, shape):
    def change(state):
        state[key] = torch.zeros(shape)

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (
            _rename("esm.encoder.layer.0.attention.LayerNorm.bias", "esm.encoder.layer.0.attention.Norm.bias"),
            r"key 'esm.encoder.layer.0.attention.Norm.bias' has no fair-esm counterpart",
        ),
        (_add("esm.encoder.extra.weight", (3,)), r"key 'esm.encoder.extra.weight' has no fair-esm counterpart"),
        (_add("esm.encoder.layer.0.output.scale", (3,)), r"key 'esm.encoder.layer.0.output.scale' has no fair-esm"),
        (_drop("esm.encoder.layer.1.LayerNorm.weight"), r"missing weights: layers.1.final_layer_norm.weight"),
        (_drop("esm.encoder.emb_layer_norm_after.bias"), r"missing weights: emb_layer_norm_after.bias"),
        (_drop("classifier.dense.bias"), r"classifier keys \['dense.weight', 'out_proj.bias', 'out_proj.weight'\]"),
        (
            _add("classifier.extra.weight", (2,)),
            r"classifier keys \[.*'extra.weight'.*\] are not an EsmClassificationHead",
        ),
        (
            _add("esm.encoder.layer.0.intermediate.dense.bias", (5,)),
            r"'layers.0.fc1.bias' has shape \(5,\), ESM-2 built from the checkpoint's sizes expects \(128,\)",
        ),
    ],
    ids=["unknown-layer-module", "unknown-key", "unknown-layer-param", "missing", "missing-top", "cls-missing",
         "cls-extra", "shape"],
)  # fmt: skip
def test_a_state_dict_that_does_not_map_is_refused(folder, change, message):
    edit_state(folder, change)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(folder / 'model.safetensors'))}: .*{message}"):
        load_model(str(folder))


def test_keys_that_esm2_never_uses_are_ignored(folder):
    """Absolute position embeddings, position ids, rotary buffers, a contact head and a pooler are
    dropped; they do not make the load fail and do not change the model."""
    before = load_model(str(folder)).model.state_dict()
    edit_state(
        folder,
        lambda state: state.update(
            {
                "esm.embeddings.position_ids": torch.arange(5.0),
                "esm.embeddings.position_embeddings.weight": torch.zeros(4, DIM),
                "esm.encoder.layer.0.attention.self.rotary_embeddings.inv_freq": torch.ones(4),
                "esm.contact_head.regression.weight": torch.zeros(1, 8),
                "esm.pooler.dense.weight": torch.zeros(DIM, DIM),
            }
        ),
    )
    after = load_model(str(folder)).model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_bare_hf_state_dict_file_loads_by_its_key_names(tmp_path):
    """An HF state dict saved as one .safetensors file (no folder, no config): sizes from the weights."""
    from safetensors.torch import save_file

    model = randomise(
        transformers.EsmModel(tiny_config(hidden_size=320, num_attention_heads=20, intermediate_size=1280)), 3
    )
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = load_model(str(path))
    assert loaded.info.source == "safetensors" and loaded.info.attention_heads == 20  # ESM-2 8M's table
    assert (loaded.info.spec, loaded.info.path, loaded.info.files) == (str(path), str(path), [str(path)])
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    theirs = hf_hidden(model, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert_same_rows(ours, theirs, lengths)


def test_a_bare_classifier_state_dict_loads_with_its_head(tmp_path):
    """EsmForSequenceClassification's weights in one file: 'esm.'-prefixed keys, sizes from them."""
    from safetensors.torch import save_file

    config = tiny_config(hidden_size=320, num_attention_heads=20, intermediate_size=1280)
    model = randomise(transformers.EsmForSequenceClassification(config), 4)
    path = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = load_model(str(path))
    assert (loaded.info.num_layers, loaded.info.embed_dim) == (LAYERS, 320) and loaded.classifier is not None
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    theirs = hf_hidden(model.esm, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert_same_rows(ours, theirs, lengths)


@pytest.mark.parametrize(
    "embedding, key",
    [(None, "esm.embeddings.word_embeddings.weight"), (torch.zeros(33), "esm.embeddings.word_embeddings.weight")],
    ids=["missing", "1-d"],
)
def test_a_bare_state_dict_without_a_2d_embedding_is_refused(embedding, key, tmp_path):
    from safetensors.torch import save_file

    state = {"esm.encoder.layer.0.output.dense.bias": torch.zeros(4)}
    if embedding is not None:
        state[key] = embedding
    save_file(state, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match=rf"no 2-D '{re.escape(key)}': not an ESM checkpoint$"):
        load_model(str(tmp_path / "bare.safetensors"))


def test_a_folder_that_is_not_a_checkpoint_is_refused_saying_why(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"empty: a folder without config.json is not a Hugging Face checkpoint$"):
        load_model(str(folder))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: not readable JSON \(Expecting property name"):
        load_model(str(folder))
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"empty: has config.json but neither model.safetensors nor "
                       r"pytorch_model.bin \(nor a sharded \*\.index\.json of either\)$"):  # fmt: skip
        load_model(str(folder))


def test_a_bare_state_dict_of_an_unknown_width_names_the_file(tmp_path):
    """Without a config, the heads come from ESM-2's table of widths: 32 is in none."""
    from safetensors.torch import save_file

    model = randomise(transformers.EsmModel(tiny_config()), 5)
    path = tmp_path / "narrow.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    message = f"^{re.escape(str(path))}: embed_dim 32 matches no ESM-2 architecture and the checkpoint does not say"
    with pytest.raises(CheckpointError, match=message):
        load_model(str(path))


def test_a_folder_with_pytorch_model_bin_loads_the_same(folder):
    """Older transformers saved pytorch_model.bin: read with the weights-only unpickler, same model."""
    from safetensors.torch import load_file

    before = load_model(str(folder)).model.state_dict()
    # a non-tensor entry first (a pickle may hold one): skipped, the weights after it still read
    torch.save({"format": "hf", **load_file(folder / "model.safetensors")}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loaded = load_model(str(folder))
    assert loaded.info.path == str(folder / "pytorch_model.bin") and loaded.classifier is not None
    after = loaded.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_folder_with_a_garbled_model_safetensors_is_refused_as_safetensors(folder):
    """model.safetensors is read by the safetensors reader, and its error says so (a torch file
    reader would call it an unreadable torch checkpoint)."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(weights))}: not a readable safetensors file \\("):
        load_model(str(folder))


def test_a_key_that_is_not_a_name_is_refused_by_its_value(folder):
    """A pickle may key a tensor by a number: the message names it as it is, the loader does not crash."""
    from safetensors.torch import load_file

    torch.save({7: torch.zeros(3), **hub_names(load_file(folder / "model.safetensors"))}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    weights = re.escape(str(folder / "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=f"^{weights}: key '7' has no fair-esm counterpart$"):
        load_model(str(folder))


@pytest.mark.parametrize(
    "weight, target",
    [
        ("esm.encoder.emb_layer_norm_after", "emb_layer_norm_after"),
        ("esm.encoder.layer.1.LayerNorm", "layers.1.final_layer_norm"),
    ],
    ids=["top-level", "layer"],
)
def test_a_weight_under_two_keys_is_refused_naming_the_file_the_key_and_the_weight(folder, weight, target):
    def both(state):
        state[f"{weight}.gamma"] = state[f"{weight}.weight"] + 1

    edit_state(folder, both)
    message = rf"key '{re.escape(weight)}\.(gamma|weight)' and another key both hold '{re.escape(target)}\.weight'$"
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(folder / 'model.safetensors'))}: {message}"):
        load_model(str(folder))


@pytest.mark.parametrize(
    "changes, dropped, sizes",
    [
        ({"num_hidden_layers": 0}, "esm.encoder.layer.", "layers 0, embed_dim 32, heads 4"),
        ({"hidden_size": 0}, "esm.embeddings.word_embeddings.", "layers 2, embed_dim 0, heads 4"),
    ],
    ids=["no-layers", "no-width"],
)
def test_a_size_of_zero_is_refused_before_building(folder, changes, dropped, sizes):
    """Weights that agree with a config of zero layers (none) or zero width (no embedding to say
    otherwise) pass the size check against the weights; the builder refuses the size itself."""
    edit_config(folder, **changes)
    edit_state(folder, lambda state: [state.pop(k) for k in [k for k in state if k.startswith(dropped)]])
    weights = re.escape(str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"^{weights}: sizes must be positive \\({sizes}\\)$"):
        load_model(str(folder))


def test_one_layer_and_one_head_are_sizes_too(tmp_path):
    """The smallest sizes the builder takes: 1 layer of 1 attention head, the same network as transformers'."""
    model, folder = hf_model("EsmModel", tmp_path, num_hidden_layers=1, num_attention_heads=1)
    loaded = load_model(str(folder))
    assert (loaded.info.num_layers, loaded.info.embed_dim, loaded.info.attention_heads) == (1, DIM, 1)
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[1]
    theirs = hf_hidden(model, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert_same_rows(ours, theirs, lengths)


def test_the_sizes_of_an_unprefixed_folder_are_checked_too(tmp_path):
    """EsmModel's keys have no 'esm.' prefix: its embedding width is read all the same."""
    _, folder = hf_model("EsmModel", tmp_path)
    edit_config(folder, hidden_size=64, num_attention_heads=4)
    with pytest.raises(CheckpointError, match=r"config says hidden_size 64, the weights have 32" + ANOTHER):
        load_model(str(folder))


def test_token_dropout_comes_from_the_config(tmp_path):
    """fair-esm scales the embeddings when token dropout is on, masked tokens or not: a config that
    turns it off must build a model that does not."""
    model, folder = hf_model("EsmModel", tmp_path, token_dropout=False)
    loaded = load_model(str(folder))
    assert loaded.info.token_dropout is False
    tokens, lengths = batch(loaded.alphabet)
    ours = padded_forward(loaded.model, tokens).representations[LAYERS]
    theirs = hf_hidden(model, tokens, loaded.alphabet.padding_idx).last_hidden_state
    assert_same_rows(ours, theirs, lengths)


def test_a_config_that_does_not_say_takes_esm2s_token_dropout(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["token_dropout"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(str(folder))
    assert loaded.info.token_dropout is True and loaded.model.token_dropout is True


def test_missing_weights_are_named_five_at_most_in_order(folder):
    def drop(state):
        for key in ("attention.LayerNorm", "LayerNorm", "output.dense"):
            for kind in ("weight", "bias"):
                del state[f"esm.encoder.layer.1.{key}.{kind}"]

    edit_state(folder, drop)
    first_five = "layers.1.fc2.bias, layers.1.fc2.weight, layers.1.final_layer_norm.bias, "
    first_five += "layers.1.final_layer_norm.weight, layers.1.self_attn_layer_norm.bias"
    with pytest.raises(CheckpointError, match=f": missing weights: {re.escape(first_five)}$"):
        load_model(str(folder))
