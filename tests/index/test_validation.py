"""Input checks and the shared result ordering."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.index import ids_digest
from vireid.index._validation import (
    as_ids,
    as_vectors,
    check_k,
    check_model_version,
    check_sha256,
    rank_results,
)


def test_as_vectors_errors_name_the_shapes() -> None:
    good = np.zeros((3, 4), np.float32)
    assert as_vectors(good, dim=4).flags.c_contiguous
    with pytest.raises(ValueError, match=r"float32, got float64 with shape \(3, 4\)"):
        as_vectors(good.astype(np.float64), dim=4)
    with pytest.raises(ValueError, match=r"shape \(N, 5\), got \(3, 4\)"):
        as_vectors(good, dim=5)
    with pytest.raises(ValueError, match=r"2-D \(N, D\), got shape \(4,\)"):
        as_vectors(good[0], dim=4)
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 row"):
        as_vectors(bad, dim=4)
    with pytest.raises(ValueError, match=r"numpy\.ndarray"):
        as_vectors([[0.0] * 4], dim=4)


def test_as_ids() -> None:
    assert as_ids([3, 1]).dtype == np.int64
    assert as_ids(np.array([], dtype=np.float64)).shape == (0,)
    for bad, message in (([1.5], "integer dtype"), ([True], "integer dtype"), ([-1], "non-negative")):
        with pytest.raises(ValueError, match=message):
            as_ids(bad)
    with pytest.raises(ValueError, match="1-D"):
        as_ids([[1, 2]])


def test_scalar_checks() -> None:
    assert check_k(3) == 3
    for bad in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="positive integer"):
            check_k(bad)  # type: ignore[arg-type]
    assert check_model_version("0123abcd.v2_x-y") == "0123abcd.v2_x-y"
    for bad in ("", "../x", "a/b", ".hidden", "a b", "x" * 129):
        with pytest.raises(ValueError, match="model_version"):
            check_model_version(bad)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        check_sha256("A" * 64)


def test_rank_results_orders_by_score_then_id_and_pads() -> None:
    scores = np.array([[0.5, 0.9, 0.5, -3.4e38]], np.float32)
    ids = np.array([[7, 4, 2, -1]], np.int64)
    out_scores, out_ids = rank_results(scores, ids, k=6)
    assert out_ids.tolist() == [[4, 2, 7, -1, -1, -1]]
    assert out_scores[0, :3].tolist() == pytest.approx([0.9, 0.5, 0.5])
    assert np.isneginf(out_scores[0, 3:]).all()


def test_ids_digest_ignores_order() -> None:
    assert ids_digest([3, 1, 2]) == ids_digest(np.array([1, 2, 3]))
    assert ids_digest([1, 2]) != ids_digest([1, 3])
