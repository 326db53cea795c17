"""SDCL ViTICS (methods.md §B.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vireid.training.models import SDCL_VARIANTS, ViTICS, build_model
from vireid.training.models._vit_ics import IBN, Attention

TINY = SDCL_VARIANTS["tiny"]
D_TINY = TINY.embed_dim  # 64
N_TINY = TINY.grid[0] * TINY.grid[1]  # 4 x 2 = 8 tokens


@pytest.fixture
def tiny() -> ViTICS:
    torch.manual_seed(0)
    model = ViTICS(TINY)
    with torch.no_grad():
        for bn in (model.bottleneck, model.bottleneck_shallow):
            bn.running_mean.normal_(0.0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def images(n: int, size: tuple[int, int] = (64, 32), seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def perturb_(module: torch.nn.Module, seed: int = 5) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_tiny_shapes(tiny: ViTICS) -> None:
    z, x_s = tiny.forward_features(images(2), "visible")
    assert z.shape == (2, 1 + N_TINY, D_TINY)
    assert x_s.shape == (2, N_TINY, D_TINY)
    out = tiny.forward_train(images(3), images(2, seed=2))
    assert out["f_d"].shape == (5, D_TINY)
    assert out["f_s"].shape == (5, D_TINY)
    assert out["split"] == (3, 2)
    tiny.eval()
    with torch.no_grad():
        f_d, f_s = tiny(images(2), "infrared")
        emb = tiny.extract(images(2), "infrared")
    assert f_d.shape == f_s.shape == (2, D_TINY)
    torch.testing.assert_close(emb, torch.cat([f_d, f_s], dim=1))
    assert emb.shape == (2, 2 * D_TINY)
    assert tiny.default_cfg["embed_dim"] == 2 * D_TINY
    assert tiny.default_cfg["input_size"] == (3, 64, 32)


def test_full_size_numbers() -> None:
    torch.manual_seed(0)
    model = build_model("sdcl").eval()
    assert model.default_cfg == {
        "method": "sdcl",
        "variant": "full",
        "input_size": (3, 288, 144),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "interpolation": "bicubic",
        "flip_average": True,
        "embed_dim": 1536,
    }
    assert model.pos_embed.shape == (1, 163, 768)
    assert len(model.blocks) == 12
    x = images(1, size=(288, 144))
    with torch.no_grad():
        z, x_s = model.forward_features(x, "infrared")
        emb = model.extract(x, "infrared")
    assert z.shape == (1, 163, 768)
    assert x_s.shape == (1, 162, 768)
    assert emb.shape == (1, 1536)
    assert emb.dtype == torch.float32
    rates = [block.drop_path.p for block in model.blocks]
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.1)
    assert model.b1[0].drop_path.p == pytest.approx(0.1)


def test_shallow_tokens_and_backbone_depth(tiny: ViTICS) -> None:
    tiny.eval()
    x = images(2)
    with torch.no_grad():
        z, x_s = tiny.forward_features(x, "visible")
        # x_s = patch tokens right after patch embedding + pos_embed
        torch.testing.assert_close(x_s, tiny.patch_embed(x) + tiny.pos_embed[:, 1:])
        # Z = tokens after blocks[:-1]
        tokens = torch.cat([tiny.cls_token.expand(2, -1, -1), tiny.patch_embed(x)], 1) + tiny.pos_embed
        for block in tiny.blocks[:-1]:
            tokens = block(tokens)
        torch.testing.assert_close(z, tokens)
        # heads: deep on Z, shallow on [Z_cls; x_s]
        f_d, f_s = tiny(x, "visible")
        torch.testing.assert_close(f_d, tiny.bottleneck(tiny.b1(z)[:, 0]))
        torch.testing.assert_close(f_s, tiny.bottleneck_shallow(tiny.b2(torch.cat([z[:, :1], x_s], 1))[:, 0]))
        before = tiny.extract(x, "visible")
        # the original last block and final norm are not used by any output
        perturb_(tiny.blocks[-1])
        perturb_(tiny.norm)
        torch.testing.assert_close(tiny.extract(x, "visible"), before)


def test_copies_start_identical_then_modality_specific(tiny: ViTICS) -> None:
    for a, b in zip(
        tiny.patch_embed.state_dict().values(), tiny.patch_embed2.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for head in (tiny.b1, tiny.b2):
        for key, value in tiny.blocks[-1].state_dict().items():
            torch.testing.assert_close(head[0].state_dict()[key], value, rtol=0, atol=0)
    assert tiny.patch_embed2.proj.weight is not tiny.patch_embed.proj.weight
    tiny.eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(tiny.extract(x, "visible"), tiny.extract(x, "infrared"))
        perturb_(tiny.patch_embed2)
        assert not torch.allclose(tiny.extract(x, "visible"), tiny.extract(x, "infrared"))
        perturb_(tiny.b2, seed=9)
        tiny.copy_shared_weights()
        torch.testing.assert_close(tiny.extract(x, "visible"), tiny.extract(x, "infrared"))
        torch.testing.assert_close(tiny.b2[1].weight, tiny.norm.weight)


def test_forward_train_routes_modalities(tiny: ViTICS) -> None:
    perturb_(tiny.patch_embed2)
    tiny.eval()  # BN-necks on running stats, so rows are independent
    x_rgb, x_ir = images(3), images(2, seed=2)
    with torch.no_grad():
        out = tiny.forward_train(x_rgb, x_ir)
        d_rgb, s_rgb = tiny(x_rgb, "visible")
        d_ir, s_ir = tiny(x_ir, "infrared")
    torch.testing.assert_close(out["f_d"], torch.cat([d_rgb, d_ir]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["f_s"], torch.cat([s_rgb, s_ir]), atol=1e-5, rtol=1e-4)


def test_bn_necks_bias_frozen_and_training_step(tiny: ViTICS) -> None:
    fresh = ViTICS(TINY)
    for bn in (fresh.bottleneck, fresh.bottleneck_shallow):
        assert not bn.bias.requires_grad
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    opt = torch.optim.SGD([p for p in tiny.parameters() if p.requires_grad], lr=0.1)
    out = tiny.forward_train(images(2), images(2, seed=2))
    (out["f_d"].pow(2).sum() + out["f_s"].pow(2).sum()).backward()
    opt.step()
    assert torch.count_nonzero(tiny.bottleneck.bias) == 0
    assert tiny.patch_embed.proj.weight.grad is not None
    assert tiny.patch_embed2.proj.weight.grad is not None
    assert tiny.b2[0].attn.qkv.weight.grad is not None
    assert tiny.blocks[-1].attn.qkv.weight.grad is None  # unused, as in SDCL
    assert not any(p.requires_grad for p in [*tiny.blocks[-1].parameters(), *tiny.norm.parameters()])
    assert all(p.requires_grad for p in tiny.b1.parameters())
    assert all(p.requires_grad for p in tiny.b2.parameters())


@pytest.mark.parametrize("modality", ["visible", "infrared"])
def test_extract_matches_export_module(tiny: ViTICS, modality: str) -> None:
    perturb_(tiny.patch_embed2)
    tiny.eval()
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(tiny.extract(x, modality), tiny.export_module(modality).eval()(x))


def test_errors(tiny: ViTICS) -> None:
    with pytest.raises(RuntimeError, match="eval"):
        tiny.extract(images(1), "visible")
    tiny.eval()
    with pytest.raises(ValueError, match="modality"):
        tiny.extract(images(1), "ir")
    with pytest.raises(ValueError, match="64x32"):
        tiny.extract(images(1, size=(96, 48)), "visible")
    with pytest.raises(ValueError, match="modality"):
        tiny.export_module("RGB")


def test_attention_matches_torch_sdpa() -> None:
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4, qkv_bias=True, init_std=0.02)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(attn(x), attn.proj(ref), atol=1e-6, rtol=1e-5)


def test_ibn_splits_instance_and_batch_norm() -> None:
    ibn = IBN(6)
    x = torch.randn(4, 6, 5, 5) * 3 + 2
    y = ibn(x)
    # first half: instance norm -> each (sample, channel) map is standardised
    torch.testing.assert_close(y[:, :3].mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5, rtol=0)
    # second half: batch norm -> per channel over the batch, not per sample
    torch.testing.assert_close(y[:, 3:].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert y[:, 3:].mean(dim=(2, 3)).abs().max() > 1e-3
