"""GPU copies of gallery indexes (index/_gpu.py): device choice, the empty-clone guard, label mapping.

Without faiss-gpu the GPU is simulated by a CPU clone (what ``index_cpu_to_gpu`` would return), which
checks everything but CUDA itself; the ``gpu`` tests run the real thing where faiss-gpu and a GPU exist.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
import numpy as np
import pytest

from vireid.index import FaissGalleryIndex, NumpyGalleryIndex, gpu_count, resolve_index_device
from vireid.index import _gpu as gpu_module

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _simulate_gpus(monkeypatch: pytest.MonkeyPatch, clone: Any) -> list[Any]:
    """Pretend FAISS has one GPU whose clones are made by ``clone``; returns the clones made."""
    made: list[Any] = []

    def to_gpu(resources: Any, device: int, index: Any) -> Any:
        made.append(clone(index))
        return made[-1]

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    return made


@pytest.mark.skipif(gpu_count() > 0, reason="this host has a GPU FAISS")
def test_device_choice_without_a_gpu() -> None:
    assert gpu_count() == 0
    assert resolve_index_device("auto") is None and resolve_index_device("cpu") is None
    with pytest.raises(ValueError, match="faiss-gpu"):
        resolve_index_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_index_device("tpu")


def test_device_choice_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _simulate_gpus(monkeypatch, faiss.clone_index)
    assert resolve_index_device("auto") == 0 and resolve_index_device("cuda") == 0
    assert resolve_index_device("cpu") is None
    with pytest.raises(ValueError, match="GPU 3"):
        resolve_index_device("cuda", gpu_id=3)


def test_an_empty_clone_is_refused_and_search_stays_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What index_cpu_to_all_gpus does with zero GPUs: an empty index and no error."""
    _simulate_gpus(monkeypatch, lambda index: faiss.IndexFlatIP(index.d))
    index = FaissGalleryIndex(DIM)
    index.add(np.arange(50), _vectors(50, 0))
    index.use_gpu(0)
    with caplog.at_level(logging.WARNING):
        _, found = index.search(_vectors(3, 1), 5)
    assert "holds 0 of 50 vectors" in caplog.text and not index.on_gpu
    assert (found >= 0).all()


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IDMap2,IVF4,Flat"])
def test_gpu_copy_answers_unfiltered_searches_with_sql_ids(
    monkeypatch: pytest.MonkeyPatch, factory: str
) -> None:
    made = _simulate_gpus(monkeypatch, faiss.clone_index)
    vectors, ids = _vectors(300, 2), np.arange(1000, 1300)
    index = FaissGalleryIndex.build(DIM, lambda: iter([(ids, vectors)]), factory=factory, nprobe=4)
    index.use_gpu(0)
    reference = NumpyGalleryIndex(DIM)
    reference.add(ids, vectors)
    queries = _vectors(8, 3)
    got = index.search(queries, 6)
    assert index.on_gpu and len(made) == 1
    np.testing.assert_array_equal(got[1], reference.search(queries, 6)[1])
    more = _vectors(20, 4)
    index.add(np.arange(5000, 5020), more)  # kept in step: no new copy
    reference.add(np.arange(5000, 5020), more)
    np.testing.assert_array_equal(index.search(more[:4], 3)[1], reference.search(more[:4], 3)[1])
    assert len(made) == 1
    index.search(queries, 6, allowed_ids=ids[:10])  # filtered: CPU, no new copy
    assert len(made) == 1
    index.remove([1000, 5000])
    reference.remove([1000, 5000])
    np.testing.assert_array_equal(index.search(queries, 6)[1], reference.search(queries, 6)[1])
    # Flat: internal labels moved, copied again; IVF: tombstones, searched on the CPU until rebuilt.
    assert (len(made), index.on_gpu) == ((2, True) if factory == "IDMap2,Flat" else (1, False))


def test_hnsw_stays_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _simulate_gpus(monkeypatch, faiss.clone_index)
    index = FaissGalleryIndex(DIM, factory="IDMap2,HNSW16")
    index.add(np.arange(40), _vectors(40, 5))
    index.use_gpu(0)
    index.search(_vectors(2, 6), 3)
    assert not made and not index.on_gpu
    assert not gpu_module.gpu_supports(index.faiss_index.index)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_count() == 0, reason="needs faiss-gpu and a GPU")
@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IDMap2,IVF64,Flat"])
def test_real_gpu_search_matches_cpu(factory: str) -> None:
    vectors, ids = _vectors(20_000, 7), np.arange(20_000)
    cpu = FaissGalleryIndex.build(DIM, lambda: iter([(ids, vectors)]), factory=factory, nprobe=64)
    gpu = FaissGalleryIndex.build(DIM, lambda: iter([(ids, vectors)]), factory=factory, nprobe=64)
    gpu.use_gpu(0)
    queries = _vectors(64, 8)
    cpu_scores, cpu_ids = cpu.search(queries, 10)
    gpu_scores, gpu_ids = gpu.search(queries, 10)
    assert gpu.on_gpu
    assert np.mean(cpu_ids == gpu_ids) > 0.99
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-4)
