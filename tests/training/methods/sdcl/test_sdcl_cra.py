"""CRA (methods.md §B.4.2) against an independent plain-loop reference of steps 1–3, plus hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vireid.training.methods.sdcl import collaborative_ranking_association, cra_agreement


def _ranking(sims: np.ndarray, k: int) -> list[int]:
    """Indices of the k largest, descending; equal values keep the lower index first (plain loop)."""
    order: list[int] = []
    remaining = list(range(len(sims)))
    for _ in range(k):
        best = remaining[0]
        for j in remaining:
            if sims[j] > sims[best]:
                best = j
        order.append(best)
        remaining.remove(best)
    return order


def _reference(dv, dr, sv, sr, ir_labels, rgb_labels, k, vote):  # type: ignore[no-untyped-def]
    """Steps 1–3 of §B.4.2 written as loops over images (independent of the implementation)."""
    n_v = dv.shape[0]
    ranked = []
    for i in range(n_v):
        nd = _ranking([float(np.dot(dv[i], dr[j])) for j in range(dr.shape[0])], k)
        ns = _ranking([float(np.dot(sv[i], sr[j])) for j in range(sr.shape[0])], k)
        scores = []
        for l_idx in range(k):
            scores.append(sum(1 for m in range(k) if ir_labels[ns[m]] == ir_labels[nd[l_idx]]))
        best = 0
        for l_idx in range(k):
            if scores[l_idx] > scores[best]:
                best = l_idx
        ranked.append(int(ir_labels[nd[best]]))
    num_classes = max(ranked) + 2
    smoothed = []
    for i in range(n_v):
        w = [float(np.dot(dv[i], dv[j]) + np.dot(sv[i], sv[j])) for j in range(n_v)]
        counts = [0] * num_classes
        for j in _ranking(w, vote):
            counts[ranked[j] + 1] += 1
        best = 0
        for c in range(num_classes):
            if counts[c] > counts[best]:
                best = c
        smoothed.append(best - 1)
    train = [s if (s != -1 and rgb_labels[i] != -1) else -1 for i, s in enumerate(smoothed)]
    return np.array(ranked), np.array(smoothed), np.array(train)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_loop_reference_on_random_features_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # small integer vectors: every dot product is exact in float32 whatever the summation order, so the
    # many equal similarities are true ties in both implementations (CRA only uses dot products)
    protos = rng.integers(-1, 3, size=(6, 8)).astype(np.float32)
    dv, dr = protos[rng.integers(0, 6, 30)], protos[rng.integers(0, 6, 25)]
    sv = rng.integers(-1, 2, size=(30, 4)).astype(np.float32)
    sr = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
    ir_labels = rng.integers(-1, 5, 25)
    ir_labels[:5] = np.arange(5)
    rgb_labels = rng.integers(-1, 3, 30)
    out = collaborative_ranking_association(
        torch.from_numpy(dv),
        torch.from_numpy(dr),
        torch.from_numpy(sv),
        torch.from_numpy(sr),
        ir_labels=ir_labels,
        rgb_labels=rgb_labels,
        topk=7,
        vote=5,
        block_rows=8,
    )
    ranked, smoothed, train = _reference(dv, dr, sv, sr, ir_labels, rgb_labels, 7, 5)
    np.testing.assert_array_equal(out.ranked, ranked)
    np.testing.assert_array_equal(out.labels, smoothed)
    np.testing.assert_array_equal(out.train_labels, train)


def test_matches_reference_on_continuous_features() -> None:
    rng = np.random.default_rng(7)
    dv, dr = _unit(rng.normal(size=(40, 16))), _unit(rng.normal(size=(35, 16)))
    sv, sr = _unit(rng.normal(size=(40, 16))), _unit(rng.normal(size=(35, 16)))
    ir_labels = np.repeat(np.arange(7), 5)
    ir_labels[::6] = -1
    rgb_labels = np.zeros(40, dtype=np.int64)
    out = collaborative_ranking_association(
        *(torch.from_numpy(x) for x in (dv, dr, sv, sr)), ir_labels=ir_labels, rgb_labels=rgb_labels, topk=10
    )
    _, smoothed, _ = _reference(dv, dr, sv, sr, ir_labels, rgb_labels, 10, 5)
    np.testing.assert_array_equal(out.labels, smoothed)


def test_shallow_agreement_picks_a_lower_ranked_deep_neighbour() -> None:
    # deep ranks IR 0 (label 5) above IR 1 (label 7); the shallow top-2 are both label 7 -> ŷ = 7
    dv = torch.tensor([[1.0, 0.0]])
    dr = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    sv = torch.tensor([[1.0, 0.0]])
    sr = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2]]), dim=1)
    ir = np.array([5, 7, 7])
    out = collaborative_ranking_association(
        dv, dr, sv, sr, ir_labels=ir, rgb_labels=np.array([0]), topk=2, vote=1
    )
    assert out.ranked.tolist() == [7] and out.labels.tolist() == [7]
    assert out.agreement == pytest.approx(1.0)  # score 2 of K = 2


def test_score_tie_goes_to_the_first_deep_neighbour() -> None:
    # deep order: IR 0 (label 1), IR 1 (label 2); shallow top-2 = one of each -> tie -> label of IR 0
    dv, sv = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    dr = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    sr = F.normalize(torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    out = collaborative_ranking_association(
        dv, dr, sv, sr, ir_labels=np.array([1, 2, 3]), rgb_labels=np.array([0]), topk=2, vote=1
    )
    assert out.ranked.tolist() == [1]


def test_vote_ties_go_to_the_outlier_class_and_outliers_are_dropped() -> None:
    # 4 visible images; ŷ forced via one IR image each: labels [-1, 0, -1, 0] -> vote over all 4 is 2:2
    dv = torch.eye(4)
    dr = torch.eye(4)
    sv, sr = torch.eye(4), torch.eye(4)
    ir = np.array([-1, 0, -1, 0])
    out = collaborative_ranking_association(
        dv, dr, sv, sr, ir_labels=ir, rgb_labels=np.array([0, 0, 0, -1]), topk=1, vote=4
    )
    assert out.ranked.tolist() == [-1, 0, -1, 0]
    assert out.labels.tolist() == [-1, -1, -1, -1]  # 2 outlier votes vs 2 label-0 votes: first max = outlier
    out = collaborative_ranking_association(
        dv, dr, sv, sr, ir_labels=np.array([1, 1, 0, 0]), rgb_labels=np.array([0, 0, 0, -1]), topk=1, vote=4
    )
    assert out.labels.tolist() == [0, 0, 0, 0]  # 2:2 between labels 0 and 1 -> lower label
    assert out.train_labels.tolist() == [0, 0, 0, -1]  # visible DBSCAN outlier dropped (step 3)


def test_bad_inputs_raise() -> None:
    x = torch.eye(3)
    with pytest.raises(ValueError, match="ir_labels"):
        collaborative_ranking_association(x, x, x, x, ir_labels=np.zeros(2), rgb_labels=np.zeros(3))
    with pytest.raises(ValueError, match="same images"):
        collaborative_ranking_association(x, x, x[:2], x, ir_labels=np.zeros(3), rgb_labels=np.zeros(3))
    assert 0.0 <= cra_agreement(x, x, x, x, ir_labels=np.array([0, 1, -1]), topk=2) <= 1.0
