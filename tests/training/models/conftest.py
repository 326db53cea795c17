"""Fake pretrained checkpoints for the model tests, named as the real files name their tensors.

The key names are generated here from the published layouts (torchvision ResNet, TransReID-SSL ViT with ICS
stem), independently of how our models name their modules, so the loaders' key mapping is what is tested.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

Factory = Callable[..., dict[str, torch.Tensor]]


def _bn(
    prefix: str, channels: int, make: Callable[[tuple[int, ...]], torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": make((channels,)),
        f"{prefix}.bias": make((channels,)),
        f"{prefix}.running_mean": make((channels,)),
        f"{prefix}.running_var": make((channels,)).abs() + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def torchvision_resnet_state(
    *,
    stem: int,
    widths: tuple[int, ...],
    blocks: tuple[int, ...],
    make: Callable[[tuple[int, ...]], torch.Tensor],
    num_classes: int = 1000,
) -> dict[str, torch.Tensor]:
    """A state dict with torchvision ``resnet50`` key names and shapes for the given widths / depths."""
    state = {"conv1.weight": make((stem, 3, 7, 7)), **_bn("bn1", stem, make)}
    inplanes = stem
    for layer, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
        for b in range(count):
            p = f"layer{layer}.{b}"
            state[f"{p}.conv1.weight"] = make((width, inplanes, 1, 1))
            state.update(_bn(f"{p}.bn1", width, make))
            state[f"{p}.conv2.weight"] = make((width, width, 3, 3))
            state.update(_bn(f"{p}.bn2", width, make))
            state[f"{p}.conv3.weight"] = make((4 * width, width, 1, 1))
            state.update(_bn(f"{p}.bn3", 4 * width, make))
            if b == 0:
                state[f"{p}.downsample.0.weight"] = make((4 * width, inplanes, 1, 1))
                state.update(_bn(f"{p}.downsample.1", 4 * width, make))
            inplanes = 4 * width
    state["fc.weight"] = make((num_classes, inplanes))
    state["fc.bias"] = make((num_classes,))
    return state


def transreid_vit_state(
    *,
    stem: int,
    dim: int,
    depth: int,
    grid: tuple[int, int],
    make: Callable[[tuple[int, ...]], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A state dict with TransReID-SSL ``vit_*_TransReID(stem_conv=True)`` key names (no prefixes)."""
    state = {"cls_token": make((1, 1, dim)), "pos_embed": make((1, 1 + grid[0] * grid[1], dim))}
    state["patch_embed.conv.0.weight"] = make((stem, 3, 7, 7))
    for idx, in_ch in ((1, stem), (4, stem)):
        state[f"patch_embed.conv.{idx}.IN.weight"] = make((in_ch // 2,))
        state[f"patch_embed.conv.{idx}.IN.bias"] = make((in_ch // 2,))
        state.update(_bn(f"patch_embed.conv.{idx}.BN", in_ch - in_ch // 2, make))
    state["patch_embed.conv.3.weight"] = make((stem, stem, 3, 3))
    state["patch_embed.conv.6.weight"] = make((stem, stem, 3, 3))
    state.update(_bn("patch_embed.conv.7", stem, make))
    state["patch_embed.proj.weight"] = make((dim, stem, 8, 8))
    state["patch_embed.proj.bias"] = make((dim,))
    for i in range(depth):
        p = f"blocks.{i}"
        for name, shape in (
            ("norm1.weight", (dim,)),
            ("norm1.bias", (dim,)),
            ("attn.qkv.weight", (3 * dim, dim)),
            ("attn.qkv.bias", (3 * dim,)),
            ("attn.proj.weight", (dim, dim)),
            ("attn.proj.bias", (dim,)),
            ("norm2.weight", (dim,)),
            ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (4 * dim, dim)),
            ("mlp.fc1.bias", (4 * dim,)),
            ("mlp.fc2.weight", (dim, 4 * dim)),
            ("mlp.fc2.bias", (dim,)),
        ):
            state[f"{p}.{name}"] = make(shape)
    state["norm.weight"] = make((dim,))
    state["norm.bias"] = make((dim,))
    return state


def random_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape)


@pytest.fixture
def write_checkpoint(tmp_path: Path) -> Callable[[object, str], Path]:
    """Save any object with ``torch.save`` under ``tmp_path`` and return the path."""

    def _write(obj: object, name: str = "weights.pth") -> Path:
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return _write


@pytest.fixture
def dino_wrap() -> Callable[[dict[str, torch.Tensor]], dict[str, object]]:
    """Wrap a ViT state dict as a DINO training checkpoint does (``teacher``, prefixes, DINO head)."""

    def _wrap(state: dict[str, torch.Tensor]) -> dict[str, object]:
        teacher: dict[str, torch.Tensor] = {f"module.backbone.{k}": v for k, v in state.items()}
        teacher["module.head.mlp.0.weight"] = torch.randn(8, 4)
        teacher["module.head.last_layer.weight_g"] = torch.randn(8, 1)
        return {
            "teacher": teacher,
            "epoch": 100,
            "args": argparse.Namespace(arch="vit_base", patch_size=16),
        }

    return _wrap


@pytest.fixture
def resnet_state() -> Factory:
    """``torchvision_resnet_state`` (random values unless ``make`` is given)."""

    def _build(**kwargs: object) -> dict[str, torch.Tensor]:
        kwargs.setdefault("make", random_tensor)
        return torchvision_resnet_state(**kwargs)  # type: ignore[arg-type]

    return _build


@pytest.fixture
def vit_state() -> Factory:
    """``transreid_vit_state`` (random values unless ``make`` is given)."""

    def _build(**kwargs: object) -> dict[str, torch.Tensor]:
        kwargs.setdefault("make", random_tensor)
        return transreid_vit_state(**kwargs)  # type: ignore[arg-type]

    return _build
