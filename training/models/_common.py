"""Helpers shared by the two model families: modality checks, BN-necks, the export wrapper and
BatchNorm-safe activation checkpointing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

MODALITIES: tuple[str, ...] = ("visible", "infrared")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ReIDModel(Protocol):
    """What every model returned by `build_model` offers (docs/architecture.md, Contract 1)."""

    default_cfg: dict[str, object]

    def extract(self, x: Tensor, modality: str) -> Tensor: ...

    def export_module(self, modality: str) -> nn.Module: ...


def check_modality(modality: str) -> str:
    """Validate a modality name.

    Args:
        modality: ``"visible"`` or ``"infrared"``.

    Returns:
        The same name.

    Raises:
        ValueError: for any other value.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def check_images(x: Tensor, *, name: str = "x", size: tuple[int, int] | None = None) -> None:
    """Validate an image batch.

    Args:
        x: (B, 3, H, W) float tensor.
        name: argument name used in the error message.
        size: required (H, W), or None to accept any spatial size.

    Raises:
        ValueError: wrong rank, channel count, dtype or spatial size.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{name} must be {size[0]}x{size[1]} (H x W), got {tuple(x.shape[2:])}")


def check_eval(module: nn.Module) -> None:
    """Raise RuntimeError when ``module`` is in training mode (test embeddings are eval-only)."""
    if module.training:
        raise RuntimeError("extract() is for evaluation: call model.eval() first")


def contract_cfg(
    method: str, variant: str, *, input_size: tuple[int, int], interpolation: str, embed_dim: int
) -> dict[str, object]:
    """The ``default_cfg`` of Contract 1 (docs/architecture.md): what preprocessing and export read.

    Args:
        method: ``"salcr"`` or ``"sdcl"``.
        variant: ``"full"``, ``"tiny"`` or ``"mobile"``.
        input_size: (H, W) in pixels.
        interpolation: resize filter of the eval preprocessing (``"bilinear"`` / ``"bicubic"``).
        embed_dim: D of ``extract``.

    Returns:
        ``{"method", "variant", "input_size": (3, H, W), "mean", "std", "interpolation",
        "flip_average": True, "embed_dim"}`` with the ImageNet mean / std.
    """
    return {
        "method": method,
        "variant": variant,
        "input_size": (3, *input_size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": interpolation,
        "flip_average": True,
        "embed_dim": embed_dim,
    }


def bn_neck(dim: int, *, weight_std: float = 0.0) -> nn.BatchNorm1d:
    """BatchNorm1d with a frozen bias (the BN-neck of methods.md §A.1 / §B.1).

    Args:
        dim: number of features.
        weight_std: weight ~ N(1, weight_std); 0 gives weight = 1 exactly.

    Returns:
        The layer, bias zero with ``requires_grad=False``.
    """
    bn = nn.BatchNorm1d(dim)
    with torch.no_grad():
        if weight_std > 0:
            bn.weight.normal_(1.0, weight_std)
        else:
            bn.weight.fill_(1.0)
        bn.bias.zero_()
    bn.bias.requires_grad_(False)
    return bn


class ExtractModule(nn.Module):
    """``forward(x) = model.extract(x, modality)``: the graph the exporter traces, one per modality."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.model = model
        self.modality = check_modality(modality)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch.

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.

        Returns:
            (B, D) float32 per-view embedding (before flip averaging).
        """
        # ``model`` is held as an nn.Module (so it is a registered submodule); it implements ReIDModel.
        return cast(ReIDModel, self.model).extract(x, self.modality)


@contextlib.contextmanager
def _keep_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm running statistic of ``module`` on exit (used while recomputing)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                live = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                for target, value in zip(live, buffers, strict=True):
                    target.copy_(value)


def checkpointed_call(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` whose activations are recomputed in the backward (``torch.utils.checkpoint``).

    Non-reentrant checkpointing with the RNG state replayed. The recomputation runs the module's forward a
    second time; its BatchNorm running statistics are restored afterwards, so they are updated once per
    forward exactly as without checkpointing (gradients and statistics are unchanged; only memory and
    compute differ).

    Args:
        module: any module taking one tensor.
        x: its (B, ...) input.

    Returns:
        ``module(x)``.
    """
    out: Tensor = checkpoint(
        module,
        x,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _keep_batchnorm_statistics(module)),
    )
    return out
