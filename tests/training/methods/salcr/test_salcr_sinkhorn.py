"""Sinkhorn OT of SALCR's DAGL (methods.md §A.4.1 step 3): marginals, stopping rule, iteration cap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vireid.training.methods.salcr import beta_change, ot_cross_labels, sinkhorn


def _loop_sinkhorn(
    cost: np.ndarray, lam: float, tol: float, max_iter: int, every: int
) -> tuple[np.ndarray, int]:
    """Straightforward reference: the spec's loop, one scalar update at a time."""
    n, m = cost.shape
    kernel = np.exp(-lam * cost)
    beta = [1.0 / m] * m
    alpha = [1.0 / n] * n
    err, it = math.inf, 0
    while it < max_iter and err >= tol:
        alpha = [(1.0 / n) / sum(kernel[i, k] * beta[k] for k in range(m)) for i in range(n)]
        new = [(1.0 / m) / sum(kernel[i, k] * alpha[i] for i in range(n)) for k in range(m)]
        if it % every == 0:
            err = sum(abs(beta[k] / new[k] - 1.0) for k in range(m))
        beta = new
        it += 1
    plan = np.array([[alpha[i] * kernel[i, k] * beta[k] for k in range(m)] for i in range(n)])
    return plan, it


def test_plan_has_uniform_marginals_when_converged() -> None:
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(12, 4, generator=gen) * 2
    result = sinkhorn(cost, lam=5.0, tol=1e-10, max_iter=5000, check_every=1)
    plan = result.plan
    assert plan.dtype == torch.float64 and plan.shape == (12, 4)
    torch.testing.assert_close(
        plan.sum(1), torch.full((12,), 1 / 12, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )
    torch.testing.assert_close(
        plan.sum(0), torch.full((4,), 1 / 4, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )
    assert result.error < 1e-10


def test_column_marginals_exact_after_every_iteration() -> None:
    # beta is updated last, so the column sums are exactly b whatever the stopping point.
    cost = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    result = sinkhorn(cost, lam=5.0, tol=0.1, max_iter=3)
    torch.testing.assert_close(result.plan.sum(0), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_stopping_rule_checks_every_tenth_iteration() -> None:
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(9, 5, generator=gen) * 4
    for tol in (0.5, 0.1, 1e-3):
        result = sinkhorn(cost, lam=5.0, tol=tol, max_iter=500, check_every=10)
        plan, iters = _loop_sinkhorn(cost.numpy().astype(np.float64), 5.0, tol, 500, 10)
        # The loop stops only right after a check iteration: 1, 11, 21, ... iterations.
        assert result.iterations == iters and (result.iterations - 1) % 10 == 0
        np.testing.assert_allclose(result.plan.numpy(), plan, rtol=1e-9, atol=1e-15)
        assert result.error < tol


def test_first_check_at_iteration_zero_can_stop_immediately() -> None:
    # A cost constant per row: beta never moves, so the check at iteration 0 already gives err = 0.
    cost = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
    result = sinkhorn(cost, lam=5.0)
    assert result.iterations == 1 and result.error == pytest.approx(0.0)
    torch.testing.assert_close(result.plan, torch.full((3, 2), 1 / 6, dtype=torch.float64))


def test_iteration_cap() -> None:
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(20, 6, generator=gen) * 4
    result = sinkhorn(cost, lam=5.0, tol=1e-300, max_iter=37, check_every=10)
    assert result.iterations == 37


def test_cross_labels_follow_the_plan_not_the_nearest_centroid() -> None:
    # Three points all nearest to centroid 0; uniform column marginals force a spread over both clusters.
    feats = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.9, 0.44], [0.8, 0.6]])
    cents = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels, result = ot_cross_labels(feats, cents, lam=5.0, tol=1e-6, max_iter=1000, check_every=1)
    nearest = torch.cdist(feats, cents).argmin(1)
    assert nearest.tolist() == [0, 0, 0, 0]
    assert labels.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(result.plan.sum(0), torch.full((2,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    "cost, kwargs",
    [
        (torch.zeros(0, 3), {}),
        (torch.zeros(3), {}),
        (torch.tensor([[float("nan"), 1.0]]), {}),
        (torch.ones(2, 2), {"lam": 0.0}),
        (torch.ones(2, 2), {"check_every": 0}),
    ],
)
def test_bad_input_raises(cost: torch.Tensor, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        sinkhorn(cost, **kwargs)


def test_stopping_error_skips_nan_terms_like_the_official_nansum() -> None:
    nan = float("nan")
    beta = torch.tensor([0.5, 0.0, 0.25], dtype=torch.float64)
    new = torch.tensor([0.25, 0.0, 0.25], dtype=torch.float64)  # 0/0 in the middle
    assert beta_change(beta, new) == pytest.approx(float(np.nansum(np.abs(beta.numpy() / new.numpy() - 1))))
    assert beta_change(beta, new) == pytest.approx(1.0)  # a plain sum would be NaN and end the loop
    all_nan = torch.tensor([nan, nan], dtype=torch.float64)
    assert beta_change(all_nan, all_nan) == 0.0  # np.nansum of all-NaN is 0: the loop stops
