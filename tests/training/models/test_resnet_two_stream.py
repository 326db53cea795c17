"""SALCR TwoStreamResNet50 (methods.md §A.1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vireid.training.models import (
    SALCR_VARIANTS,
    TwoStreamResNet50,
    build_model,
    gem_pool,
    split_stripes,
)

TINY = SALCR_VARIANTS["tiny"]
C_TINY = TINY.out_channels  # 256


@pytest.fixture
def tiny() -> TwoStreamResNet50:
    torch.manual_seed(0)
    model = TwoStreamResNet50(TINY)
    # Non-trivial running statistics so eval-mode BN is not the identity.
    with torch.no_grad():
        for bn in (model.bottleneck, model.bottleneck_part):
            bn.running_mean.normal_(0.0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def images(n: int, size: tuple[int, int] = (96, 48), seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=gen)


def test_tiny_training_shapes(tiny: TwoStreamResNet50) -> None:
    n = 2
    out = tiny.forward_train(images(2 * n), images(n, seed=2))
    assert out["feature_map"].shape == (3 * n, C_TINY, 6, 3)
    assert out["f_g"].shape == (3 * n, C_TINY)
    for key in ("f_pg", "f_pg1", "f_pg2"):
        assert out[key].shape == (3 * n, 4 * C_TINY)
        # layout [part0 | part1 | part2 | global]
        torch.testing.assert_close(out[key][:, 3 * C_TINY :], out["f_g"])


def test_training_without_parts_accepts_unpaired_batches(tiny: TwoStreamResNet50) -> None:
    out = tiny.forward_train(images(4), images(3, seed=2), with_parts=False)
    assert set(out) == {"feature_map", "f_g"}
    assert out["f_g"].shape == (7, C_TINY)


def test_training_with_parts_needs_paired_layout(tiny: TwoStreamResNet50) -> None:
    with pytest.raises(ValueError, match="2n rows"):
        tiny.forward_train(images(3), images(2, seed=2))
    with pytest.raises(ValueError, match="sizes differ"):
        tiny.forward_train(images(2), images(1, size=(64, 32)))


def test_tiny_eval_shapes_and_norms(tiny: TwoStreamResNet50) -> None:
    tiny.eval()
    with torch.no_grad():
        g, pg = tiny(images(3), "infrared")
    assert g.shape == (3, C_TINY)
    assert pg.shape == (3, 4 * C_TINY)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(pg.norm(dim=1), torch.ones(3))


def test_full_size_numbers() -> None:
    torch.manual_seed(0)
    model = build_model("salcr").eval()
    assert model.default_cfg == {
        "method": "salcr",
        "variant": "full",
        "input_size": (3, 288, 144),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "interpolation": "bilinear",
        "flip_average": True,
        "embed_dim": 2048,
    }
    x = images(1, size=(288, 144))
    with torch.no_grad():
        fmap = model.forward_features(x, "visible")
        emb = model.extract(x, "visible")
    assert fmap.shape == (1, 2048, 18, 9)
    assert emb.shape == (1, 2048)
    assert emb.dtype == torch.float32
    assert model.part_pool.tokens.shape == (3, 2048)
    assert model.bottleneck_part.num_features == 3 * 2048


def test_stripe_token_ranges() -> None:
    b, c, h, w = 2, 4, 6, 3
    # Each channel holds the row-major token index.
    fmap = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(b, c, h, w)
    stripes = split_stripes(fmap, 3)
    assert stripes.shape == (b, 3, 6, c)
    for i in range(3):
        expected = torch.arange(6 * i, 6 * (i + 1), dtype=torch.float32)
        torch.testing.assert_close(stripes[1, i, :, 2], expected)
    # full model: 18 rows x 9 cols -> stripe i = tokens [54 i, 54 (i + 1))
    full = torch.arange(162, dtype=torch.float32).reshape(1, 1, 18, 9)
    assert split_stripes(full, 3)[0, 1, :, 0].tolist() == list(range(54, 108))
    with pytest.raises(ValueError, match="not divisible"):
        split_stripes(torch.zeros(1, 1, 7, 3), 3)


def test_gem_against_hand_computation() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    out = gem_pool(x, p=3.0, eps=1e-12)
    # channel 0: mean(1, 8, 27, 64) = 25; channel 1: mean(0, 0, 0, 8) = 2
    expected = torch.tensor([[25.0 ** (1 / 3), 2.0 ** (1 / 3)]])
    torch.testing.assert_close(out, expected)
    # the epsilon keeps an all-zero map finite: (1e-12)^(1/3) = 1e-4
    zero = gem_pool(torch.zeros(1, 1, 2, 2), p=3.0, eps=1e-12)
    assert math.isclose(zero.item(), 1e-4, rel_tol=1e-4)


def test_bn_necks_bias_frozen_and_init(tiny: TwoStreamResNet50) -> None:
    for bn in (tiny.bottleneck, tiny.bottleneck_part):
        assert not bn.bias.requires_grad
        assert bn.weight.requires_grad
        assert torch.count_nonzero(bn.bias) == 0
        assert abs(bn.weight.mean().item() - 1.0) < 0.005
        assert 0.005 < bn.weight.std().item() < 0.015
    # a training step leaves the frozen biases at zero
    tiny.train()
    opt = torch.optim.SGD([p for p in tiny.parameters() if p.requires_grad], lr=0.1)
    out = tiny.forward_train(images(2), images(1, seed=2))
    (out["f_pg1"].pow(2).sum() + out["f_g"].sum()).backward()
    opt.step()
    assert torch.count_nonzero(tiny.bottleneck.bias) == 0
    assert torch.count_nonzero(tiny.bottleneck_part.bias) == 0
    assert tiny.part_pool.tokens.grad is not None
    assert tiny.visible_stem.conv1.weight.grad is not None
    assert tiny.thermal_stem.conv1.weight.grad is not None


@pytest.mark.parametrize("modality", ["visible", "infrared"])
def test_extract_matches_export_module_and_eval_forward(tiny: TwoStreamResNet50, modality: str) -> None:
    tiny.eval()
    x = images(3)
    with torch.no_grad():
        emb = tiny.extract(x, modality)
        exported = tiny.export_module(modality).eval()(x)
        g, _ = tiny(x, modality)
    torch.testing.assert_close(emb, exported)
    torch.testing.assert_close(emb, g)
    assert emb.shape == (3, C_TINY)


def test_stems_are_modality_specific(tiny: TwoStreamResNet50) -> None:
    tiny.eval()
    x = images(2)
    with torch.no_grad():
        assert not torch.allclose(tiny.extract(x, "visible"), tiny.extract(x, "infrared"))


def test_extract_errors(tiny: TwoStreamResNet50) -> None:
    with pytest.raises(RuntimeError, match="eval"):
        tiny.extract(images(1), "visible")
    tiny.eval()
    with pytest.raises(ValueError, match="modality"):
        tiny.extract(images(1), "thermal")
    with pytest.raises(ValueError, match="modality"):
        tiny.export_module("rgb")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.extract(torch.zeros(1, 1, 96, 48), "visible")


def reference_parts(
    model: TwoStreamResNet50, fmap: torch.Tensor, *, proto_row: int, map_row: int
) -> torch.Tensor:
    """Slow per-row SAFL + query attention + eval BN, written from methods.md §A.1 (before BN concat)."""
    c, h, w = fmap.shape[1:]
    parts = []
    for i in range(3):
        rows = slice(i * (h // 3) * w, (i + 1) * (h // 3) * w)
        own = fmap[proto_row].flatten(1).t()[rows]  # (L, C)
        a = torch.sigmoid(own @ model.part_pool.tokens[i])
        q = (a / a.sum()) @ own
        tgt = fmap[map_row].flatten(1).t()[rows]
        weights = torch.softmax(tgt @ q / math.sqrt(c), dim=0)
        parts.append(weights @ tgt)
    flat = torch.cat(parts)
    bn = model.bottleneck_part
    return (flat - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def test_cross_querying_matches_per_row_reference(tiny: TwoStreamResNet50) -> None:
    tiny.eval()
    n = 2
    with torch.no_grad():
        out = tiny.forward_train(images(2 * n), images(n, seed=3))
    fmap = out["feature_map"]
    v, a, r = range(0, n), range(n, 2 * n), range(2 * n, 3 * n)
    maps = {
        "f_pg": list(v) + list(a) + list(r),  # own maps
        "f_pg1": list(r) + list(r) + list(v),  # V->R, A->R, R->V
        "f_pg2": list(a) + list(v) + list(a),  # V->A, A->V, R->A
    }
    for key, targets in maps.items():
        for row, target in enumerate(targets):
            expected = reference_parts(tiny, fmap, proto_row=row, map_row=target)
            torch.testing.assert_close(out[key][row, : 3 * C_TINY], expected, atol=1e-5, rtol=1e-4)
    # eval forward uses own-map parts: same vector as f_pg, normalised
    with torch.no_grad():
        _, pg = tiny(images(2 * n)[:n], "visible")
    torch.testing.assert_close(pg, F.normalize(out["f_pg"][:n], dim=1), atol=1e-5, rtol=1e-4)


def test_reset_part_head_changes_part_params_only(tiny: TwoStreamResNet50) -> None:
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    old_tokens = tiny.part_pool.tokens
    torch.manual_seed(123)
    tiny.reset_part_head()
    after = tiny.state_dict()
    assert set(after) == set(before)
    part_keys = {k for k in after if k.startswith(("part_pool.", "bottleneck_part."))}
    assert part_keys == {"part_pool.tokens"} | {
        f"bottleneck_part.{s}"
        for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    for key, value in after.items():
        if key in part_keys:
            continue
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert tiny.part_pool.tokens is not old_tokens
    assert not torch.equal(after["part_pool.tokens"], before["part_pool.tokens"])
    assert not torch.equal(after["bottleneck_part.running_var"], before["bottleneck_part.running_var"])
    assert torch.count_nonzero(after["bottleneck_part.running_mean"]) == 0
    assert not tiny.bottleneck_part.bias.requires_grad
    # kaiming-normal tokens: std ~ sqrt(2 / C)
    assert 0.5 < tiny.part_pool.tokens.std().item() / math.sqrt(2 / C_TINY) < 1.5


def test_grad_checkpointing_keeps_outputs_gradients_and_bn_statistics() -> None:
    """The trunk recomputes its blocks in the backward: same outputs, gradients and BN running statistics
    (the recomputation must not update them a second time)."""
    from vireid.training.models import build_model

    def step(checkpointing: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("salcr", variant="tiny").train()
        if checkpointing:
            model.set_grad_checkpointing(True)
        x = torch.randn(
            6, 3, *model.default_cfg["input_size"][1:], generator=torch.Generator().manual_seed(1)
        )
        out = model.forward_train(x[:4], x[4:])
        (out["f_pg"].square().mean() + out["f_g"].sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return grads, {n: b.clone() for n, b in model.named_buffers()}, out["f_pg"].detach()

    plain_grads, plain_buffers, plain_out = step(False)
    grads, buffers, out = step(True)
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    assert grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    for name, buffer in plain_buffers.items():
        torch.testing.assert_close(buffers[name], buffer, rtol=0, atol=0, msg=name)


def test_grad_checkpointing_needs_the_resnet_trunk() -> None:
    from vireid.training.models import build_model

    with pytest.raises(ValueError, match="grad_checkpointing"):
        build_model("salcr", variant="mobile").set_grad_checkpointing(True)
