"""DAGL association (methods.md §A.4.1): CMFP graph, re-assignment, and labels vs a loop/NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vireid.training.methods.salcr import associate, cmfp, fused_centroids, reassign_labels

# ----------------------------------------------------------------------------- independent reference


def _ref_knn(sim: np.ndarray, k: int) -> np.ndarray:
    """Per row: keep entries >= the k-th largest, clamp at 0, divide by the row sum."""
    out = np.zeros_like(sim)
    for i in range(sim.shape[0]):
        kth = sorted(sim[i].tolist(), reverse=True)[min(k, sim.shape[1]) - 1]
        for j in range(sim.shape[1]):
            if sim[i, j] >= kth:
                out[i, j] = max(sim[i, j], 0.0)
        out[i] /= out[i].sum()
    return out


def _ref_cmfp(fv: np.ndarray, fr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    graph = np.block(
        [[_ref_knn(fv @ fv.T, k), _ref_knn(fv @ fr.T, k)], [_ref_knn(fr @ fv.T, k), _ref_knn(fr @ fr.T, k)]]
    )
    fused = graph @ np.vstack([fv, fr])
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    return fused[: len(fv)], fused[len(fv) :]


def _ref_centroids(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([x[y == c].mean(axis=0) for c in range(y.max() + 1)])


def _ref_sinkhorn_argmax(x: np.ndarray, cents: np.ndarray, lam: float = 5.0) -> np.ndarray:
    cost = np.array([[float(np.sum((xi - c) ** 2)) for c in cents] for xi in x])
    kernel = np.exp(-lam * cost)
    n, m = kernel.shape
    beta, err, it = np.full(m, 1.0 / m), math.inf, 0
    alpha = np.full(n, 1.0 / n)
    while it < 500 and err >= 0.1:
        alpha = (1.0 / n) / (kernel @ beta)
        new = (1.0 / m) / (kernel.T @ alpha)
        if it % 10 == 0:
            err = float(np.abs(beta / new - 1.0).sum())
        beta, it = new, it + 1
    plan = alpha[:, None] * kernel * beta[None, :]
    return plan.argmax(axis=1)


def _ref_associate(fv, fr, yv, yr, k):  # type: ignore[no-untyped-def]
    kv, kr = yv >= 0, yr >= 0
    gv, gr = _ref_cmfp(fv[kv], fr[kr], k)
    cv, cr = _ref_centroids(gv, yv[kv]), _ref_centroids(gr, yr[kr])
    out = {}
    for name, keep, values in (
        ("cross_v", kv, _ref_sinkhorn_argmax(gv, cr)),
        ("cross_r", kr, _ref_sinkhorn_argmax(gr, cv)),
        ("labels_v", kv, (gv @ cv.T).argmax(1)),
        ("labels_r", kr, (gr @ cr.T).argmax(1)),
    ):
        full = np.full(keep.shape[0], -1)
        full[keep] = values
        out[name] = full
    return out


def _clustered(seed: int, ids: int = 8, per_v: int = 9, per_r: int = 6, dim: int = 32):  # type: ignore[no-untyped-def]
    """Visible / infrared features of shared identities with a modality shift, labels with outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    shift = rng.normal(size=dim) * 0.6
    fv = np.repeat(centres, per_v, axis=0) + rng.normal(size=(ids * per_v, dim)) * 0.5
    fr = np.repeat(centres, per_r, axis=0) + shift + rng.normal(size=(ids * per_r, dim)) * 0.5
    fv /= np.linalg.norm(fv, axis=1, keepdims=True)
    fr /= np.linalg.norm(fr, axis=1, keepdims=True)
    yv, yr = np.repeat(np.arange(ids), per_v), np.repeat(rng.permutation(ids), per_r)  # IR ids in other order
    yv[rng.choice(yv.size, 5, replace=False)] = -1
    yr[rng.choice(yr.size, 3, replace=False)] = -1
    return fv.astype(np.float32), fr.astype(np.float32), yv, yr


# ----------------------------------------------------------------------------- tests


def test_cmfp_graph_rows_sum_to_two_and_match_the_formula() -> None:
    fv, fr, _, _ = _clustered(0)
    k = 5
    graph = np.block(
        [[_ref_knn(fv @ fv.T, k), _ref_knn(fv @ fr.T, k)], [_ref_knn(fr @ fv.T, k), _ref_knn(fr @ fr.T, k)]]
    )
    np.testing.assert_allclose(graph.sum(1), 2.0, rtol=1e-5)
    assert ((graph > 0).sum(1) <= 2 * k).all()
    gv, gr = cmfp(torch.from_numpy(fv), torch.from_numpy(fr), k=k)
    ref_v, ref_r = _ref_cmfp(fv.astype(np.float64), fr.astype(np.float64), k)
    np.testing.assert_allclose(gv.numpy(), ref_v, atol=1e-5)
    np.testing.assert_allclose(gr.numpy(), ref_r, atol=1e-5)
    torch.testing.assert_close(gv.norm(dim=1), torch.ones(len(fv)))


def test_cmfp_by_hand_two_points_each() -> None:
    # k = 1: every point takes its single best match in each block (self in the own block).
    fv = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fr = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    gv, gr = cmfp(fv, fr, k=1)
    # v0: self (1,0) + best r = r1 (0.8) -> (1.8, -0.6); v1: self + r0 (0.8) -> (0.6, 1.8)
    expected_v = torch.nn.functional.normalize(torch.tensor([[1.8, -0.6], [0.6, 1.8]]), dim=1)
    # r0: best v = v1 (0.8) + self -> (0.6, 1.8); r1: best v = v0 (0.8) + self -> (1.8, -0.6)
    expected_r = torch.nn.functional.normalize(torch.tensor([[0.6, 1.8], [1.8, -0.6]]), dim=1)
    torch.testing.assert_close(gv, expected_v)
    torch.testing.assert_close(gr, expected_r)


def test_cmfp_block_size_does_not_change_the_result() -> None:
    fv, fr, _, _ = _clustered(1)
    a = cmfp(torch.from_numpy(fv), torch.from_numpy(fr), k=6, block_size=7)
    b = cmfp(torch.from_numpy(fv), torch.from_numpy(fr), k=6, block_size=4096)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_reassignment_uses_the_dot_product_with_unnormalised_centroids() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    cents = fused_centroids(feats, labels)
    torch.testing.assert_close(cents, torch.tensor([[0.8, 0.4], [0.0, 1.0]]))
    feats2 = torch.tensor([[1.0, 0.0], [0.5, 0.866], [0.0, 1.0]])
    cents2 = fused_centroids(feats2, labels)  # (0.75, 0.433), (0, 1)
    # point 1: 0.375 + 0.375 = 0.75 vs 0.866 -> moves to cluster 1 although it was clustered with 0
    assert reassign_labels(feats2, cents2).tolist() == [0, 1, 1]
    assert fused_centroids(feats2, torch.tensor([0, 0, 2])).shape == (3, 2)  # empty cluster 1 -> zero row
    assert fused_centroids(feats2, torch.tensor([0, 0, 2]))[1].abs().sum() == 0


@pytest.mark.parametrize("seed, k", [(0, 5), (1, 8), (2, 30)])
def test_association_matches_the_reference_algorithm(seed: int, k: int) -> None:
    fv, fr, yv, yr = _clustered(seed)
    result = associate(torch.from_numpy(fv), torch.from_numpy(fr), labels_v=yv, labels_r=yr, k=k, lam=5.0)
    ref = _ref_associate(fv.astype(np.float64), fr.astype(np.float64), yv, yr, k)
    for name in ("cross_v", "cross_r", "labels_v", "labels_r"):
        np.testing.assert_array_equal(getattr(result, name), ref[name], err_msg=name)
    assert (result.cross_v[yv < 0] == -1).all() and (result.labels_r[yr < 0] == -1).all()
    # On well separated identities the cross labels find the true partner cluster for most images.
    label_of_identity = {i // 6: int(yr[i]) for i in range(len(yr)) if yr[i] >= 0}
    truth = np.array([label_of_identity[i // 9] for i in range(len(yv))])
    agree = (result.cross_v[yv >= 0] == truth[yv >= 0]).mean()
    assert agree > 0.8


def test_association_rejects_bad_input() -> None:
    fv, fr, yv, yr = _clustered(0)
    with pytest.raises(ValueError):
        associate(torch.from_numpy(fv), torch.from_numpy(fr), labels_v=yv[:-1], labels_r=yr)
    with pytest.raises(ValueError):
        associate(torch.from_numpy(fv), torch.from_numpy(fr), labels_v=-np.ones_like(yv), labels_r=yr)
    with pytest.raises(ValueError):
        cmfp(torch.from_numpy(fv), torch.from_numpy(fr[:, :3]), k=3)
