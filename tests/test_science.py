"""The scientific-depth pieces against hand-worked values: the agreement bound, MLM metrics, the
per-layer trace, the high-precision reference, the decision with a reference, invariance batches."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from esmdiv.forward.high_precision import (
    algorithm_tolerance,
    build_high_precision,
    full_precision_softmax,
    high_precision_forward,
)
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import encode, pack, pad, to_padded
from esmdiv.forward.padded import padded_forward
from esmdiv.measure.decision import Evidence, HighPrecisionEvidence, Thresholds, Verdict, decide
from esmdiv.measure.invariance import shuffled_batches
from esmdiv.measure.metrics import distances_to_high_precision
from esmdiv.measure.mlm import PerplexitySums, masked_copy, masked_nll, token_agreement
from esmdiv.measure.stats import agreement_lower_bound, sequences_needed
from esmdiv.measure.trace import TraceAccumulator

from helpers import random_sequences, rows_whose_self_cosine_exceeds_one

# ----------------------------------------------------------------------------- agreement bound


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [1, 2, 7, 18, 100, 299, 1000])
def test_lower_bound_is_scipys_exact_interval_low_end(n, confidence):
    for k in sorted({0, 1, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1))):
        expected = stats.binomtest(k, n).proportion_ci(confidence_level=2 * confidence - 1, method="exact").low
        # scipy finds the interval by root finding: agreement to its tolerance (~1e-9 relative)
        assert agreement_lower_bound(k, n, confidence) == pytest.approx(expected, rel=1e-8, abs=1e-15), (k, n)


@pytest.mark.parametrize("n", [1, 18, 1000])
def test_lower_bound_closed_forms(n):
    # k = n: p^n = 1 - c; k = 1: P(X >= 1) = 1 - (1 - p)^n = 1 - c, so p = 1 - c^(1/n)
    for c in (0.8, 0.95):
        assert agreement_lower_bound(n, n, c) == pytest.approx((1 - c) ** (1 / n), rel=1e-12)
        assert agreement_lower_bound(1, n, c) == pytest.approx(-math.expm1(math.log(c) / n), rel=1e-12)


def test_no_agreement_gives_zero():
    assert agreement_lower_bound(0, 50, 0.95) == 0.0
    assert agreement_lower_bound(18, 18, 0.95) == pytest.approx(0.8467, abs=1e-4)


def test_299_sequences_are_the_fewest_that_can_show_99_percent():
    assert sequences_needed(0.99, 0.95) == 299
    assert agreement_lower_bound(298, 298, 0.95) < 0.99 < agreement_lower_bound(299, 299, 0.95)
    # (1 - c)^(1/n) > t  <=>  n > ln(1 - c) / ln(t)
    assert sequences_needed(0.95, 0.95) == math.floor(math.log(0.05) / math.log(0.95)) + 1 == 59
    assert sequences_needed(0.5, 0.75) == 3  # 0.25^(1/2) = 0.5 is not above 0.5; 0.25^(1/3) is


@pytest.mark.parametrize(
    "args", [(-1, 10, 0.95), (11, 10, 0.95), (0, 0, 0.95), (5, 10, 0.0), (5, 10, 1.0), (5, 10, 1.5)]
)
def test_bound_rejects_bad_arguments(args):
    agreeing, n, confidence = args
    why = "need 0 <= agreeing <= n and n > 0" if not 0 <= agreeing <= n or n == 0 else "confidence must be between"
    with pytest.raises(ValueError, match=why):
        agreement_lower_bound(*args)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.5, 2.0])
def test_sequences_needed_rejects_bad_targets(target):
    with pytest.raises(ValueError, match=f"target must be between 0 and 1, got {target}"):
        sequences_needed(target)


# ----------------------------------------------------------------------------- MLM metrics


def _logits(*rows):
    """(1, L, V) logits from rows of probabilities (log-probabilities are valid logits)."""
    return torch.tensor([rows], dtype=torch.float64).log()


def test_identical_or_shifted_logits_agree_with_zero_js():
    logits = torch.randn(2, 6, 33, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 6, dtype=torch.bool)
    for other in (logits.clone(), logits + 5.0):  # a constant shift is the same distribution
        top1, js = token_agreement(logits, other, mask)
        assert top1.tolist() == [1.0, 1.0]
        assert js.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_js_and_top1_on_two_known_distributions():
    # positions: BOS, residue (same), residue (p vs q), EOS; BOS/EOS disagree wildly but are masked
    v1 = _logits([0.98, 0.01, 0.01], [0.2, 0.3, 0.5], [0.25, 0.75, 1e-300], [0.01, 0.01, 0.98])
    v2 = _logits([0.01, 0.98, 0.01], [0.2, 0.3, 0.5], [0.75, 0.25, 1e-300], [0.98, 0.01, 0.01])
    mask = torch.tensor([[False, True, True, False]])
    top1, js = token_agreement(v1, v2, mask)
    # p = (1/4, 3/4), q = (3/4, 1/4), m = (1/2, 1/2): KL(p||m) = KL(q||m) = 1/4 ln(1/2) + 3/4 ln(3/2)
    js_pq = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert js_pq == pytest.approx(0.1308120, abs=1e-7)
    assert top1.tolist() == [0.5]  # one of the two counted positions flips its top token
    assert js.tolist() == pytest.approx([js_pq / 2], abs=1e-12)  # mean over the two positions


def test_js_of_disjoint_distributions_is_ln2_and_matches_numpy():
    v1 = torch.tensor([[[100.0, -100.0], [0.3, -1.2]]])
    v2 = torch.tensor([[[-100.0, 100.0], [2.0, 0.5]]])
    mask = torch.tensor([[True, False]])
    assert token_agreement(v1, v2, mask)[1].item() == pytest.approx(math.log(2), abs=1e-12)

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    p, q = softmax(np.array([0.3, -1.2])), softmax(np.array([2.0, 0.5]))
    m = (p + q) / 2
    expected = 0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum()
    top1, js = token_agreement(v1, v2, torch.tensor([[False, True]]))
    assert js.item() == pytest.approx(expected, abs=1e-6) and top1.item() == 1.0  # fp32 logits


@pytest.mark.parametrize("n_residues, k", [(1, 1), (3, 1), (7, 1), (20, 3), (100, 15), (1022, 153)])
def test_masked_copy_masks_15_percent_of_residues_never_bos_or_eos(n_residues, k):
    tokens = torch.arange(n_residues + 2) + 100
    original = tokens.clone()
    masked, positions = masked_copy(tokens, index=4, mask_idx=32)
    assert len(positions) == k == max(1, round(0.15 * n_residues))
    assert len(set(positions.tolist())) == k and positions.tolist() == sorted(positions.tolist())
    assert positions.min() >= 1 and positions.max() <= n_residues  # never BOS (0) nor EOS (n + 1)
    assert (masked[positions] == 32).all()
    keep = torch.ones(n_residues + 2, dtype=torch.bool)
    keep[positions] = False
    assert torch.equal(masked[keep], original[keep])
    assert torch.equal(tokens, original)  # a copy: the input is untouched


def test_masked_copy_is_deterministic_per_seed_and_index():
    tokens = torch.arange(202)
    same = [masked_copy(tokens, 7, 32)[1].tolist() for _ in range(2)]
    assert same[0] == same[1]
    assert masked_copy(tokens, 8, 32)[1].tolist() != same[0]
    assert masked_copy(tokens, 7, 32, seed=1)[1].tolist() != same[0]
    # the positions depend on (seed, index) only, not on the token values
    assert masked_copy(tokens * 0 + 5, 7, 32)[1].tolist() == same[0]


def test_masked_nll_by_hand():
    logits = torch.tensor(
        [
            [9.0, 0.0, 0.0],  # BOS: not scored
            [0.0, 0.0, 0.0],  # uniform over 3: -log p = ln 3
            [math.log(0.5), math.log(0.25), math.log(0.25)],  # target 0: -log p = ln 2
            [0.0, 9.0, 0.0],  # EOS: not scored
        ]
    )
    targets = torch.tensor([0, 2, 0, 1])
    nll, count = masked_nll(logits, targets, torch.tensor([1, 2]))
    assert count == 2 and nll == pytest.approx(math.log(6), abs=1e-6)


def test_perplexity_sums():
    assert PerplexitySums().to_dict() == {"sequences": 0}
    sums = PerplexitySums()
    sums.add(2 * math.log(2), 2 * math.log(4), 2)
    sums.add(3 * math.log(2), 3 * math.log(4), 3)
    out = sums.to_dict()
    assert (out["sequences"], out["masked_tokens"]) == (2, 5)
    # exp(mean nll): exp(ln 2) = 2 and exp(ln 4) = 4
    assert out["perplexity_v1"] == pytest.approx(2.0) and out["perplexity_v2"] == pytest.approx(4.0)
    assert out["delta"] == pytest.approx(2.0) and out["relative_delta"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- per-layer trace

HUGE = 1e30


def _layer(residues_v1, residues_v2):
    """One sequence (B=1): BOS, the residues, EOS, one padding row; BOS/EOS/padding differ hugely."""
    n = len(residues_v1)
    v1 = torch.full((1, n + 3, 2), 0.0)
    v2 = torch.full((1, n + 3, 2), 0.0)
    v1[0, 1 : n + 1] = torch.tensor(residues_v1)
    v2[0, 1 : n + 1] = torch.tensor(residues_v2)
    v1[0, 0], v2[0, 0] = torch.tensor([7.0, 7.0]), torch.tensor([-7.0, 7.0])
    v1[0, n + 1], v2[0, n + 1] = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    v1[0, n + 2], v2[0, n + 2] = HUGE, math.nan
    mask = torch.zeros(1, n + 3, dtype=torch.bool)
    mask[0, 1 : n + 1] = True
    return v1, v2, mask


def _two_layer_trace():
    acc = TraceAccumulator(num_layers=2)
    # layer 0: one element off by 1/8; ||v1||^2 = 25 + 25
    assert not acc.add(0, *_layer([[3, 4], [0, 5]], [[3, 4.125], [0, 5]])).any()
    # layer 1: the first residue turns by 90 degrees
    acc.add(1, *_layer([[1, 0], [0, 1]], [[0, 1], [0, 1]]))
    # layer 2: the first residue flips sign
    acc.add(2, *_layer([[1, 0], [0, 1]], [[-1, 0], [0, 1]]))
    return acc


def test_trace_per_layer_values_by_hand():
    result = _two_layer_trace().result()
    l0, l1, l2 = result["layers"]
    assert [t["layer"] for t in result["layers"]] == [0, 1, 2]
    assert l0["max_abs_diff"] == 0.125
    assert l0["rel_l2"] == pytest.approx(0.125 / math.sqrt(50), rel=1e-12)
    cos = (9 + 4 * 4.125) / (5 * math.hypot(3, 4.125))  # first residue; the second is identical
    assert l0["cosine"] == pytest.approx((cos + 1) / 2, abs=1e-6)
    assert l0["cosine_min"] == pytest.approx(cos, abs=1e-6)
    assert l1["max_abs_diff"] == 1.0 and l1["rel_l2"] == pytest.approx(1.0)  # ||Δ||^2 = 2, ||v1||^2 = 2
    assert l1["cosine"] == pytest.approx(0.5, abs=1e-6) and l1["cosine_min"] == pytest.approx(0.0, abs=1e-6)
    assert l2["max_abs_diff"] == 2.0 and l2["rel_l2"] == pytest.approx(math.sqrt(2))  # ||Δ||^2 = 4
    assert l2["cosine_min"] == pytest.approx(-1.0, abs=1e-6)
    assert not any(t["nonfinite"] for t in result["layers"])


def test_trace_first_layer_over_and_largest_jump():
    acc = _two_layer_trace()
    rel0 = 0.125 / math.sqrt(50)  # 0.0177
    assert acc.result()["first_layer_over"] == 0  # default threshold 1e-2 < 0.0177
    assert acc.result(0.05)["first_layer_over"] == 1
    assert acc.result(1.2)["first_layer_over"] == 2
    assert acc.result(10.0)["first_layer_over"] is None
    r = acc.result()
    # jumps: layer 1 is 1 / 0.0177 = 56.6x layer 0; layer 2 is sqrt(2)x layer 1
    assert r["largest_jump_layer"] == 1 and r["largest_jump_ratio"] == pytest.approx(1 / rel0, rel=1e-9)


def test_trace_accumulates_sums_over_batches_not_means_of_ratios():
    acc = TraceAccumulator(num_layers=0)
    acc.add(0, *_layer([[1, 0]], [[1, 0.5]]))  # ||Δ||^2 = 0.25, ||v1||^2 = 1
    acc.add(0, *_layer([[0, 3], [4, 0]], [[0, 3], [4, 0]]))  # ||Δ||^2 = 0, ||v1||^2 = 25
    layer = acc.result()["layers"][0]
    assert layer["rel_l2"] == pytest.approx(math.sqrt(0.25 / 26), rel=1e-12)
    assert layer["max_abs_diff"] == 0.5
    assert layer["cosine"] == pytest.approx((1 / math.hypot(1, 0.5) + 1 + 1) / 3, abs=1e-6)  # over 3 rows


def test_trace_names_the_non_finite_sequence_and_layer():
    acc = TraceAccumulator(num_layers=2)
    a = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    mask = torch.tensor([[False, True, True, False]] * 2)
    assert acc.add(0, a, a.clone(), mask).tolist() == [False, False]
    bad = a.clone()
    bad[1, 2, 0] = math.nan  # sequence 1, a residue row, from layer 1 on
    b = a.clone()
    b[0, 1, 1] = 0.5  # sequence 0 differs a little at layer 1
    b[1] = bad[1]
    assert acc.add(1, a, b, mask).tolist() == [False, True]
    assert acc.add(2, a, bad, mask).tolist() == [False, True]
    r = acc.result(threshold=10.0)
    assert [t["nonfinite"] for t in r["layers"]] == [False, True, True]
    assert r["first_layer_over"] == 1  # a non-finite layer counts as crossed whatever the threshold
    # the finite sequence still counts at layer 1: ||Δ||^2 = 0.25 over ||v1||^2 = 2, its two rows only
    assert r["layers"][1]["rel_l2"] == pytest.approx(math.sqrt(0.25 / 2)) and r["layers"][1]["max_abs_diff"] == 0.5
    assert math.isfinite(r["layers"][1]["cosine"])


def test_trace_ignores_non_finite_bos_eos_and_padding():
    acc = TraceAccumulator(num_layers=0)
    v1, v2, mask = _layer([[1.0, 2.0]], [[1.0, 2.0]])
    v2[0, 0] = math.inf  # BOS
    assert acc.add(0, v1, v2, mask).tolist() == [False]
    layer = acc.result()["layers"][0]
    assert (layer["max_abs_diff"], layer["rel_l2"], layer["nonfinite"]) == (0.0, 0.0, False)


# ----------------------------------------------------------------------------- reference


def test_distances_to_reference_by_hand():
    E11, E8 = 2.0**-11, 2.0**-8
    ref = torch.tensor(
        [
            [[9, 9], [1, 0], [0, 1], [5, 5], [HUGE, HUGE]],
            [[3, 3], [1, 2], [7, 7], [math.nan, 0], [0, math.inf]],
        ],
        dtype=torch.float64,
    )
    path = torch.tensor(
        [
            [[0, 0], [2, 0], [1, 2], [-5, -5], [-HUGE, HUGE]],
            [[3, 3], [1 + E11, 2 + E8], [7, 7], [0, 0], [0, 0]],
        ],
        dtype=torch.float32,
    )
    lengths = torch.tensor([4, 3])
    d0, d1 = distances_to_high_precision(path, ref, lengths)
    # pooled path [1.5, 1] vs reference [0.5, 0.5]
    assert d0.cosine == pytest.approx(5 / math.sqrt(26), abs=1e-12)
    assert d0.mad == pytest.approx(0.75, abs=1e-12)
    assert d0.rel_l2 == pytest.approx(math.sqrt(3 / 2), abs=1e-12)  # ||(1,0,1,1)|| / ||(1,0,0,1)||
    assert d0.pooled_rel_l2 == pytest.approx(math.hypot(1, 0.5) / math.hypot(0.5, 0.5), abs=1e-12)
    a, b = np.array([1 + E11, 2 + E8]), np.array([1.0, 2.0])
    assert d1.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-12)
    assert d1.mad == pytest.approx((E11 + E8) / 2, abs=1e-15)
    assert d1.rel_l2 == pytest.approx(math.hypot(E11, E8) / math.sqrt(5), rel=1e-12)
    # a buggy pipeline pooling EOS on the path: [-2/3, -1] vs [0.5, 0.5]; residue rel-L2 unchanged
    e0 = distances_to_high_precision(path, ref, lengths, include_eos=True)[0]
    assert e0.cosine == pytest.approx(-5 / math.sqrt(26), abs=1e-7)
    assert e0.mad == pytest.approx(4 / 3, abs=1e-7)
    assert e0.rel_l2 == pytest.approx(math.sqrt(3 / 2), abs=1e-12)
    assert e0.pooled_rel_l2 == pytest.approx(math.hypot(7 / 6, 1.5) / math.hypot(0.5, 0.5), abs=1e-7)
    assert d0.to_dict() == {"cosine": d0.cosine, "mad": d0.mad, "rel_l2": d0.rel_l2, "pooled_rel_l2": d0.pooled_rel_l2}


def test_a_non_finite_residue_makes_that_distance_nan():
    ref = torch.ones(2, 4, 3, dtype=torch.float64)
    path = torch.ones(2, 4, 3)
    path[0, 2, 1] = math.nan
    d0, d1 = distances_to_high_precision(path, ref, torch.tensor([4, 4]))
    assert all(math.isnan(v) for v in (d0.cosine, d0.mad, d0.rel_l2))
    assert (d1.cosine, d1.mad, d1.rel_l2) == (pytest.approx(1.0, abs=1e-15), 0.0, 0.0)


def test_algorithm_tolerance_is_a_tenth_of_sqrt_eps():
    # fp32: eps = 2^-23, sqrt = 2^-11.5; fp64: eps = 2^-52, sqrt = 2^-26
    assert algorithm_tolerance(torch.float32) == pytest.approx(0.1 * 2**-11.5, rel=1e-12)
    assert algorithm_tolerance(torch.float32) == pytest.approx(3.4527e-5, rel=1e-4)
    assert algorithm_tolerance(torch.float64) == pytest.approx(0.1 * 2**-26, rel=1e-12)
    assert algorithm_tolerance(torch.float64) == pytest.approx(1.4901e-9, rel=1e-4)


def test_full_precision_softmax_keeps_fp64_and_restores_fair_esm():
    import esm.multihead_attention as mha

    original = mha.utils_softmax
    x = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    e = np.exp(x.numpy() - x.numpy().max(-1, keepdims=True))
    exact = e / e.sum(-1, keepdims=True)
    assert original(x, dim=-1).dtype == torch.float32  # fair-esm's own: always fp32
    with full_precision_softmax():
        assert mha.utils_softmax is not original
        out = mha.utils_softmax(x, dim=-1)
        assert out.dtype == torch.float64
        assert np.abs(out.numpy() - exact).max() < 1e-15
        assert mha.utils_softmax(x.half(), dim=-1).dtype == torch.float32  # never below fp32
    assert mha.utils_softmax is original
    with pytest.raises(RuntimeError, match="inside"):
        with full_precision_softmax():
            raise RuntimeError("inside")
    assert mha.utils_softmax is original


def test_reference_is_a_fp64_copy_whose_packed_algorithm_agrees_to_fp64_rounding(random_8m):
    model, alphabet = random_8m.model, random_8m.alphabet
    ref = build_high_precision(model, torch.device("cpu"))
    assert ref is not model and next(model.parameters()).dtype == torch.float32  # the run model is untouched
    assert next(ref.parameters()).dtype == torch.float64
    rot = ref.layers[0].self_attn.rot_emb
    dim = ref.layers[0].self_attn.head_dim
    assert rot.inv_freq.dtype == torch.float64
    assert torch.equal(rot.inv_freq, 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)))

    tokens = [encode(s, alphabet) for s in random_sequences([5, 40, 17, 90], seed=3)]
    padded, packed = pad(tokens, alphabet.padding_idx), pack(tokens)
    lengths = torch.tensor([len(t) for t in tokens])
    out = high_precision_forward(ref, padded)
    assert out.dtype == torch.float64 and out.shape == (4, 92, 320)
    algorithm = to_padded(packed_forward(ref, packed, "reference").representations[6], packed)
    tolerance = algorithm_tolerance(torch.float64)
    assert max(d.rel_l2 for d in distances_to_high_precision(algorithm, out, lengths)) < tolerance / 100
    # fair-esm's fp32 softmax alone would put the fp64 reference above the algorithm tolerance
    with torch.inference_mode():
        fp32_softmax = ref(padded, repr_layers=[6])["representations"][6]
    assert max(d.rel_l2 for d in distances_to_high_precision(algorithm, fp32_softmax, lengths)) > tolerance
    # the fp32 run model sits at fp32 rounding from its reference
    v1 = padded_forward(model, padded).representations[6]
    assert 1e-9 < max(d.rel_l2 for d in distances_to_high_precision(v1, out, lengths)) < 1e-5


# ----------------------------------------------------------------------------- decide() with a reference

FP64_TOLERANCE = algorithm_tolerance(torch.float64)


def reference(**overrides):
    values = dict(
        finite=True,
        ratio=1.0,
        agreeing=100,
        min_cosine=0.99999,
        max_mad=1e-5,
        algorithm_error=1e-13,
        algorithm_tolerance=FP64_TOLERANCE,
    )
    return HighPrecisionEvidence(**{**values, **overrides})


def reasons(decision):
    return {r.gate: r for r in decision.reasons}


def test_packed_nearer_the_reference_than_the_padded_path_is_not_punished():
    # packed vs padded: 90 % agreement, cosine 0.95, MAD 0.05 -> FALLBACK on its own
    alone = decide(Evidence(100, 0.9, 0.95, 0.05), Thresholds())
    assert alone.verdict is Verdict.FALLBACK
    decision = decide(Evidence(100, 0.9, 0.95, 0.05, high_precision=reference()), Thresholds())
    assert decision.verdict is Verdict.ACCEPT
    r = reasons(decision)
    for gate in ("agreement >= validate", "agreement > accept", "min cosine", "max MAD"):
        assert r[gate].passed and "packed vs reference" in r[gate].message, gate
    assert r["min cosine"].value == 0.99999 and r["max MAD"].value == 1e-5 and r["agreement > accept"].value == 1.0


def test_the_reference_never_makes_a_gate_worse():
    decision = decide(
        Evidence(100, 1.0, 0.99999, 1e-5, high_precision=reference(agreeing=90, min_cosine=0.9, max_mad=0.5)),
        Thresholds(),
    )
    assert decision.verdict is Verdict.ACCEPT
    r = reasons(decision)
    assert r["min cosine"].value == 0.99999 and "packed vs padded" in r["min cosine"].message
    assert r["max MAD"].value == 1e-5 and "packed vs padded" in r["agreement > accept"].message


def test_reference_ratio_above_the_threshold_is_validate():
    assert (
        decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(ratio=2.0)), Thresholds()).verdict
        is Verdict.ACCEPT
    )
    decision = decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(ratio=2.5)), Thresholds())
    assert decision.verdict is Verdict.VALIDATE
    gate = reasons(decision)["reference ratio"]
    assert not gate.passed and (gate.value, gate.threshold) == (2.5, 2.0) and "2.5x" in gate.message
    loose = Thresholds(max_reference_ratio=3.0)
    assert (
        decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(ratio=2.5)), loose).verdict is Verdict.ACCEPT
    )


def test_algorithm_error_above_tolerance_is_validate():
    decision = decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(algorithm_error=1e-8)), Thresholds())
    assert decision.verdict is Verdict.VALIDATE
    gate = reasons(decision)["algorithm"]
    assert not gate.passed and gate.value == 1e-8 and gate.threshold == FP64_TOLERANCE
    # an explicit --max-algorithm-error replaces the dtype's default
    explicit = Thresholds(max_algorithm_error=1e-7)
    passed = decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(algorithm_error=1e-8)), explicit)
    assert passed.verdict is Verdict.ACCEPT and reasons(passed)["algorithm"].threshold == 1e-7
    nan = decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=reference(algorithm_error=math.nan)), Thresholds())
    assert nan.verdict is Verdict.VALIDATE  # unknown never passes


def test_non_finite_reference_is_fallback_and_lends_nothing():
    bad = reference(finite=False, ratio=math.nan, agreeing=100, min_cosine=math.nan, max_mad=math.nan)
    decision = decide(Evidence(100, 1.0, 0.9999, 1e-4, high_precision=bad), Thresholds())
    assert decision.verdict is Verdict.FALLBACK
    r = reasons(decision)
    assert not r["reference finite"].passed and "reference run went non-finite" in r["reference finite"].message
    assert "reference ratio" not in r and "algorithm" not in r
    assert "packed vs padded" in r["min cosine"].message
    # nor can a non-finite reference rescue a failing packed-vs-padded gate
    rescued = decide(Evidence(100, 1.0, 0.5, 1e-4, high_precision=bad), Thresholds())
    assert rescued.verdict is Verdict.FALLBACK and not reasons(rescued)["min cosine"].passed


@pytest.mark.parametrize(
    "padded, packed, passed",
    [(0.0, 0.0, True), (0.0, 1e-6, False), (1e-6, 2e-6, True), (1e-6, 2.1e-6, False), (3e-5, 1e-7, True)],
)
def test_invariance_gate(padded, packed, passed):
    decision = decide(Evidence(100, 1.0, 0.9999, 1e-4, invariance=(padded, packed)), Thresholds())
    gate = reasons(decision)["invariance"]
    assert gate.passed is passed and gate.value == packed and gate.threshold == pytest.approx(2 * padded)
    assert decision.verdict is (Verdict.ACCEPT if passed else Verdict.VALIDATE)


def test_bound_gate_with_18_of_18_is_validate_where_the_point_gate_accepts():
    point = decide(Evidence(18, 1.0, 0.9999, 1e-4, agreeing=18), Thresholds())
    bound = decide(Evidence(18, 1.0, 0.9999, 1e-4, agreeing=18), Thresholds(gate="bound"))
    assert point.verdict is Verdict.ACCEPT
    assert bound.verdict is Verdict.VALIDATE  # too few sequences: a person looks; nothing says keep the padded path
    accept_bar = reasons(bound)["agreement > accept"]
    assert not accept_bar.passed and accept_bar.value == pytest.approx(0.05 ** (1 / 18))
    assert "84.67%" in accept_bar.message and "lower bound" in accept_bar.message
    assert reasons(bound)["agreement >= validate"].passed
    for decision in (point, bound):
        assert any("299 sequences are needed" in note for note in decision.notes)
    # a real disagreement rate under the floor is still FALLBACK in bound mode
    assert (
        decide(Evidence(18, 16 / 18, 0.9999, 1e-4, agreeing=16), Thresholds(gate="bound")).verdict is Verdict.FALLBACK
    )


def test_bound_gate_accepts_with_enough_sequences_and_the_note_goes_away():
    big = decide(Evidence(299, 1.0, 0.9999, 1e-4, agreeing=299), Thresholds(gate="bound"))
    assert big.verdict is Verdict.ACCEPT and not big.notes
    short = decide(Evidence(298, 1.0, 0.9999, 1e-4, agreeing=298), Thresholds(gate="bound"))
    assert short.verdict is Verdict.VALIDATE and short.notes


def test_tolerances_are_the_values_actually_needed_and_would_pass():
    ev = Evidence(
        100,
        0.9,
        0.95,
        0.05,
        agreeing=90,
        high_precision=reference(agreeing=98, min_cosine=0.991, max_mad=0.002, ratio=2.5, algorithm_error=1e-8),
    )
    decision = decide(ev, Thresholds())
    assert decision.verdict is Verdict.VALIDATE
    tol = decision.tolerances
    # the better of packed-vs-padded and packed-vs-reference
    assert tol["accept_agreement"]["needed"] == 0.98
    assert tol["min_cosine"]["needed"] == 0.991 and tol["max_mad"]["needed"] == 0.002
    assert tol["max_reference_ratio"]["needed"] == 2.5 and tol["max_algorithm_error"]["needed"] == 1e-8
    assert "--min-cosine below 0.991" in tol["min_cosine"]["passes_if"]
    # thresholds just past what each gate needed: every gate passes
    loosened = Thresholds(
        accept_agreement=0.979,
        validate_agreement=0.9,
        min_cosine=0.9909,
        max_mad=0.0021,
        max_reference_ratio=2.5,
        max_algorithm_error=1e-8,
    )
    assert decide(ev, loosened).verdict is Verdict.ACCEPT
    # and in bound mode the agreement tolerance is the bound, not the point estimate
    bound = decide(ev, Thresholds(gate="bound")).tolerances["accept_agreement"]["needed"]
    exact = stats.binomtest(98, 100).proportion_ci(confidence_level=0.9, method="exact").low
    assert bound == pytest.approx(exact, rel=1e-9) and bound < 0.98
    assert "max_reference_ratio" not in decide(Evidence(100, 1.0, 0.9999, 1e-4), Thresholds()).tolerances


# ----------------------------------------------------------------------------- invariance batches


def test_shuffled_batches_cover_every_sequence_once_in_the_seeded_order():
    lengths = [12, 50, 20, 31, 5, 70, 8, 8, 44, 3]
    batches = shuffled_batches(lengths, max_tokens=100, seed=1)
    flat = [i for b in batches for i in b]
    assert flat == np.random.default_rng(1).permutation(len(lengths)).tolist()
    for batch, following in zip(batches, batches[1:] + [None]):
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 100  # a padded batch within the budget
        if following is not None:  # greedy: the next sequence would not have fitted
            assert (len(batch) + 1) * max(longest, lengths[following[0]]) > 100
    assert shuffled_batches(lengths, 100, seed=1) == batches
    assert [i for b in shuffled_batches(lengths, 100, seed=2) for i in b] != flat


def test_a_sequence_over_the_budget_runs_alone():
    batches = shuffled_batches([10, 500, 10], max_tokens=100, seed=0)
    assert [len(b) for b in batches if 1 in b] == [1]
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


def test_trace_cosine_of_equal_rows_never_passes_one():
    # fp32 cosine_similarity of a row with itself can round to 1 + 4e-7 (the report schema caps cosines at 1);
    # keep only such rows, so the unclamped mean would be above 1
    rows = rows_whose_self_cosine_exceeds_one()
    n = len(rows)
    acc = TraceAccumulator(num_layers=0)
    acc.add(0, rows[None], rows[None].clone(), torch.ones(1, n, dtype=torch.bool))
    layer = acc.result()["layers"][0]
    assert layer["cosine"] <= 1.0 and layer["cosine_min"] <= 1.0
    assert layer["cosine"] == pytest.approx(1.0, abs=1e-6)
