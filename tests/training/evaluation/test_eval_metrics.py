"""Metric functions against an independent loop re-implementation of the standard procedures (§C.1/§C.2)."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.training.evaluation import (
    RankResult,
    evaluate_llcm,
    evaluate_rank,
    evaluate_regdb,
    evaluate_sysu,
    mean_results,
    ranked_gallery,
)

TOL = 1e-6


# --------------------------------------------------------------------------------------------------
# Loop-style reference, written step by step from methods.md §C.1 / §C.2.
# --------------------------------------------------------------------------------------------------
def _reference(distmat, q_pids, g_pids, removed, *, dedup, max_rank):
    """removed(q_index, ranked_gallery_indices) -> bool array of the items dropped for that query."""
    n_q = distmat.shape[0]
    order_all = np.argsort(distmat, axis=1)
    cmc_rows, aps, inps = [], [], []
    n_valid = 0
    for i in range(n_q):
        order = order_all[i]
        kept = order[~removed(i, order)]
        kept_pids = g_pids[kept]
        raw = (kept_pids == q_pids[i]).astype(np.int64)
        if dedup:
            seen, unique_pids = set(), []
            for pid in kept_pids:
                if pid not in seen:
                    seen.add(pid)
                    unique_pids.append(pid)
            row = np.cumsum(np.asarray(unique_pids) == q_pids[i])
            row = np.concatenate([row, np.full(max(0, max_rank - row.size), row[-1] if row.size else 0)])
            cmc_rows.append(row[:max_rank])
        if raw.sum() == 0:
            continue
        n_valid += 1
        if not dedup:
            row = np.cumsum(raw)
            row[row > 1] = 1
            row = np.concatenate([row, np.full(max(0, max_rank - row.size), row[-1])])
            cmc_rows.append(row[:max_rank])
        num_rel = raw.sum()
        hits = 0
        precision_sum = 0.0
        last = -1
        for k in range(raw.size):
            if raw[k]:
                hits += 1
                precision_sum += hits / (k + 1.0)
                last = k
        aps.append(precision_sum / num_rel)
        inps.append(num_rel / (last + 1.0))
    cmc = np.sum(np.asarray(cmc_rows, dtype=np.float64), axis=0) / n_valid
    return cmc, float(np.mean(aps)), float(np.mean(inps)), n_valid


def _ref_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20):
    def removed(i, order):
        return (q_cams[i] == 3) & (g_cams[order] == 2)

    return _reference(distmat, q_pids, g_pids, removed, dedup=True, max_rank=max_rank)


def _ref_regdb(distmat, q_pids, g_pids, max_rank=20):
    return _reference(
        distmat, q_pids, g_pids, lambda i, order: np.zeros(order.size, bool), dedup=False, max_rank=max_rank
    )


def _ref_llcm(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20):
    def removed(i, order):
        return (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])

    return _reference(distmat, q_pids, g_pids, removed, dedup=True, max_rank=max_rank)


def _assert_same(result: RankResult, ref) -> None:
    cmc, m_ap, m_inp, n_valid = ref
    np.testing.assert_allclose(result.cmc, cmc, atol=TOL, rtol=0)
    assert abs(result.mAP - m_ap) < TOL
    assert abs(result.mINP - m_inp) < TOL
    assert result.num_valid_queries == n_valid


def _random_sysu(rng, n_q=60, n_g=90, n_ids=25):
    q_pids = rng.integers(0, n_ids, n_q)
    g_pids = rng.integers(0, n_ids, n_g)
    q_cams = rng.choice([3, 6], n_q)
    g_cams = rng.choice([1, 2, 4, 5], n_g)
    distmat = rng.standard_normal((n_q, n_g))
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(8))
def test_sysu_matches_reference_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    distmat, q_pids, g_pids, q_cams, g_cams = _random_sysu(rng)
    result = evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
    _assert_same(result, _ref_sysu(distmat, q_pids, g_pids, q_cams, g_cams))


@pytest.mark.parametrize("seed", range(8))
def test_regdb_matches_reference_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 70
    pids = np.repeat(np.arange(n // 5), 5)
    distmat = rng.random((n, n)).astype(np.float32)
    g_pids = rng.permutation(pids)
    _assert_same(evaluate_regdb(distmat, pids, g_pids), _ref_regdb(distmat, pids, g_pids))


@pytest.mark.parametrize("seed", range(4))
def test_llcm_matches_reference_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    q_pids, g_pids = rng.integers(0, 15, 50), rng.integers(0, 15, 80)
    q_cams, g_cams = rng.integers(1, 4, 50), rng.integers(1, 4, 80)
    distmat = rng.standard_normal((50, 80))
    _assert_same(
        evaluate_llcm(distmat, q_pids, g_pids, q_cams, g_cams),
        _ref_llcm(distmat, q_pids, g_pids, q_cams, g_cams),
    )


def test_chunking_and_realistic_sysu_sizes_agree_with_reference() -> None:
    """Real-protocol proportions (96 ids, 4 gallery cams, ties impossible), several chunk sizes."""
    rng = np.random.default_rng(7)
    g_pids = np.repeat(np.arange(96), 3)
    g_cams = np.tile([1, 2, 4], 96)
    q_pids = np.repeat(np.arange(96), 4)
    q_cams = np.tile([3, 3, 6, 6], 96)
    feats_q = rng.standard_normal((q_pids.size, 16))
    feats_g = rng.standard_normal((g_pids.size, 16))
    distmat = -(feats_q @ feats_g.T)
    ref = _ref_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
    exclude = (q_cams == 3)[:, None] & (g_cams == 2)[None, :]
    for chunk in (1, 7, 100, 10_000):
        result = evaluate_rank(distmat, q_pids, g_pids, exclude=exclude, dedup_cmc=True, chunk_size=chunk)
        _assert_same(result, ref)


def test_gallery_smaller_than_max_rank_keeps_prefix_and_saturates() -> None:
    rng = np.random.default_rng(3)
    distmat = rng.random((6, 5))
    q_pids = np.array([0, 1, 2, 0, 1, 9])
    g_pids = np.array([0, 1, 2, 3, 4])
    result = evaluate_regdb(distmat, q_pids, g_pids, max_rank=20)
    assert result.cmc.shape == (20,)
    assert np.all(result.cmc[4:] == 1.0)  # every valid query has its match inside the 5-item gallery
    _assert_same(result, _ref_regdb(distmat, q_pids, g_pids, max_rank=20))


# --------------------------------------------------------------------------------------------------
# Hand-computed 3-query cases.
# --------------------------------------------------------------------------------------------------
def test_hand_case_dedup_camera_filter_and_query_without_match() -> None:
    # gallery index:       0    1    2    3    4
    g_pids = np.array([7, 7, 8, 9, 8])
    g_cams = np.array([2, 1, 1, 4, 5])
    # distances chosen so every query ranks the gallery 0, 1, 2, 3, 4
    distmat = np.tile(np.arange(5, dtype=float), (3, 1))
    q_pids = np.array([8, 8, 5])  # query 2 has no match at all
    q_cams = np.array([3, 6, 6])
    result = evaluate_sysu(distmat, q_pids, g_pids, q_camids=q_cams, g_camids=g_cams, max_rank=4)
    # q0 (cam3): cam-2 item 0 dropped -> pids [7, 8, 9, 8]; dedup [7, 8, 9] -> match at rank 2.
    #   AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5
    # q1 (cam6): pids [7, 7, 8, 9, 8]; dedup [7, 8, 9] -> match at rank 2 (standard CMC would say rank 3).
    #   AP = (1/3 + 2/5) / 2 = 11/30; INP = 2 / 5
    # q2: no match -> invalid: zeros in the CMC sum, skipped by mAP/mINP, not counted in the divisor.
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0, 1.0])
    assert result.num_valid_queries == 2
    assert result.mAP == pytest.approx((0.5 + 11 / 30) / 2)
    assert result.mINP == pytest.approx((0.5 + 0.4) / 2)

    standard = evaluate_rank(
        distmat, q_pids, g_pids, max_rank=4, exclude=(q_cams == 3)[:, None] & (g_cams == 2)[None, :]
    )
    np.testing.assert_allclose(standard.cmc, [0.0, 0.5, 1.0, 1.0])  # q1's match is 3rd without dedup
    assert standard.mAP == pytest.approx(result.mAP)


def test_hand_case_cam3_filter_removes_cam2_even_for_true_matches() -> None:
    g_pids = np.array([1, 1, 2])
    g_cams = np.array([2, 4, 1])
    distmat = np.array([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    q_pids = np.array([1, 1, 2])
    q_cams = np.array([3, 6, 3])
    result = evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    # q0 cam3: cam-2 match removed, ranking [2(pid2), 1(pid1)] -> rank 2, AP 1/2, INP 1/2
    # q1 cam6: ranking [0, 2, 1] -> pid 1 first: rank 1; AP = (1 + 2/3) / 2 = 5/6; INP = 2/3
    # q2 cam3: ranking [2, 1] -> rank 1, AP 1, INP 1
    np.testing.assert_allclose(result.cmc, [2 / 3, 1.0, 1.0])
    assert result.mAP == pytest.approx((0.5 + 5 / 6 + 1.0) / 3)
    assert result.mINP == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


def test_regdb_standard_cmc_hand_case() -> None:
    g_pids = np.array([3, 4, 4, 5])
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4]])
    q_pids = np.array([4, 5, 9])
    result = evaluate_regdb(distmat, q_pids, g_pids, max_rank=4)
    # q0: [3, 4, 4, 5] -> first match rank 2; AP = (1/2 + 2/3)/2 = 7/12; INP = 2/3
    # q1: order [1, 3, 2, 0] -> pids [4, 5, 4, 3] -> rank 2; AP = 1/2; INP = 1/2
    # q2: no match -> skipped everywhere
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0, 1.0])
    assert result.mAP == pytest.approx((7 / 12 + 0.5) / 2)
    assert result.mINP == pytest.approx((2 / 3 + 0.5) / 2)
    assert result.num_valid_queries == 2


def test_no_valid_query_and_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="no query identity"):
        evaluate_regdb(np.zeros((2, 2)), np.array([1, 2]), np.array([3, 4]))
    with pytest.raises(ValueError, match="does not match"):
        evaluate_regdb(np.zeros((2, 3)), np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_regdb(np.array([[np.nan]]), np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="2-D"):
        evaluate_regdb(np.zeros(3), np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_regdb(np.zeros((1, 1)), np.array([1]), np.array([1]), max_rank=0)


def test_rank_result_properties_dict_roundtrip_and_mean() -> None:
    a = RankResult(cmc=np.linspace(0.1, 1.0, 20), mAP=0.4, mINP=0.2, num_valid_queries=10)
    b = RankResult(cmc=np.linspace(0.3, 1.0, 20), mAP=0.6, mINP=0.4, num_valid_queries=12)
    assert a.r1 == pytest.approx(0.1) and a.r20 == pytest.approx(1.0)
    assert a.r5 == pytest.approx(a.cmc[4]) and a.r10 == pytest.approx(a.cmc[9])
    back = RankResult.from_dict(a.to_dict())
    np.testing.assert_array_equal(back.cmc, a.cmc)
    assert (back.mAP, back.mINP, back.num_valid_queries) == (0.4, 0.2, 10)
    mean = mean_results([a, b])
    assert mean.mAP == pytest.approx(0.5) and mean.mINP == pytest.approx(0.3)
    np.testing.assert_allclose(mean.cmc, (a.cmc + b.cmc) / 2)
    assert mean.num_valid_queries == 22
    with pytest.raises(ValueError):
        mean_results([])
    with pytest.raises(ValueError, match="outside"):
        _ = RankResult(cmc=[0.5, 1.0], mAP=0.1, mINP=0.1, num_valid_queries=1).r5
    with pytest.raises(ValueError, match="read-only"):
        a.cmc[0] = 1.0


def test_ranked_gallery_applies_exclusion() -> None:
    distmat = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]])
    exclude = np.array([[False, True, False], [False, False, False]])
    top = ranked_gallery(distmat, top_k=3, exclude=exclude)
    np.testing.assert_array_equal(top, [[2, 0, -1], [0, 1, 2]])
