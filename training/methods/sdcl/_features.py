"""Per-epoch SDCL feature extraction and activation checkpointing.

SDCL needs the **raw** flip-averaged ``f_d`` and ``f_s`` (centroids are means of raw BN features, §B.3
item 3; instance memories start from their normalised rows), which the engine's extractor (normalised
``[f_d; f_s]``) cannot give back, so the method extracts them itself with the Contract-2 eval transform.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, Dataset

from vireid.training._precision import autocast as precision_autocast

__all__ = ["RawFeatures", "enable_activation_checkpointing", "extract_raw_features"]

logger = logging.getLogger(__name__)

RawFeatures = tuple[Tensor, Tensor]
"""(f_d, f_s): each (N, D) float32 CPU, flip-averaged, not normalised."""


class _Images(Dataset[Tensor]):
    def __init__(self, paths: Sequence[Path], transform: Any) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        from vireid.training.data import load_image

        return cast(Tensor, self.transform(load_image(self.paths[index])))


def _eval_transform(model: nn.Module) -> Any:
    from vireid.training.data import eval_transform

    cfg = cast(dict[str, Any], model.default_cfg)
    _, height, width = cfg["input_size"]
    return eval_transform(
        height=height, width=width, mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"]
    )


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    per = -(-n // world)
    return min(rank * per, n), min((rank + 1) * per, n)


def _gather_rows(local: Tensor, total: int, device: torch.device) -> Tensor:
    """Concatenate per-rank contiguous shards (padded to equal length) in rank order; identity alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    world = dist.get_world_size()
    per = -(-total // world)
    padded = torch.zeros(per, local.shape[1], dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total].cpu()


def extract_raw_features(
    model: nn.Module,
    records: Sequence[Any],
    *,
    modality: str,
    batch_size: int,
    device: torch.device,
    flip: bool = True,
    bf16: bool = False,
    num_workers: int = 0,
) -> RawFeatures:
    """Raw ``(f_d, f_s)`` of ``records`` (methods.md §B.2 cluster-time extraction, §B.3 step 1).

    Each view goes through ``model(x, modality) -> (f_d, f_s)`` in eval mode; with ``flip`` the plain and
    flipped outputs are averaged, un-normalised. Under DDP each rank embeds a contiguous shard and the
    shards are gathered, so every rank returns all rows in record order.

    Args:
        model: the SDCL model (``ViTICS``).
        records: images with a ``path``, in the order of the output rows.
        modality: ``"visible"`` or ``"infrared"`` (which patch embedding).
        batch_size: images per forward.
        device: where the model runs.
        flip: average with the horizontally flipped view.
        bf16: bf16 autocast on CUDA or CPU (``precision: bf16``); outputs are float32 either way.
        num_workers: DataLoader workers.

    Returns:
        ``(f_d, f_s)``, each (N, D) float32 on CPU.

    Raises:
        ValueError: no records.
    """
    if not records:
        raise ValueError(f"no {modality} records to extract")
    rank, world = (
        (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    )
    start, stop = _shard(len(records), rank, world)
    loader = DataLoader(
        _Images([Path(r.path) for r in records[start:stop]], _eval_transform(model)),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    autocast = precision_autocast("bf16" if bf16 else "fp32", device)
    was_training = model.training
    model.eval()
    deep, shallow = [], []
    try:
        with torch.inference_mode(), autocast:
            for x in loader:
                x = x.to(device, non_blocking=True)
                f_d, f_s = (t.float() for t in model(x, modality))
                if flip:
                    g_d, g_s = (t.float() for t in model(torch.flip(x, dims=(3,)), modality))
                    f_d, f_s = (f_d + g_d) / 2, (f_s + g_s) / 2
                deep.append(f_d.cpu())
                shallow.append(f_s.cpu())
    finally:
        model.train(was_training)
    dim = cast(Any, model).embed_dim // 2  # per-head width D (extract is [f_d; f_s])
    f_d = torch.cat(deep) if deep else torch.zeros(0, dim)
    f_s = torch.cat(shallow) if shallow else torch.zeros(0, dim)
    return _gather_rows(f_d, len(records), device), _gather_rows(f_s, len(records), device)


def _checkpointed(block: nn.Module) -> Any:
    plain = block.forward

    def forward(x: Tensor) -> Tensor:
        if block.training and torch.is_grad_enabled():
            return cast(Tensor, checkpoint(plain, x, use_reentrant=False))
        return cast(Tensor, plain(x))

    return forward


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer block's activations in the backward (``torch.utils.checkpoint``).

    Wraps the ``forward`` of the backbone blocks that run (``blocks[:-1]``) and of the two head blocks
    (``b1[0]``, ``b2[0]``) on the instance, so parameter names and state dicts do not change. Only active
    in training mode with autograd on; the RNG state is replayed, so drop-path masks match.

    Args:
        model: a ``ViTICS``.

    Returns:
        Number of wrapped blocks.

    Raises:
        ValueError: the model is not a ``ViTICS`` (e.g. the MobileNetV2 ``mobile`` variant).
    """
    if not hasattr(model, "blocks"):
        raise ValueError(
            f"method_options.grad_checkpointing is for the ViT backbone; {type(model).__name__} has no "
            "transformer blocks (set grad_checkpointing: false)"
        )
    vit = cast(Any, model)
    blocks = [*list(vit.blocks)[:-1], vit.b1[0], vit.b2[0]]
    for block in blocks:
        block.forward = _checkpointed(block)
    logger.info("activation checkpointing on %d transformer blocks", len(blocks))
    return len(blocks)
