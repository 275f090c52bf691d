"""Prediction heads: user head files (Linear / MLP, .pt and .safetensors), extra features, proxy
seeds, and the audit end to end with them."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from esmdiv.audit.run import AuditConfig, run_audit
from esmdiv.errors import CheckpointError, InputError, UsageError
from esmdiv.forward.faults import Fault
from esmdiv.measure.decision import Verdict
from esmdiv.model.heads import build_heads, confidence, file_head, load_extra_features, proxy_head

from conftest import FIXTURES

SEED18 = FIXTURES / "seed18.fasta"


def save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def seeded(module: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def fake_loaded(embed_dim=4, classifier=None):
    return SimpleNamespace(info=SimpleNamespace(embed_dim=embed_dim, spec="random:test"), classifier=classifier)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_linear_head_from_a_state_dict(tmp_path, suffix):
    w = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    b = torch.tensor([0.25, -0.5])
    head = file_head(save({"weight": w, "bias": b}, tmp_path / f"lin{suffix}"), embed_dim=3)
    assert head.input == "pooled" and head.extra_features is None
    assert f"lin{suffix}" in head.name and "3 -> 2" in head.name
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    logits = x.numpy() @ w.numpy().T + b.numpy()  # [[-1.75, 4.0], [0.25, -2.5]]
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(head.probabilities(x).numpy(), expected, atol=1e-7)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize(
    "activation, cls", [("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)]
)
def test_mlp_head_applies_the_activation_between_layers_only(tmp_path, suffix, activation, cls):
    original = seeded(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    head = file_head(save(original.state_dict(), tmp_path / f"mlp{suffix}"), embed_dim=6, activation=activation)
    kinds = [type(m) for m in head.module]
    assert kinds == [nn.Linear, cls, nn.Linear, cls, nn.Linear]  # none after the last Linear
    assert "6 -> 5 -> 4 -> 3" in head.name and activation in head.name
    by_hand = nn.Sequential(original[0], cls(), original[2], cls(), original[4])
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.softmax(by_hand(x), dim=-1)
    assert torch.allclose(head.probabilities(x), expected, atol=1e-6)


def test_mlp_head_keeps_the_layer_order_of_a_long_sequential_in_safetensors(tmp_path):
    """safetensors stores keys sorted as text ('10.weight' before '2.weight'); a Sequential's
    Linears must still chain in index order."""
    layers = []
    for width_in, width_out in [(8, 7), (7, 6), (6, 5), (5, 4), (4, 3), (3, 2)]:
        layers += [nn.Linear(width_in, width_out), nn.Tanh()]
    original = seeded(nn.Sequential(*layers[:-1]))  # Linears at 0, 2, 4, 6, 8, 10
    for suffix in (".pt", ".safetensors"):
        head = file_head(save(original.state_dict(), tmp_path / f"deep{suffix}"), embed_dim=8, activation="tanh")
        assert "8 -> 7 -> 6 -> 5 -> 4 -> 3 -> 2" in head.name, suffix
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            expected = torch.softmax(original(x), dim=-1)
        assert torch.allclose(head.probabilities(x), expected, atol=1e-6), suffix


def test_single_logit_head_is_binary_with_a_sigmoid(tmp_path):
    # logit = x0 - x1: [ln 3, 0] -> p = 3/4; [0, 0] -> 1/2
    head = file_head(save({"weight": torch.tensor([[1.0, -1.0]]), "bias": torch.zeros(1)}, tmp_path / "one.pt"), 2)
    probs = head.probabilities(torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]))
    assert probs.flatten().tolist() == pytest.approx([0.25, 0.75, 0.5, 0.5], abs=1e-7)


def test_a_wrapped_state_dict_and_a_bias_free_layer_load(tmp_path):
    w = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    head = file_head(save({"state_dict": {"fc.weight": w}}, tmp_path / "wrapped.pt"), 2)
    assert head.module[0].bias is None
    x = torch.tensor([[0.0, math.log(2) / 2]])  # logits [0, ln 2] -> softmax [1/3, 2/3]
    assert head.probabilities(x)[0].tolist() == pytest.approx([1 / 3, 2 / 3], abs=1e-7)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_size_mismatch_names_the_file_and_the_layer(tmp_path, suffix):
    path = save(nn.Linear(5, 2).state_dict(), tmp_path / f"wrong{suffix}")
    with pytest.raises(CheckpointError, match=rf"{path.name}.*'weight' takes 5 inputs where 4 arrive"):
        file_head(path, embed_dim=4)
    chain = save({"a.weight": torch.zeros(3, 4), "b.weight": torch.zeros(2, 5)}, tmp_path / f"chain{suffix}")
    with pytest.raises(CheckpointError, match=rf"{chain.name}.*'b.weight' takes 5 inputs, the layer before gives 3"):
        file_head(chain, embed_dim=4)


def test_batchnorm_running_stats_are_unsupported_keys(tmp_path):
    state = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).state_dict()
    path = save(state, tmp_path / "bn.pt")
    with pytest.raises(CheckpointError, match=r"not a Linear or MLP state dict \(unsupported keys: 1\.") as err:
        file_head(path, embed_dim=4)
    assert str(path) in str(err.value) and "unsupported keys" in str(err.value) and "1." in str(err.value)


def test_no_2d_weights_and_a_bad_activation(tmp_path):
    path = save({"scale": torch.ones(4)}, tmp_path / "flat.pt")
    with pytest.raises(CheckpointError, match="flat.pt.*not a Linear or MLP"):
        file_head(path, embed_dim=4)
    with pytest.raises(UsageError, match="--head-activation 'swish'"):
        file_head(save(nn.Linear(4, 2).state_dict(), tmp_path / "ok.pt"), 4, activation="swish")


def test_extra_features_come_first_in_record_order(tmp_path):
    # Linear(2 extra + 2 embedding, 1): the weight picks one input, so the logit is that input
    extra = np.array([[0.0, 5.0], [math.log(3), 0.0], [-math.log(3), 9.0]])
    pick_extra0 = save({"weight": torch.tensor([[1.0, 0.0, 0.0, 0.0]])}, tmp_path / "e.pt")
    head = file_head(pick_extra0, embed_dim=2, extra=extra)
    assert "2 extra features first" in head.name and "4 -> 1" in head.name
    embedding = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    # rows are records 1, 2, 0: sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2
    p = head.probabilities(embedding, torch.tensor([1, 2, 0]))[:, 1]
    assert p.tolist() == pytest.approx([0.75, 0.25, 0.5], abs=1e-7)
    # the embedding starts after the extra features: weight on input 2 reads the embedding's first dim
    pick_embedding0 = save({"weight": torch.tensor([[0.0, 0.0, 0.01, 0.0]])}, tmp_path / "m.pt")
    p = file_head(pick_embedding0, embed_dim=2, extra=extra).probabilities(embedding, torch.tensor([1, 2, 0]))[:, 1]
    assert p.tolist() == pytest.approx([1 / (1 + math.exp(-x)) for x in (0.1, 0.3, 0.5)], abs=1e-7)


def test_a_head_that_ignores_the_extra_features_width_is_refused(tmp_path):
    path = save(nn.Linear(4, 2).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(CheckpointError, match=r"4 inputs where 7 arrive \(4 embedding dims \+ 3 extra features\)"):
        file_head(path, embed_dim=4, extra=np.zeros((5, 3)))


def test_load_extra_features(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(12, dtype=np.float64).reshape(4, 3))
    assert load_extra_features(good, 4).shape == (4, 3)
    cases = {
        "rows.npy": np.zeros((3, 3)),  # a row short
        "flat.npy": np.zeros(4),  # 1-D
        "nan.npy": np.array([[1.0], [math.nan], [2.0], [3.0]]),
        "inf.npy": np.array([[1.0], [math.inf], [2.0], [3.0]]),
        "text.npy": np.array([["a"], ["b"], ["c"], ["d"]]),
    }
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(InputError, match=name):
            load_extra_features(tmp_path / name, 4)
    np.save(tmp_path / "objects.npy", np.array([[{}], [1], [2], [3]], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a readable .npy"):
        load_extra_features(tmp_path / "objects.npy", 4)  # a pickle is never loaded
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="junk.npy"):
        load_extra_features(tmp_path / "junk.npy", 4)


def test_proxy_seeds_give_distinct_seeded_heads_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    heads = build_heads("proxy", fake_loaded(embed_dim=5), proxy_seeds=(42, 43, 44))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert [h.name.endswith(f"seed {s})") for h, s in zip(heads, (42, 43, 44))] == [True] * 3
    for head, seed in zip(heads, (42, 43, 44)):
        torch.manual_seed(seed)
        by_hand = nn.Linear(5, 2)
        assert torch.equal(head.module.weight, by_hand.weight) and torch.equal(head.module.bias, by_hand.bias)
    weights = [h.module.weight for h in heads]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert proxy_head(5).name == heads[0].name  # 42 is the default


def test_build_heads_errors(tmp_path):
    extra = np.zeros((2, 1))
    for choice in ("auto", "proxy", "model"):
        with pytest.raises(UsageError, match="--extra-features needs a head file"):
            build_heads(choice, fake_loaded(), extra=extra)
    with pytest.raises(UsageError, match="not auto, proxy, model or an existing head file"):
        build_heads(str(tmp_path / "absent.pt"), fake_loaded())
    with pytest.raises(UsageError, match="has no classification head"):
        build_heads("model", fake_loaded())
    with pytest.raises(UsageError, match="at least one seed"):
        build_heads("proxy", fake_loaded(), proxy_seeds=())
    path = save(nn.Linear(5, 2).state_dict(), tmp_path / "h.pt")
    [head] = build_heads(str(path), fake_loaded(embed_dim=4), extra=np.zeros((2, 1)))
    assert head.extra_features.shape == (2, 1)


def test_confidence_is_p1_for_binary_and_p_of_the_reference_label_otherwise():
    binary = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    assert confidence(binary, torch.tensor([1, 0])).tolist() == pytest.approx([0.7, 0.1])
    three = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert confidence(three, torch.tensor([2, 0])).tolist() == pytest.approx([0.3, 0.6])


# ----------------------------------------------------------------------------- end to end


def fasta_records(path: Path) -> list[str]:
    records: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            records.append("")
        elif line.strip():
            records[-1] += line.strip()
    return records


def test_audit_with_a_head_file_and_extra_features(random_8m, tmp_path):
    sequences = fasta_records(SEED18)
    assert len(sequences) == 18
    mlp = seeded(nn.Sequential(nn.Linear(3 + 320, 16), nn.ReLU(), nn.Linear(16, 2)), seed=3, scale=0.1)
    head_path = save(mlp.state_dict(), tmp_path / "head.pt")
    extra = np.random.default_rng(0).normal(size=(18, 3)) * 3
    np.save(tmp_path / "extra.npy", extra)
    config = AuditConfig(
        SEED18, device="cpu", head=str(head_path), extra_features=tmp_path / "extra.npy", evidence="off"
    )
    result = run_audit(config, loaded=random_8m)
    assert result.heads == ["file head.pt (MLP 323 -> 16 -> 2, relu, 3 extra features first)"]
    assert result.decision.verdict is Verdict.ACCEPT
    # the padded path's confidence of every record, by hand: fair-esm's forward, residue mean, extra first
    model, alphabet = random_8m.model, random_8m.alphabet
    converter = alphabet.get_batch_converter()
    by_index = {r.index: r for r in result.sequences}
    with torch.no_grad():
        for i, seq in enumerate(sequences):
            _, _, tokens = converter([(str(i), seq)])
            rep = model(tokens, repr_layers=[6])["representations"][6][0, 1 : len(seq) + 1].mean(0)
            x = torch.cat([torch.tensor(extra[i], dtype=torch.float32), rep])
            expected = torch.softmax(mlp(x[None]), -1)[0, 1].item()
            assert by_index[i].confidence_v1 == pytest.approx(expected, abs=1e-5), i
    confidences = [r.confidence_v1 for r in result.sequences]
    assert max(confidences) - min(confidences) > 0.1  # the extra features make records differ


def test_extra_features_with_the_wrong_row_count_stop_the_audit(random_8m, tmp_path):
    np.save(tmp_path / "extra.npy", np.zeros((17, 3)))
    head_path = save(nn.Linear(323, 2).state_dict(), tmp_path / "head.pt")
    with pytest.raises(InputError, match=r"extra.npy: shape \(17, 3\); expected \(18, k\)"):
        run_audit(
            AuditConfig(
                SEED18, device="cpu", head=str(head_path), extra_features=tmp_path / "extra.npy", evidence="off"
            ),
            loaded=random_8m,
        )


def test_the_lowest_agreement_over_proxy_seeds_gates(random_8m):
    # with the cu_seqlens boundaries off by one, one of the three proxy heads flips a label that seed 42's does not
    config = AuditConfig(
        SEED18, device="cpu", proxy_seeds=(42, 43, 44), faults=frozenset([Fault.CU_SEQLENS_OFF_BY_ONE]), evidence="off"
    )
    result = run_audit(config, loaded=random_8m)
    # The agreements below count labels exactly: every confidence is clear of the 0.5 boundary by
    # far more than fp32 rounding (measured: 1e-3 at the closest), so no thread count or BLAS flips one.
    predictions = [p for s in result.sequences for p in s.predictions]
    assert min(abs(c - 0.5) for p in predictions for c in (p.confidence_v1, p.confidence_v2)) > 1e-4
    heads = result.summary["heads"]
    assert [h["head"].endswith(f"seed {s})") for h, s in zip(heads, (42, 43, 44))] == [True] * 3
    assert len({h["head"] for h in heads}) == 3 and result.summary["prediction"] == heads[0]
    agreements = [h["agreement"] for h in heads]
    lowest = min(agreements)
    assert lowest < max(agreements)  # the heads disagree on how bad it is
    for h in heads:
        assert h["agreement"] == 1 - h["disagreements"] / 18
    gate = next(r for r in result.decision.reasons if r.gate == "agreement > accept")
    assert gate.value == lowest
    assert all(len(s.predictions) == 3 for s in result.sequences)
    data = result.to_dict()
    assert len(data["heads"]) == 3 and len(data["sequences"][0]["predictions"]) == 3
