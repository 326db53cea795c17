"""Distributed helpers: ``torchrun`` process groups, record sharding and gathering of features.

Launch with ``torchrun --nproc_per_node N -m vireid.cli train ...`` (or ``python -m torch.distributed.run``).
Backend: NCCL on CUDA, gloo on CPU. Every rank extracts features (gathered over all ranks) and runs the
method's ``refresh``, then keeps rank 0's pseudo labels, association and memories
(:func:`vireid.training.methods.broadcast_from_main`); the model's parameters and buffers are broadcast from
rank 0 at every stage start and epoch end (:func:`broadcast_module`). Each rank trains on its contiguous
shard of every global batch (:func:`vireid.training.methods.shard_batch`). docs/architecture.md
"Multi-GPU and multi-node training".
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import Tensor

from vireid.training.methods._base import DistInfo

__all__ = [
    "all_gather_variable",
    "barrier",
    "broadcast_flag",
    "broadcast_module",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
    "shard_range",
]

logger = logging.getLogger(__name__)


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else CPU; otherwise ``torch.device(name)``.

    Raises:
        ValueError: CUDA requested but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
    return device


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; otherwise run single-process.

    Returns:
        ``(DistInfo, device)``; the device is ``cuda:<LOCAL_RANK>`` under CUDA.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank)
    if world_size <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        logger.info("joined process group: rank %d / %d (%s)", dist.get_rank(), world_size, backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size()), device


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """``dist.barrier()`` when distributed; no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is True on any rank (all ranks must call it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank (no-op when not distributed).

    DDP keeps the parameters equal, but each rank's last forward of an epoch updates its own BatchNorm
    running statistics, and a stage start may re-initialise or reload weights on every rank separately;
    the Trainer calls this after both, so all ranks extract the same features and end with the same model.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` items for ``rank``; the first ``n % world_size`` get one more.

    Concatenating the ranges in rank order covers ``range(n)`` exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_variable(tensor: Tensor, total: int) -> Tensor:
    """Gather per-rank (n_r, D) tensors split by :func:`shard_range` into the full (total, D) tensor.

    Identity when not distributed. Shards are padded to equal length for ``all_gather``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    longest = shard_range(total, 0, world)[1]
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    sizes = [stop - start for start, stop in (shard_range(total, r, world) for r in range(world))]
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)
