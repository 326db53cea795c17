"""Pretrained-weight loaders: torchvision ResNet-50 → SALCR, TransReID-SSL ViT → SDCL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vireid.training.models import (
    SALCR_VARIANTS,
    SDCL_VARIANTS,
    LoadReport,
    TwoStreamResNet50,
    ViTICS,
    ViTICSConfig,
    build_model,
    load_resnet50_imagenet,
    load_transreid_ssl,
    resize_pos_embed,
)

TINY_RESNET = SALCR_VARIANTS["tiny"]
RESNET_HEAD_PREFIXES = ("bottleneck.", "bottleneck_part.", "part_pool.")
# A narrow ViT with the full 288x144 input (18 x 9 grid), so the 16 x 8 -> 18 x 9 resize is the real one.
VIT_288 = ViTICSConfig(variant="tiny", stem_channels=8, embed_dim=16, depth=2, num_heads=2)
VIT_HEAD_PREFIXES = ("bottleneck.", "bottleneck_shallow.")


def tiny_resnet_kwargs() -> dict[str, object]:
    return {"stem": TINY_RESNET.stem_channels, "widths": TINY_RESNET.widths, "blocks": TINY_RESNET.blocks}


def test_resnet_key_mapping_tiny(
    resnet_state: Callable[..., dict[str, torch.Tensor]], write_checkpoint
) -> None:
    state = resnet_state(**tiny_resnet_kwargs())
    model = TwoStreamResNet50(TINY_RESNET)
    report = load_resnet50_imagenet(model, write_checkpoint(state))
    target = model.state_dict()
    # every stem / trunk tensor is loaded, the heads stay fresh
    trunk_and_stems = [k for k in target if not k.startswith(RESNET_HEAD_PREFIXES)]
    assert set(report.loaded) == set(trunk_and_stems)
    assert set(report.missing) == set(target) - set(trunk_and_stems)
    assert {k for k, _ in report.skipped} == {"fc.weight", "fc.bias"}
    n_stem = sum(k.startswith(("conv1.", "bn1.")) for k in state)
    n_trunk = sum(k.startswith("layer") for k in state)
    assert len(report.loaded) == 2 * n_stem + n_trunk
    assert report.total == len(target)
    assert str(report).startswith(f"loaded {2 * n_stem + n_trunk} / {len(target)} tensors")
    # both stems identical to the file ("three times"), trunk by name
    for stem in ("visible_stem", "thermal_stem"):
        torch.testing.assert_close(target[f"{stem}.conv1.weight"], state["conv1.weight"], rtol=0, atol=0)
        torch.testing.assert_close(
            target[f"{stem}.bn1.running_var"], state["bn1.running_var"], rtol=0, atol=0
        )
    for key in ("layer1.0.downsample.0.weight", "layer3.0.conv2.weight", "layer4.0.bn3.running_mean"):
        torch.testing.assert_close(target[f"trunk.{key}"], state[key], rtol=0, atol=0)
    assert target["trunk.layer2.0.bn1.num_batches_tracked"].item() == 7


def test_resnet_key_mapping_full_layout(resnet_state, write_checkpoint) -> None:
    """Real ResNet-50 layout: 320 torchvision keys, the 318 non-fc ones all land (the stem twice)."""
    cheap = lambda shape: torch.zeros(1).expand(shape)  # noqa: E731 - constant storage keeps the file tiny
    state = resnet_state(stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), make=cheap)
    assert len(state) == 320
    model = TwoStreamResNet50()
    report = load_resnet50_imagenet(model, write_checkpoint(state))
    assert len(report.loaded) == 318 + 6
    assert all(k.startswith(RESNET_HEAD_PREFIXES) for k in report.missing)
    assert len(report.skipped) == 2


def test_resnet_skips_unknown_and_mismatched(resnet_state, write_checkpoint, caplog) -> None:
    state = resnet_state(**tiny_resnet_kwargs())
    state["layer1.0.conv1.weight"] = torch.randn(3, 3, 1, 1)
    state["extra.thing"] = torch.randn(2)
    model = TwoStreamResNet50(TINY_RESNET)
    with caplog.at_level(logging.INFO, logger="vireid.training.models._weights"):
        report = load_resnet50_imagenet(model, write_checkpoint({"state_dict": state}))
    reasons = dict(report.skipped)
    assert "shape (3, 3, 1, 1)" in reasons["trunk.layer1.0.conv1.weight"]
    assert "not a ResNet-50" in reasons["extra.thing"]
    assert "trunk.layer1.0.conv1.weight" in report.missing
    assert "loaded" in caplog.text


def test_resnet_wrong_variant_is_an_error(resnet_state, write_checkpoint) -> None:
    cheap = lambda shape: torch.zeros(1).expand(shape)  # noqa: E731
    state = resnet_state(stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), make=cheap)
    with pytest.raises(ValueError, match="no tensor"):
        load_resnet50_imagenet(TwoStreamResNet50(TINY_RESNET), write_checkpoint(state))


def test_missing_files_say_where_to_get_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match="resnet50-19c8e357") as err:
        load_resnet50_imagenet(TwoStreamResNet50(TINY_RESNET), missing)
    assert str(missing) in str(err.value)
    with pytest.raises(FileNotFoundError, match="TransReID-SSL") as err:
        load_transreid_ssl(ViTICS(VIT_288), missing)
    assert str(missing) in str(err.value)
    with pytest.raises(FileNotFoundError):
        build_model("salcr", variant="tiny", pretrained=missing)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_resnet50_imagenet(TwoStreamResNet50(TINY_RESNET), path)


def vit_file_state(vit_state) -> dict[str, torch.Tensor]:
    return vit_state(stem=VIT_288.stem_channels, dim=VIT_288.embed_dim, depth=VIT_288.depth, grid=(16, 8))


def test_transreid_ssl_dino_checkpoint(vit_state, dino_wrap, write_checkpoint) -> None:
    torch.manual_seed(0)
    state = vit_file_state(vit_state)
    model = ViTICS(VIT_288)
    report = load_transreid_ssl(model, write_checkpoint(dino_wrap(state)))
    target = model.state_dict()
    # pos_embed: 1 + 16x8 -> 1 + 18x9, cls entry kept, grid bilinearly resized
    assert target["pos_embed"].shape == (1, 163, 16)
    torch.testing.assert_close(target["pos_embed"][:, 0], state["pos_embed"][:, 0], rtol=0, atol=0)
    grid = state["pos_embed"][0, 1:].reshape(16, 8, 16).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(18, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(target["pos_embed"][0, 1:], expected[0].permute(1, 2, 0).reshape(162, 16))
    # backbone tensors by name, ICS stem included
    for key in (
        "patch_embed.conv.1.IN.weight",
        "patch_embed.conv.4.BN.running_var",
        "blocks.1.mlp.fc2.weight",
    ):
        torch.testing.assert_close(target[key], state[key], rtol=0, atol=0)
    # patch_embed2 = patch_embed, b1 / b2 = last block + norm
    for key, value in model.patch_embed.state_dict().items():
        torch.testing.assert_close(model.patch_embed2.state_dict()[key], value, rtol=0, atol=0)
    for head in (model.b1, model.b2):
        torch.testing.assert_close(head[0].attn.qkv.weight, state["blocks.1.attn.qkv.weight"], rtol=0, atol=0)
        torch.testing.assert_close(head[1].bias, state["norm.bias"], rtol=0, atol=0)
        assert all(p.requires_grad for p in head.parameters())
    # counts: file tensors + patch_embed2 copies + two head copies; BN-necks left fresh
    n_patch = sum(k.startswith("patch_embed.") for k in state)
    n_head_copy = sum(k.startswith(("blocks.1.", "norm.")) for k in state)
    assert len(report.loaded) == len(state) + n_patch + 2 * n_head_copy
    assert set(report.missing) == {k for k in target if k.startswith(VIT_HEAD_PREFIXES)}
    assert {k for k, _ in report.skipped} == {"head.mlp.0.weight", "head.last_layer.weight_g"}
    assert str(report) == (
        f"loaded {len(report.loaded)} / {len(target)} tensors (2 checkpoint tensors skipped, "
        f"{len(report.missing)} model tensors not in the file)"
    )
    assert isinstance(report, LoadReport)


def test_transreid_ssl_flat_patch_weight_and_mismatch(vit_state, write_checkpoint) -> None:
    state = vit_file_state(vit_state)
    flat = state["patch_embed.proj.weight"].reshape(16, -1)
    state["patch_embed.proj.weight"] = flat
    state["blocks.0.mlp.fc1.bias"] = torch.randn(5)
    model = ViTICS(VIT_288)
    report = load_transreid_ssl(model, write_checkpoint({"model": state}))
    torch.testing.assert_close(model.patch_embed2.proj.weight.flatten(1), flat, rtol=0, atol=0)
    reasons = dict(report.skipped)
    assert "shape (5,)" in reasons["blocks.0.mlp.fc1.bias"]
    assert "blocks.0.mlp.fc1.bias" in report.missing


def test_resize_pos_embed_grids() -> None:
    pos = torch.randn(1, 1 + 15, 4)
    with pytest.raises(ValueError, match="source_grid"):
        resize_pos_embed(pos, (6, 3))
    out = resize_pos_embed(pos, (5, 3), source_grid=(5, 3))
    torch.testing.assert_close(out, pos)  # same grid: identity
    constant = torch.ones(1, 1 + 16 * 8, 2)
    torch.testing.assert_close(resize_pos_embed(constant, (18, 9)), torch.ones(1, 163, 2))
    square = resize_pos_embed(torch.randn(1, 1 + 14 * 14, 2), (18, 9))
    assert square.shape == (1, 163, 2)


def test_build_model_dispatches_to_loaders(resnet_state, vit_state, dino_wrap, write_checkpoint) -> None:
    state = resnet_state(**tiny_resnet_kwargs())
    model = build_model("salcr", variant="tiny", pretrained=write_checkpoint(state, "r.pth"))
    torch.testing.assert_close(model.thermal_stem.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    cfg = SDCL_VARIANTS["tiny"]
    vit = vit_state(stem=cfg.stem_channels, dim=cfg.embed_dim, depth=cfg.depth, grid=(8, 4))
    sdcl = build_model("sdcl", variant="tiny", pretrained=write_checkpoint(dino_wrap(vit), "v.pth"))
    assert sdcl.pos_embed.shape == (1, 1 + 4 * 2, cfg.embed_dim)
    torch.testing.assert_close(sdcl.patch_embed2.proj.bias, vit["patch_embed.proj.bias"], rtol=0, atol=0)
