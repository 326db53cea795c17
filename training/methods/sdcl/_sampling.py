"""Per-epoch index streams of the camera-aware P×K sampler (methods.md §B.2).

The reference wraps a ``DataLoader(batch_size=P·K, drop_last=True)`` over ``RandomMultipleGallerySampler`` in
an ``IterLoader`` that restarts the loader when a pass runs out. :func:`pk_stream` builds the same stream of
indices up front: passes of :func:`~vireid.training.data.camera_aware_pk_indices`, each cut to a multiple of
the batch size. A pass shorter than one batch (tiny data only; the reference would stop with an empty
loader) is carried over into the next pass instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["pk_stream", "shard_stream"]


def pk_stream(
    labels: np.ndarray,
    cameras: Sequence[Any],
    *,
    num_instances: int,
    batch_size: int,
    num_batches: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``num_batches · batch_size`` dataset indices from consecutive camera-aware P×K passes.

    Args:
        labels: (N,) int64 pseudo labels, −1 never sampled.
        cameras: (N,) camera of each image.
        num_instances: K.
        batch_size: P·K images per batch.
        num_batches: batches needed (the stage's iterations).
        rng: source of every draw.

    Returns:
        (num_batches · batch_size,) int64.

    Raises:
        ValueError: no label ≥ 0, or a non-positive size.
    """
    from vireid.training.data import camera_aware_pk_indices

    if batch_size < 1 or num_batches < 1:
        raise ValueError("batch_size and num_batches must be >= 1")
    if np.asarray(labels).max(initial=-1) < 0:
        raise ValueError("no pseudo label to sample from (all -1)")
    need = num_batches * batch_size
    out: list[int] = []
    carry: list[int] = []
    while len(out) < need:
        one_pass = camera_aware_pk_indices(labels, cameras, num_instances=num_instances, rng=rng)
        if len(one_pass) >= batch_size:
            out.extend(one_pass[: len(one_pass) // batch_size * batch_size])
            continue
        carry.extend(one_pass)
        if len(carry) >= batch_size:
            out.extend(carry[:batch_size])
            carry = carry[batch_size:]
    return np.asarray(out[:need], dtype=np.int64)


def shard_stream(stream: np.ndarray, batch_size: int, *, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous share of every global batch of ``stream`` (rank order = batch order).

    Raises:
        ValueError: the stream is not whole batches or a batch does not split evenly over ranks.
    """
    from vireid.training.methods._base import shard_batch

    if stream.size % batch_size:
        raise ValueError(f"stream of {stream.size} is not a whole number of {batch_size}-batches")
    batches = stream.reshape(-1, batch_size)
    return np.concatenate([shard_batch(b, rank, world_size) for b in batches])
