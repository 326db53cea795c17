"""Test-time CMFP (methods.md §A.6): shape, reference values, the evaluation hook, reported separately."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.training.evaluation import evaluate_rank, negative_dot_distance
from vireid.training.methods.salcr import CMFPPostprocess
from vireid.training.methods.salcr import test_time_cmfp as cmfp_distances


def _knn_rows(sim: np.ndarray, k: int) -> np.ndarray:
    kth = np.sort(sim, axis=1)[:, ::-1][:, k - 1 : k]
    kept = np.where(sim >= kth, np.maximum(sim, 0.0), 0.0)
    return kept / kept.sum(axis=1, keepdims=True)


def _shifted_sets(seed: int, ids: int = 10, per: int = 5, dim: int = 24):  # type: ignore[no-untyped-def]
    """Queries / gallery of the same identities with a strong modality shift (a hard cross-modal case)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    shift = rng.normal(size=dim) * 2.0
    q = np.repeat(centres, per, axis=0) + shift + rng.normal(size=(ids * per, dim)) * 0.9
    g = np.repeat(centres, per, axis=0) + rng.normal(size=(ids * per, dim)) * 0.9
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    pids = np.repeat(np.arange(ids), per)
    return q.astype(np.float32), g.astype(np.float32), pids


def test_matches_the_formula_on_query_union_gallery() -> None:
    q, g, _ = _shifted_sets(0)
    k = 4
    dist = cmfp_distances(q, g, k=k)
    assert dist.shape == (len(q), len(g)) and dist.dtype == np.float32
    qd, gd = q.astype(np.float64), g.astype(np.float64)
    graph = np.block(
        [
            [_knn_rows(qd @ qd.T, k), _knn_rows(qd @ gd.T, k)],
            [_knn_rows(gd @ qd.T, k), _knn_rows(gd @ gd.T, k)],
        ]
    )
    fused = graph @ np.vstack([qd, gd])
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    expected = 2.0 - 2.0 * fused[: len(q)] @ fused[len(q) :].T
    np.testing.assert_allclose(dist, expected, atol=1e-5)
    assert (dist >= 0).all()


def test_postprocess_hook_is_scored_separately_and_helps_on_a_shifted_set() -> None:
    q, g, pids = _shifted_sets(1)
    plain = evaluate_rank(negative_dot_distance(q, g), pids, pids)
    hook = CMFPPostprocess(k=5)
    post = evaluate_rank(hook(q, g), pids, pids)
    assert post.mAP > plain.mAP  # the transductive propagation closes part of the modality gap
    assert repr(hook) == "CMFPPostprocess(k=5)"


@pytest.mark.parametrize("bad", [np.zeros((3,), np.float32), np.zeros((3, 5), np.float32)])
def test_bad_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        cmfp_distances(np.ones((2, 4), np.float32), bad, k=2)
    with pytest.raises(ValueError):
        CMFPPostprocess(k=0)
