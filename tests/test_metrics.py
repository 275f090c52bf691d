"""esmdiv.measure.metrics against values worked out by hand on tiny tensors.

Layout of every hand batch: ``(B, L, D)`` with row 0 BOS, then the residues, then EOS, then
padding. Padding rows hold huge (or non-finite) values that must never reach a number.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from esmdiv.measure.metrics import (
    SequenceMetrics,
    _row_quantiles,
    compare_embeddings,
    cosine,
    cosine_rows,
    distances_to_high_precision,
    mean_pool,
    mean_pool_batch,
    prediction_summary,
    residue_mask,
    spread,
)

from helpers import rows_whose_self_cosine_exceeds_one

HUGE = 1e30
E11, E8 = 2.0**-11, 2.0**-8  # exact in fp32: 4.9e-4 (within 1e-3) and 3.9e-3 (within 1e-2 only)


def hand_batch():
    """Two sequences, D=2. Sequence 0: 4 tokens (BOS, 2 residues, EOS), one padding row.
    Sequence 1: 3 tokens (BOS, 1 residue, EOS), two padding rows."""
    v1 = torch.tensor(
        [
            [[9, 9], [1, 0], [0, 1], [5, 5], [HUGE, -HUGE]],
            [[3, 3], [1, 2], [7, 7], [HUGE, HUGE], [-HUGE, HUGE]],
        ],
        dtype=torch.float32,
    )
    v2 = torch.tensor(
        [
            [[0, 0], [2, 0], [1, 2], [-5, -5], [-HUGE, HUGE]],
            [[3, 3], [1 + E11, 2 + E8], [7, 7], [-HUGE, -HUGE], [HUGE, HUGE]],
        ],
        dtype=torch.float32,
    )
    return v1, v2, torch.tensor([4, 3])


def test_residue_mask_marks_residues_only_and_eos_on_request():
    lengths = torch.tensor([4, 3, 2])
    assert residue_mask(lengths, 5).tolist() == [
        [False, True, True, False, False],
        [False, True, False, False, False],
        [False, False, False, False, False],  # BOS + EOS only: no residue
    ]
    assert residue_mask(lengths, 5, include_eos=True).tolist() == [
        [False, True, True, True, False],
        [False, True, True, False, False],
        [False, True, False, False, False],
    ]


def test_mean_pool_batch_averages_residues_and_ignores_bos_eos_padding():
    v1, v2, lengths = hand_batch()
    # seq 0: ([1,0] + [0,1]) / 2; seq 1: the single residue [1, 2]
    assert mean_pool_batch(v1, lengths).tolist() == [[0.5, 0.5], [1.0, 2.0]]
    # seq 0 of v2: ([2,0] + [1,2]) / 2
    assert mean_pool_batch(v2, lengths)[0].tolist() == [1.5, 1.0]


def test_mean_pool_with_eos_is_the_known_pooling_bug():
    v1, v2, lengths = hand_batch()
    # ([2,0] + [1,2] + [-5,-5]) / 3 = [-2/3, -1]; seq 1: ([1+E11, 2+E8] + [7,7]) / 2
    pooled = mean_pool_batch(v2, lengths, include_eos=True)
    assert pooled[0].tolist() == pytest.approx([-2 / 3, -1.0])
    assert pooled[1].tolist() == pytest.approx([(8 + E11) / 2, (9 + E8) / 2])


def test_mean_pool_of_one_sequence():
    v1, v2, _ = hand_batch()
    assert mean_pool(v1[0, :4]).tolist() == [0.5, 0.5]
    assert mean_pool(v1[0, :4], include_eos=True).tolist() == pytest.approx([2.0, 2.0])  # ([1,0]+[0,1]+[5,5])/3
    assert mean_pool(v1[0, :4]).dtype == torch.float32
    assert mean_pool(v1[0, :4].half()).dtype == torch.float32
    assert mean_pool(v1[0, :4].double()).dtype == torch.float64


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_non_finite_padding_is_never_read(poison):
    v1, v2, lengths = hand_batch()
    v1[1, 3:] = poison
    v2[1, 3:] = poison
    assert mean_pool_batch(v1, lengths).tolist() == [[0.5, 0.5], [1.0, 2.0]]
    m = compare_embeddings(v1, v2, lengths).metrics[1]
    assert m.finite_v1 and m.finite_v2
    assert math.isfinite(m.cosine) and math.isfinite(m.mad) and m.max_abs_diff == E8


def test_compare_embeddings_matches_hand_values():
    v1, v2, lengths = hand_batch()
    comparison = compare_embeddings(v1, v2, lengths)
    assert comparison.pooled_v1.tolist() == [[0.5, 0.5], [1.0, 2.0]]
    assert comparison.pooled_v2.tolist() == [[1.5, 1.0], [1 + E11, 2 + E8]]
    s0, s1 = comparison.metrics

    # Sequence 0: pooled [0.5, 0.5] vs [1.5, 1.0]: cos = 1.25 / (sqrt(.5) sqrt(3.25)) = 5 / sqrt(26)
    assert s0.cosine == pytest.approx(5 / math.sqrt(26), abs=1e-12)
    assert s0.mad == pytest.approx((1.0 + 0.5) / 2, abs=1e-12)
    # residue diffs [1, 0] and [1, 1] (BOS differs by 9 and EOS by 10: never counted)
    assert s0.max_abs_diff == 1.0
    # residue cosines: [1,0]·[2,0] -> 1; [0,1]·[1,2] -> 2/sqrt(5)
    assert s0.residue_cosine_min == pytest.approx(2 / math.sqrt(5), abs=1e-6)
    assert s0.residue_cosine_mean == pytest.approx((1 + 2 / math.sqrt(5)) / 2, abs=1e-6)
    # ||Δ|| = sqrt(1 + 0 + 1 + 1), ||v1|| = sqrt(1 + 0 + 0 + 1)
    assert s0.rel_l2 == pytest.approx(math.sqrt(3 / 2), abs=1e-12)
    assert s0.p999_abs_diff == 1.0  # |Δ| = {0, 1, 1, 1}: the 99.9th percentile of 4 values is the largest
    assert s0.allclose_1e3 == 0.25 and s0.allclose_1e2 == 0.25  # only the 0 is within either tolerance
    assert s0.finite_v1 and s0.finite_v2

    # Sequence 1: one residue [1, 2] vs [1 + 2^-11, 2 + 2^-8]
    a, b = np.array([1.0, 2.0]), np.array([1 + E11, 2 + E8])
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert s1.cosine == pytest.approx(cos, abs=1e-12)
    assert s1.mad == pytest.approx((E11 + E8) / 2, abs=1e-12)
    assert s1.max_abs_diff == E8
    assert s1.residue_cosine_min == pytest.approx(cos, abs=1e-6) and s1.residue_cosine_mean == pytest.approx(
        cos, abs=1e-6
    )
    assert s1.rel_l2 == pytest.approx(math.hypot(E11, E8) / math.sqrt(5), rel=1e-12)
    assert s1.p999_abs_diff == E8
    assert s1.allclose_1e3 == 0.5  # 2^-11 <= 1e-3 < 2^-8
    assert s1.allclose_1e2 == 1.0


def test_compare_embeddings_with_eos_pooled_on_the_packed_side():
    v1, v2, lengths = hand_batch()
    s0 = compare_embeddings(v1, v2, lengths, include_eos_v2=True).metrics[0]
    # pooled [0.5, 0.5] vs [-2/3, -1]: cos = (-1/3 - 1/2) / (sqrt(1/2) sqrt(13/9)) = -5 / sqrt(26)
    assert s0.cosine == pytest.approx(-5 / math.sqrt(26), abs=1e-7)
    assert s0.mad == pytest.approx((7 / 6 + 3 / 2) / 2, abs=1e-7)
    # the residue-level metrics never see EOS
    assert s0.max_abs_diff == 1.0 and s0.rel_l2 == pytest.approx(math.sqrt(3 / 2), abs=1e-12)


def test_identical_paths_give_cosine_one_and_zero_differences():
    v1, _, lengths = hand_batch()
    for m in compare_embeddings(v1, v1.clone(), lengths).metrics:
        assert m.cosine == pytest.approx(1.0, abs=1e-15) and m.mad == 0.0 and m.max_abs_diff == 0.0 and m.rel_l2 == 0.0
        assert m.p999_abs_diff == 0.0 and m.allclose_1e3 == 1.0 and m.allclose_1e2 == 1.0


@pytest.mark.parametrize(
    "row, path, value",
    [(0, "v2", math.nan), (3, "v1", math.inf), (1, "v1", math.nan), (2, "v2", -math.inf)],
    ids=["nan-bos-v2", "inf-eos-v1", "nan-residue-v1", "inf-residue-v2"],
)
def test_a_non_finite_token_row_makes_only_that_sequence_non_finite(row, path, value):
    v1, v2, lengths = hand_batch()
    (v1 if path == "v1" else v2)[0, row, 1] = value
    s0, s1 = compare_embeddings(v1, v2, lengths).metrics
    assert (s0.finite_v1, s0.finite_v2) == ((False, True) if path == "v1" else (True, False))
    assert math.isnan(s0.cosine) and math.isnan(s0.mad) and math.isnan(s0.max_abs_diff)
    assert math.isnan(s0.rel_l2) and math.isnan(s0.allclose_1e3)
    assert s1.finite_v1 and s1.finite_v2 and s1.max_abs_diff == E8  # the other sequence is untouched


def test_nan_in_the_bos_row_makes_the_sequence_non_finite_even_though_pooling_skips_it():
    v1, v2, lengths = hand_batch()
    v2[1, 0, 0] = math.nan
    s1 = compare_embeddings(v1, v2, lengths).metrics[1]
    assert s1.finite_v1 and not s1.finite_v2 and math.isnan(s1.cosine)


def test_p999_is_the_nearest_rank_percentile_on_a_known_set():
    # 1500 residues x 1 dim, |Δ| = k / 2048 for k = 1..1500 in a shuffled order (exact in fp32)
    n = 1500
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    v1 = torch.zeros(1, n + 2, 1)
    v2 = torch.zeros(1, n + 2, 1)
    v2[0, 1:-1, 0] = (order + 1).float() / 2048
    v2[0, 0, 0] = v2[0, -1, 0] = 100.0  # BOS and EOS: far above every residue difference
    m = compare_embeddings(v1, v2, torch.tensor([n + 2])).metrics[0]
    values = np.arange(1, n + 1) / 2048
    # nearest rank: 0.999 * 1500 = 1498.5, so the 1499th smallest value
    assert m.p999_abs_diff == 1499 / 2048 == np.percentile(values, 99.9, method="inverted_cdf")
    assert m.max_abs_diff == 1500 / 2048
    assert m.allclose_1e3 == 2 / n  # 1/2048 and 2/2048 <= 1e-3 < 3/2048
    assert m.allclose_1e2 == 20 / n  # 1/2048 .. 20/2048 <= 1e-2 < 21/2048


def _quantiles(values, mask):
    counts = mask.sum(1) * values.shape[2]
    return _row_quantiles(values, mask, counts, 0.999)


def test_quantile_works_past_torch_quantile_limit():
    n = 2**24 + 5  # torch.quantile refuses more than 2**24 elements
    values = (torch.randperm(n, generator=torch.Generator().manual_seed(0)) + 1).float()  # 1..n, shuffled
    # the ceil(q n)-th smallest of 1..n is ceil(q n) itself (exact in fp32 below 2**24 + 2**24)
    assert float(_quantiles(values.view(1, n, 1), torch.ones(1, n, 1, dtype=torch.bool))[0]) == math.ceil(0.999 * n)


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("q", [0.01, 0.25, 0.5, 0.999])
def test_row_quantiles_are_each_rows_own_nearest_rank_quantile(q, width):
    """Ragged rows (a mask per row), ties, a full row, a row of one token (one value when
    ``width`` is 1), a row of two and an empty row: each row's ``q`` quantile is numpy's
    inverted_cdf percentile of that row's own values, whatever the other rows hold (esmdiv asks for
    0.999 only; the function's contract is any q)."""
    g = torch.Generator().manual_seed(3)
    values = torch.randint(0, 50, (6, 40, width), generator=g).float()  # many ties
    lengths = torch.tensor([40, 17, 1, 0, 33, 2])
    mask = (torch.arange(40)[None, :] < lengths[:, None])[..., None]
    values[~mask.expand_as(values)] = 1e9  # what a row does not hold must never be picked
    got = _row_quantiles(values, mask, mask.sum(1) * width, q)
    for j, n in enumerate(lengths.tolist()):
        own = values[j, :n].flatten().numpy()
        want = np.percentile(own, 100 * q, method="inverted_cdf") if n else 0.0
        assert float(got[j]) == want, (j, q, width)
    if q == 0.999:  # ceil(0.999 * n) = n for n < 1000 values: the row's largest
        assert float(got[2]) == float(values[2, 0].max())


def test_cosine_rows_zero_vectors_and_signs():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [-2.0, 0.0], [0.0, 5.0]])
    cos = cosine_rows(a, b)
    assert cos.dtype == torch.float64
    assert cos.tolist() == pytest.approx([1.0, 0.0, 0.0, -1.0, 1 / math.sqrt(2)], abs=1e-15)


def test_cosine_rows_never_leaves_minus_one_to_one():
    x = torch.randn(256, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1e3
    assert bool((cosine_rows(x, x) <= 1.0).all()) and bool((cosine_rows(x, -x) >= -1.0).all())
    assert cosine_rows(x, x).tolist() == pytest.approx([1.0] * 256, abs=1e-15)


def test_cosine_of_two_vectors():
    assert cosine(torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])) == pytest.approx(24 / 25, abs=1e-15)
    assert cosine(torch.zeros(3), torch.zeros(3)) == 1.0


def test_prediction_summary_by_hand():
    s = prediction_summary([0, 1, 1, 0], [0, 1, 0, 0], [0.1, 0.9, 0.6, 0.2], [0.1, 0.8, 0.4, 0.2])
    assert (s.n, s.agreement, s.disagreements) == (4, 0.75, 1)
    assert s.mean_conf_diff == pytest.approx((0 + 0.1 + 0.2 + 0) / 4)
    assert s.max_conf_diff == pytest.approx(0.2)
    x, y = np.array([0.1, 0.9, 0.6, 0.2]), np.array([0.1, 0.8, 0.4, 0.2])
    dx, dy = x - x.mean(), y - y.mean()
    assert s.pearson == pytest.approx((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)), abs=1e-12)
    assert s.pearson_note is None


@pytest.mark.parametrize(
    "conf_v1, conf_v2, note",
    [
        ([0.3], [0.3], "undefined for fewer than 2 sequences"),
        ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "undefined: a path gave every sequence the same confidence"),
        ([0.1, 0.2, 0.3], [0.4, 0.4, 0.4], "undefined: a path gave every sequence the same confidence"),
        ([0.1, math.nan, 0.3], [0.1, 0.2, 0.4], "undefined: non-finite confidences"),
    ],
)
def test_pearson_undefined_cases_say_why(conf_v1, conf_v2, note):
    labels = [0] * len(conf_v1)
    s = prediction_summary(labels, labels, conf_v1, conf_v2)
    assert s.pearson is None and s.pearson_note == note


def test_prediction_summary_skips_nan_confidence_differences_and_refuses_nothing():
    s = prediction_summary([0, 0, 1], [0, 0, 1], [0.1, math.nan, 0.3], [0.1, 0.2, 0.4])
    assert s.mean_conf_diff == pytest.approx(0.05) and s.max_conf_diff == pytest.approx(0.1)
    with warnings.catch_warnings():  # every difference NaN: NaN, and no "mean of empty slice" warning
        warnings.simplefilter("error")
        nothing = prediction_summary([0], [0], [math.nan], [0.1])
    assert math.isnan(nothing.max_conf_diff) and math.isnan(nothing.mean_conf_diff)
    with pytest.raises(ValueError, match="^no predictions to summarise$"):
        prediction_summary([], [], [], [])


def test_spread_uses_finite_values_only():
    assert spread([1.0, math.nan, 3.0, math.inf, 2.0]) == {"min": 1.0, "mean": 2.0, "max": 3.0}
    empty = spread([math.nan, -math.inf])
    assert all(math.isnan(v) for v in empty.values())


def test_residue_cosines_of_equal_rows_never_pass_one():
    # fp32 cosine_similarity of a row with itself can round to 1 + 4e-7; a cosine above 1 is no cosine.
    # Keep only such rows, so the unclamped min and mean would both be above 1.
    rows = rows_whose_self_cosine_exceeds_one()
    n = len(rows)
    v = torch.zeros(1, n + 2, 320)
    v[0, 1 : n + 1] = rows
    m = compare_embeddings(v, v.clone(), torch.tensor([n + 2])).metrics[0]
    assert m.residue_cosine_min <= 1.0 and m.residue_cosine_mean <= 1.0
    assert m.residue_cosine_mean == pytest.approx(1.0, abs=1e-6)


def _by_hand_distance(path_rows, ref_rows, pooled_path_rows=None):
    """cosine, MAD, rel-L2 and pooled rel-L2 of one sequence's residue rows, written out independently."""
    pooled_path_rows = path_rows if pooled_path_rows is None else pooled_path_rows
    p = [sum(col) / len(pooled_path_rows) for col in zip(*pooled_path_rows)]
    r = [sum(col) / len(ref_rows) for col in zip(*ref_rows)]
    dot = sum(x * y for x, y in zip(p, r))
    cos = dot / (math.sqrt(sum(x * x for x in p)) * math.sqrt(sum(y * y for y in r)))
    mad = sum(abs(x - y) for x, y in zip(p, r)) / len(p)
    diff = math.sqrt(sum((x - y) ** 2 for a, b in zip(path_rows, ref_rows) for x, y in zip(a, b)))
    norm = math.sqrt(sum(y * y for b in ref_rows for y in b))
    pooled = math.sqrt(sum((x - y) ** 2 for x, y in zip(p, r))) / math.sqrt(sum(y * y for y in r))
    return cos, mad, diff / norm, pooled


def test_distances_to_high_precision_by_hand():
    # two sequences: 4 tokens (residue rows 1, 2) and 3 tokens (residue row 1, then padding)
    ref = torch.tensor(
        [
            [[9.0, 9.0], [1.0, 2.0], [3.0, 1.0], [7.0, 7.0]],
            [[9.0, 9.0], [2.0, -1.0], [5.0, 5.0], [0.0, 0.0]],
        ],
        dtype=torch.float64,
    )
    path = ref.clone()
    path[0, 1] = torch.tensor([1.5, 2.0])
    path[1, 1] = torch.tensor([2.0, -0.5])
    path[:, 0] = -4.0  # BOS rows and the EOS / padding rows differ wildly: never read
    path[0, 3] = 100.0
    path[1, 2:] = 50.0
    lengths = torch.tensor([4, 3])
    out = distances_to_high_precision(path, ref, lengths)
    assert len(out) == 2
    expected = [
        _by_hand_distance([[1.5, 2.0], [3.0, 1.0]], [[1.0, 2.0], [3.0, 1.0]]),
        _by_hand_distance([[2.0, -0.5]], [[2.0, -1.0]]),
    ]
    for got, want in zip(out, expected):
        assert (got.cosine, got.mad, got.rel_l2, got.pooled_rel_l2) == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert got.to_dict() == {
            "cosine": got.cosine,
            "mad": got.mad,
            "rel_l2": got.rel_l2,
            "pooled_rel_l2": got.pooled_rel_l2,
        }
    # rel-L2 is a ratio: the same for representations a thousand times smaller (norms below 1)
    small = distances_to_high_precision(path * 1e-3, ref * 1e-3, lengths)
    got_small = [v for d in small for v in (d.rel_l2, d.pooled_rel_l2)]
    assert got_small == pytest.approx([v for w in expected for v in w[2:]], rel=1e-9)
    # the buggy pooling averages the path's EOS row in (never the reference's): the residue rows'
    # rel-L2 is unchanged, the pooled one sees it
    eos = distances_to_high_precision(path, ref, lengths, include_eos=True)[0]
    rows, ref_rows = [[1.5, 2.0], [3.0, 1.0]], [[1.0, 2.0], [3.0, 1.0]]
    cos, mad, _, pooled = _by_hand_distance(rows, ref_rows, rows + [[100.0, 100.0]])
    assert (eos.cosine, eos.mad, eos.rel_l2, eos.pooled_rel_l2) == pytest.approx(
        (cos, mad, expected[0][2], pooled), rel=1e-12
    )
    assert eos.pooled_rel_l2 > 10 * expected[0][3]


def test_a_non_finite_distance_is_nan_in_every_field():
    ref = torch.ones(2, 4, 3, dtype=torch.float64)
    path = ref.clone()
    path[1, 1, 0] = math.inf
    out = distances_to_high_precision(path, ref, torch.tensor([4, 4]))
    assert (out[0].cosine, out[0].mad, out[0].rel_l2, out[0].pooled_rel_l2) == (1.0, 0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in (out[1].cosine, out[1].mad, out[1].rel_l2, out[1].pooled_rel_l2))


def test_report_dicts_hold_every_field():
    metrics = SequenceMetrics(0.5, 0.25, 0.125, True, False, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7)
    assert metrics.to_dict() == {
        "cosine": 0.5,
        "mad": 0.25,
        "max_abs_diff": 0.125,
        "finite_v1": True,
        "finite_v2": False,
        "residue_cosine_min": 0.1,
        "residue_cosine_mean": 0.2,
        "rel_l2": 0.3,
        "p999_abs_diff": 0.4,
        "allclose_1e3": 0.6,
        "allclose_1e2": 0.7,
    }
    summary = prediction_summary([0, 1], [0, 0], [0.2, 0.9], [0.1, 0.4])
    assert summary.to_dict() == {
        "n": 2,
        "agreement": 0.5,
        "disagreements": 1,
        "pearson": pytest.approx(1.0),
        "pearson_note": None,
        "mean_conf_diff": pytest.approx(0.3),
        "max_conf_diff": pytest.approx(0.5),
    }


def test_summaries_reduce_in_fp64_whatever_the_input_dtype():
    # fp32 inputs, fp64 arithmetic: in fp32 the large values would swallow the small one
    assert spread(np.array([1e8, 1.0, -1e8], dtype=np.float32))["mean"] == pytest.approx(1 / 3)
    a, b = np.float32([0.1, 0.2, 0.3]), np.float32([0.7, 0.9, 0.35])
    s = prediction_summary([0, 0, 0], [0, 0, 0], a, b)
    # exactly the fp64 arithmetic on the fp32 values (one process, one formula: no rounding freedom)
    assert s.mean_conf_diff == float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    assert s.max_conf_diff == float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def test_spread_and_pearson_of_too_little_say_so():
    assert set(spread([math.nan])) == {"min", "mean", "max"} and all(math.isnan(v) for v in spread([]).values())
    one = prediction_summary([0], [0], [0.1], [0.2])
    assert one.pearson is None and one.pearson_note == "undefined for fewer than 2 sequences"


def test_mean_pool_keeps_the_lengths_on_the_tensors_device():
    pooled = mean_pool(torch.zeros(5, 3, device="meta"))
    assert pooled.device.type == "meta" and pooled.shape == (3,)


def test_residue_cosines_of_opposite_rows_never_pass_minus_one():
    v = rows_whose_self_cosine_exceeds_one()[None]
    m = compare_embeddings(v, -v, torch.tensor([v.shape[1]])).metrics[0]
    assert m.residue_cosine_min == -1.0 and m.residue_cosine_mean >= -1.0


def test_tiny_representations_are_compared_by_their_direction_not_clamped_away():
    # norms of 1e-12: a cosine eps of 1e-8 or a rel-L2 floor of 1 would swamp them
    v1 = torch.tensor([[[0.0, 0.0], [3e-12, 4e-12], [4e-12, 3e-12], [0.0, 0.0]]])
    v2 = v1.clone()
    v2[0, 1] = torch.tensor([3e-12, 4.5e-12])
    m = compare_embeddings(v1, v2, torch.tensor([4])).metrics[0]
    cos_row1 = (9 + 18) / (5 * math.sqrt(9 + 20.25))
    assert m.residue_cosine_min == pytest.approx(cos_row1, rel=1e-6)
    assert m.residue_cosine_mean == pytest.approx((cos_row1 + 1) / 2, rel=1e-6)
    assert m.rel_l2 == pytest.approx(0.5e-12 / math.sqrt(50e-24), rel=1e-5)


def test_a_difference_exactly_at_the_tolerance_counts_as_close():
    atol = torch.tensor(1e-3, dtype=torch.float32)  # the tolerance as the fp32 comparison sees it
    v1 = torch.zeros(1, 4, 1)
    v2 = v1.clone()
    v2[0, 1:3, 0] = atol
    m = compare_embeddings(v1, v2, torch.tensor([4])).metrics[0]
    assert m.allclose_1e3 == 1.0 and m.allclose_1e2 == 1.0
