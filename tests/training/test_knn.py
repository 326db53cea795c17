"""Hand-checked tests for vireid.training.knn."""

from __future__ import annotations

import pytest
import torch

from vireid.training.knn import knn_graph, rel_max_mask, topk_mask


def test_knn_graph_by_hand() -> None:
    s = torch.tensor([[1.0, 0.5, 0.2, -0.1], [0.3, 1.0, 0.3, 0.1], [-0.5, -0.2, -0.1, -0.3]])
    got = knn_graph(s, 2)
    expected = torch.tensor(
        [
            [1.0 / 1.5, 0.5 / 1.5, 0.0, 0.0],  # keep 1.0 and 0.5
            [0.3 / 1.6, 1.0 / 1.6, 0.3 / 1.6, 0.0],  # tie at the 2nd value: both 0.3 kept (>=)
            [0.0, 0.0, 0.0, 0.0],  # kept entries are negative -> clamped -> all-zero row, no NaN
        ]
    )
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(knn_graph(s[:2], 4).sum(dim=1), torch.ones(2))


def test_knn_graph_self_included_in_homogeneous_block() -> None:
    f = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    a = knn_graph(f @ f.T, 3)
    assert bool((a.diagonal() > 0).all())
    assert bool(((a > 0).sum(dim=1) <= 3).all())


def test_topk_mask_strict() -> None:
    p = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.2, 0.2, 0.2, 0.4]])
    torch.testing.assert_close(
        topk_mask(p, 2), torch.tensor([[True, False, True, False], [False] * 3 + [True]])
    )
    # row 2: the 3rd largest value ties the 2nd -> only the strictly larger entry survives
    assert topk_mask(p, 1).sum(dim=1).tolist() == [1, 1]
    assert topk_mask(p, 3).tolist()[0] == [True, False, True, False]  # ties at the 4th value excluded


def test_rel_max_mask() -> None:
    s = torch.tensor([[1.0, 0.95, 0.9, 0.2], [0.5, 0.46, 0.44, 0.0]])
    assert rel_max_mask(s).tolist() == [[True, True, False, False], [True, True, False, False]]
    assert rel_max_mask(s, ratio=0.5).tolist() == [[True, True, True, False], [True, True, True, False]]


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [(knn_graph, {"k": 0}), (knn_graph, {"k": 5}), (topk_mask, {"k": 4}), (rel_max_mask, {"ratio": 0.0})],
)
def test_errors(fn, kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        fn(torch.zeros(2, 4), **kwargs)
    with pytest.raises(ValueError):
        fn(torch.zeros(4), **kwargs)
