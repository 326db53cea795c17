"""Input checks shared by the gallery indexes, the store and the repository."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import numpy as np
import numpy.typing as npt

#: Modalities a gallery item or an index may have (contract 1: the two export graphs).
MODALITIES: Final[tuple[str, ...]] = ("visible", "infrared")
#: Metrics an index may use. "ip" = inner product, "l2" = negated squared Euclidean distance.
METRICS: Final[tuple[str, ...]] = ("ip", "l2")

_MODEL_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")


def check_modality(modality: str) -> str:
    """Return ``modality`` if it is one of :data:`MODALITIES`.

    Raises:
        ValueError: for any other value.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of :data:`METRICS`.

    Raises:
        ValueError: for any other value.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def check_model_version(model_version: str) -> str:
    """Return ``model_version`` if it is safe to use as one path component.

    Letters, digits, ``.``, ``_`` and ``-``; it starts with a letter or digit; at most 128 characters
    (the export manifest uses 16 hex characters).

    Raises:
        ValueError: if it is empty, too long or holds other characters (``/``, ``..``, spaces).
    """
    if not isinstance(model_version, str) or not _MODEL_VERSION_RE.fullmatch(model_version):
        raise ValueError(
            "model_version must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit, "
            f"got {model_version!r}"
        )
    return model_version


def check_sha256(value: str) -> str:
    """Return ``value`` if it is a lowercase hex SHA-256 digest (64 characters).

    Raises:
        ValueError: otherwise.
    """
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {value!r}")
    return value


def as_ids(ids: Any, *, name: str = "ids") -> npt.NDArray[np.int64]:
    """Check gallery ids and return them as a contiguous ``(N,)`` int64 array.

    Args:
        ids: ``(N,)`` integer array or a sequence of Python ints. Ids are SQL primary keys, so they
            are non-negative (FAISS uses -1 for "no result").
        name: argument name used in error messages.

    Raises:
        ValueError: if ``ids`` is not 1-D, not of an integer dtype, or holds a negative id.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if (out < 0).any():
        raise ValueError(f"{name} must be non-negative, got minimum {int(out.min())}")
    return out


def as_vectors(vectors: Any, *, dim: int | None = None, name: str = "vectors") -> npt.NDArray[np.float32]:
    """Check embedding vectors and return them as a C-contiguous ``(N, D)`` float32 array.

    Args:
        vectors: ``(N, D)`` float32 array. Other dtypes are refused rather than silently cast, so a
            float64 or float16 pipeline bug shows up here.
        dim: expected ``D``; ``None`` accepts any ``D >= 1``.
        name: argument name used in error messages.

    Raises:
        ValueError: if ``vectors`` is not a NumPy array, not 2-D, not float32, has the wrong width, or
            holds NaN or infinity.
    """
    if not isinstance(vectors, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray of float32, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {vectors.shape}")
    if vectors.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {vectors.dtype} with shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {vectors.shape}")
    if vectors.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors)).any(axis=1).sum())
        raise ValueError(f"{name} with shape {vectors.shape} has {bad} row(s) with NaN or infinity")
    return np.ascontiguousarray(vectors)


def check_k(k: int) -> int:
    """Return ``k`` if it is a positive int.

    Raises:
        ValueError: if ``k`` is not an int (bools refused) or is smaller than 1.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def ids_digest(ids: npt.ArrayLike) -> str:
    """SHA-256 hex digest of a set of ids, independent of their order.

    The ids are sorted and hashed as little-endian int64 bytes. Index manifests store it to compare an
    index file with the SQL rows without loading either fully.

    Args:
        ids: ``(N,)`` integer ids.
    """
    arr = np.sort(np.asarray(ids, dtype=np.int64))
    return hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()


def rank_results(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], *, k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Order candidates by descending score, then ascending id, and keep the first ``k`` per row.

    This is the tie-break every :class:`GalleryIndex` follows. Slots with id ``-1`` are empty: they
    go last and come back as score ``-inf``, id ``-1``.

    Args:
        scores: ``(Q, C)`` float32 candidate scores.
        ids: ``(Q, C)`` int64 candidate ids, ``-1`` for an empty slot.
        k: number of results per row; rows are padded when ``C < k``.

    Returns:
        ``(scores (Q, k) float32, ids (Q, k) int64)``.
    """
    nq, nc = scores.shape
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    if nc == 0:
        return out_scores, out_ids
    empty = ids < 0
    key_scores = np.where(empty, np.inf, -scores.astype(np.float64))
    key_ids = np.where(empty, np.iinfo(np.int64).max, ids)
    # lexsort sorts by the last key first: -score, then id.
    order = np.lexsort((key_ids, key_scores), axis=1)[:, :k]
    take = min(k, nc)
    out_ids[:, :take] = np.take_along_axis(ids, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(scores, order, axis=1)
    out_scores[out_ids < 0] = -np.inf
    return out_scores, out_ids


def check_new_entries(
    ids: npt.ArrayLike, vectors: npt.NDArray[np.float32], *, dim: int, existing: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Validate ids and vectors about to be added to an index holding ``existing`` ids.

    Raises:
        ValueError: on a bad shape or dtype, a length mismatch, a repeated id or an id already present.
    """
    new_vectors = as_vectors(vectors, dim=dim)
    new_ids = as_ids(ids)
    if new_ids.shape[0] != new_vectors.shape[0]:
        raise ValueError(f"got {new_ids.shape[0]} ids for vectors of shape {new_vectors.shape}")
    uniq, counts = np.unique(new_ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"ids are repeated in the batch: {uniq[counts > 1][:10].tolist()}")
    present = np.intersect1d(new_ids, existing)
    if present.size:
        raise ValueError(f"ids are already in the index: {present[:10].tolist()}")
    return new_ids, new_vectors
