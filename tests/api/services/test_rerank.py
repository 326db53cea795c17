"""The API's numpy CMFP equals training's torch ``cmfp`` (methods.md §A.4.1), and re-ranking uses it."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.api.services._rerank import cmfp_numpy, cmfp_rerank, knn_affinity

torch = pytest.importorskip("torch")


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n_a", "n_b", "d", "k"), [(1, 100, 64, 8), (3, 40, 32, 30), (5, 7, 16, 8), (1, 1, 8, 8)]
)
def test_numpy_cmfp_equals_training_cmfp(n_a: int, n_b: int, d: int, k: int) -> None:
    from vireid.training.methods.salcr._association import cmfp

    rng = np.random.default_rng(n_a * 1000 + n_b)
    a, b = _unit(rng, n_a, d), _unit(rng, n_b, d)
    ref_a, ref_b = cmfp(torch.from_numpy(a), torch.from_numpy(b), k=k)
    got_a, got_b = cmfp_numpy(a, b, k=k)
    np.testing.assert_allclose(got_a, ref_a.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_b, ref_b.numpy(), atol=1e-5)


def test_knn_affinity_equals_training_knn_graph_with_ties() -> None:
    from vireid.training.knn import knn_graph

    sim = np.array([[0.5, 0.5, 0.2, -0.1], [-0.3, -0.2, -0.4, -0.5], [0.9, 0.1, 0.1, 0.1]], np.float32)
    for k in (1, 2, 3, 4):
        np.testing.assert_allclose(
            knn_affinity(sim, k), knn_graph(torch.from_numpy(sim), k).numpy(), atol=1e-7
        )


def test_rerank_scores_are_the_test_time_cmfp_distances() -> None:
    from vireid.training.methods.salcr._postprocess import test_time_cmfp

    rng = np.random.default_rng(3)
    q, g = _unit(rng, 1, 48), _unit(rng, 60, 48)
    scores = cmfp_rerank(q[0], g, k=8)
    distance = test_time_cmfp(q, g, k=8)  # ‖q̃ − g̃‖² = 2 − 2 q̃·g̃
    np.testing.assert_allclose(2.0 - 2.0 * scores, distance[0], atol=1e-5)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one"):
        cmfp_numpy(np.zeros((1, 4), np.float32), np.zeros((0, 4), np.float32), k=2)
    with pytest.raises(ValueError, match="k must be"):
        cmfp_numpy(np.ones((1, 4), np.float32), np.ones((2, 4), np.float32), k=0)
    with pytest.raises(ValueError, match="need"):
        cmfp_rerank(np.ones(4, np.float32), np.ones((2, 5), np.float32), k=2)
