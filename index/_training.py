"""When and on what an approximate FAISS index is trained: sample sizes, reservoir sampling, build plans.

FAISS's k-means (``faiss.Clustering``) warns below 39 training points per centroid and subsamples above
256 per centroid (``min_points_per_centroid`` / ``max_points_per_centroid`` of ``ClusteringParameters``);
the FAISS wiki ("Guidelines to choose an index") recommends between 30·K and 256·K training vectors
for K centroids. vireid follows those numbers:

* an index whose factory needs training stays **exact** (``IDMap2,Flat``) until the gallery holds
  ``39·K`` vectors, where ``K`` is the largest centroid count of the factory (IVF lists, or the
  ``2^nbits`` codewords of each product-quantiser sub-space);
* it is then trained on a uniform **reservoir sample** of every stored vector (Vitter's Algorithm R
  over the SQL embedding stream), of ``256·K`` vectors, capped at :data:`DEFAULT_TRAIN_BYTES` of
  float32 memory but never below ``39·K``;
* it is trained again (and rebuilt) when the gallery has grown to :data:`DEFAULT_RETRAIN_FACTOR` times
  the size it was trained at, so that the centroids keep following the data as cameras are added.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_RETRAIN_FACTOR",
    "DEFAULT_TRAIN_BYTES",
    "EXACT_FACTORY",
    "MAX_POINTS_PER_CENTROID",
    "MIN_POINTS_PER_CENTROID",
    "TrainingNeeds",
    "reservoir_sample",
    "training_needs",
]

#: Factory of the exact stage an untrained index starts in (and the service's default).
EXACT_FACTORY: Final = "IDMap2,Flat"
#: FAISS k-means warns below this many training points per centroid (``ClusteringParameters``).
MIN_POINTS_PER_CENTROID: Final = 39
#: FAISS k-means subsamples above this many training points per centroid (``ClusteringParameters``).
MAX_POINTS_PER_CENTROID: Final = 256
#: Memory cap of the training sample (float32 bytes): 2 GiB, e.g. 262,144 vectors of dim 2048.
DEFAULT_TRAIN_BYTES: Final = 2 << 30
#: A trained index is trained again once the gallery holds this many times the vectors it was trained on.
DEFAULT_RETRAIN_FACTOR: Final = 4.0


class TrainingNeeds:
    """How many vectors a factory needs before and for training.

    Attributes:
        centroids: ``K``, the largest centroid count of the index (IVF lists or PQ codewords); 0 when
            the index needs no training.
        min_vectors: vectors stored before the index is trained (``39·K``); 0 when no training.
        sample_size: vectors in the training sample (``256·K`` capped by memory, at least ``39·K``).
    """

    __slots__ = ("centroids", "min_vectors", "sample_size")

    def __init__(self, centroids: int, min_vectors: int, sample_size: int) -> None:
        self.centroids, self.min_vectors, self.sample_size = centroids, min_vectors, sample_size

    @property
    def trainable(self) -> bool:
        """True when the factory needs training at all."""
        return self.centroids > 0

    def __repr__(self) -> str:
        return (
            f"TrainingNeeds(centroids={self.centroids}, min_vectors={self.min_vectors}, "
            f"sample_size={self.sample_size})"
        )


def _centroid_counts(index: Any) -> list[int]:
    """Centroid counts of the trainable parts of a FAISS index (IVF lists, PQ codewords)."""
    counts: list[int] = []
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        counts.append(int(ivf.nlist))
        inner = faiss.downcast_index(ivf)
    else:
        inner = faiss.downcast_index(index.index if hasattr(index, "id_map") else index)
    for name in ("pq", "rq"):
        quantizer = getattr(inner, name, None)
        if quantizer is not None and hasattr(quantizer, "nbits"):
            nbits = quantizer.nbits
            nbits = (
                max(int(nbits.at(i)) for i in range(nbits.size())) if hasattr(nbits, "size") else int(nbits)
            )
            counts.append(1 << nbits)
    if not counts and not index.is_trained:
        counts.append(1)  # e.g. a scalar quantiser: trained on ranges, any sample size will do
    return counts


def training_needs(index: Any, *, dim: int, max_train_bytes: int = DEFAULT_TRAIN_BYTES) -> TrainingNeeds:
    """The training numbers of an untrained FAISS index built by ``faiss.index_factory``.

    Args:
        index: a freshly built FAISS index (``is_trained`` tells whether it needs training).
        dim: embedding width ``D``.
        max_train_bytes: memory cap of the float32 training sample (bytes).

    Returns:
        :class:`TrainingNeeds`; ``centroids == 0`` when the index needs no training (flat, HNSW).

    Raises:
        ValueError: if ``max_train_bytes`` < 1.
    """
    if max_train_bytes < 1:
        raise ValueError(f"max_train_bytes must be >= 1, got {max_train_bytes}")
    if index.is_trained:
        return TrainingNeeds(0, 0, 0)
    k = max(_centroid_counts(index))
    minimum = MIN_POINTS_PER_CENTROID * k
    by_memory = max_train_bytes // (4 * dim)
    return TrainingNeeds(k, minimum, max(minimum, min(MAX_POINTS_PER_CENTROID * k, by_memory)))


def reservoir_sample(
    batches: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
    size: int,
    *,
    seed: int = 0,
) -> tuple[npt.NDArray[np.float32], int]:
    """A uniform sample of ``size`` vectors from a stream of batches (Vitter's Algorithm R).

    Every vector of the stream ends up in the sample with the same probability ``size / n`` while only
    the sample is held in memory; the result depends only on ``seed`` and the stream's order.

    Args:
        batches: ``(ids (n,) int64, vectors (n, D) float32)`` batches, e.g.
            :meth:`vireid.index.GalleryRepository.iter_embeddings`.
        size: sample size (>= 1).
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``(sample (min(size, n), D) float32, n)``: the sample and the number of vectors seen. With an
        empty stream the sample has shape ``(0, 0)``.

    Raises:
        ValueError: if ``size`` < 1 or batches have different widths.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    sample: npt.NDArray[np.float32] | None = None
    seen = 0
    for _, vectors in batches:
        vectors = np.asarray(vectors, dtype=np.float32)
        n = vectors.shape[0]
        if n == 0:
            continue
        if sample is None:
            sample = np.empty((size, vectors.shape[1]), dtype=np.float32)
        elif vectors.shape[1] != sample.shape[1]:
            raise ValueError(f"batch width {vectors.shape[1]} differs from {sample.shape[1]}")
        fill = max(0, min(n, size - seen))
        sample[seen : seen + fill] = vectors[:fill]
        if fill < n:
            # Item t (0-based position in the stream) replaces slot j ~ U{0..t} when j < size.
            positions = np.arange(seen + fill, seen + n, dtype=np.int64)
            slots = rng.integers(0, positions + 1)
            keep = slots < size
            rows, slots = np.nonzero(keep)[0] + fill, slots[keep]
            # In stream order a later item overwrites an earlier one in the same slot: keep the last.
            last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
            sample[slots[last]] = vectors[rows[last]]
        seen += n
    if sample is None:
        return np.zeros((0, 0), dtype=np.float32), 0
    return sample[: min(size, seen)].copy(), seen
