"""Training numbers and the reservoir sample of approximate indexes (index/_training.py)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vireid.index._training import reservoir_sample, training_needs


def _stream(n: int, batch: int, dim: int = 2):  # type: ignore[no-untyped-def]
    values = np.arange(n, dtype=np.float32)
    for start in range(0, n, batch):
        chunk = values[start : start + batch]
        yield np.arange(start, start + chunk.size), np.repeat(chunk[:, None], dim, axis=1)


@pytest.mark.parametrize(
    ("factory", "centroids"),
    [
        ("IDMap2,IVF64,Flat", 64),
        ("IDMap2,IVF16,PQ4", 256),
        ("IDMap2,IVF512,PQ4x4fs", 512),
        ("IDMap2,PQ8x4", 16),
    ],
)
def test_training_needs_follow_faiss_per_centroid_numbers(factory: str, centroids: int) -> None:
    index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    needs = training_needs(index, dim=32)
    assert (needs.centroids, needs.min_vectors, needs.sample_size) == (
        centroids,
        39 * centroids,
        256 * centroids,
    )


def test_training_needs_memory_cap_never_goes_below_the_minimum() -> None:
    index = faiss.index_factory(2048, "IDMap2,IVF4096,Flat", faiss.METRIC_INNER_PRODUCT)
    capped = training_needs(index, dim=2048, max_train_bytes=2 << 30)
    assert capped.sample_size == (2 << 30) // (4 * 2048)  # 262,144 < 256 x 4096
    assert training_needs(index, dim=2048, max_train_bytes=1 << 20).sample_size == 39 * 4096


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IDMap2,HNSW32"])
def test_factories_without_training_need_nothing(factory: str) -> None:
    needs = training_needs(faiss.index_factory(8, factory), dim=8)
    assert not needs.trainable and needs.min_vectors == 0


def test_reservoir_keeps_everything_from_a_short_stream() -> None:
    sample, seen = reservoir_sample(_stream(30, 7), 50)
    assert seen == 30 and sorted(sample[:, 0].tolist()) == list(range(30))


def test_reservoir_sample_is_uniform_over_the_stream() -> None:
    """Each of 1,000 items lands in a 100-sample with probability 0.1, wherever it is in the stream."""
    hits = np.zeros(1000)
    for seed in range(400):
        sample, seen = reservoir_sample(_stream(1000, 64), 100, seed=seed)
        assert seen == 1000 and sample.shape == (100, 2) and np.unique(sample[:, 0]).size == 100
        hits[sample[:, 0].astype(int)] += 1
    rate = hits / 400
    # Each rate is Binomial(400, 0.1)/400 (sd 0.015); the first and last tenths of the stream agree.
    assert abs(rate.mean() - 0.1) < 1e-9
    assert abs(rate[:100].mean() - 0.1) < 0.01 and abs(rate[-100:].mean() - 0.1) < 0.01
    assert rate.min() > 0.02 and rate.max() < 0.2


def test_reservoir_is_deterministic_per_seed_and_checks_input() -> None:
    a, _ = reservoir_sample(_stream(500, 33), 40, seed=3)
    b, _ = reservoir_sample(_stream(500, 33), 40, seed=3)
    assert np.array_equal(a, b)
    empty, seen = reservoir_sample(iter([]), 5)
    assert empty.shape == (0, 0) and seen == 0
    with pytest.raises(ValueError, match="size"):
        reservoir_sample(_stream(5, 5), 0)
    mixed = iter([(np.arange(2), np.zeros((2, 3), np.float32)), (np.arange(2), np.zeros((2, 4), np.float32))])
    with pytest.raises(ValueError, match="width"):
        reservoir_sample(mixed, 10)
