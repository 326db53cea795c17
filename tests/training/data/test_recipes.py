from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.training.data import RECIPE_NAMES, AugmentConfig, Step, build_recipe

GEO = ["resize", "pad", "random_crop", "hflip"]
HEAD = ["to_tensor", "normalize", "channel_random_erasing"]


def _names(steps: tuple[Step, ...]) -> list[str]:
    return [s.name for s in steps]


def test_salcr_stage1_order() -> None:
    recipe = build_recipe("salcr_stage1")
    assert _names(recipe.rgb) == [
        *GEO,
        "to_tensor",
        "linear_transform",
        "normalize",
        "channel_random_erasing",
    ]
    assert _names(recipe.rgb_aug) == [*GEO, "color_jitter", *HEAD, "channel_exchange"]
    assert _names(recipe.ir) == [*GEO, "color_jitter", *HEAD, "channel_adap_gray"]


def test_salcr_stage2_drops_linear_transform_only() -> None:
    stage1, stage2 = build_recipe("salcr_stage1"), build_recipe("salcr_stage2")
    assert _names(stage2.rgb) == [*GEO, *HEAD]
    assert stage2.rgb_aug == stage1.rgb_aug and stage2.ir == stage1.ir


def test_sdcl_jitter_first_and_baseline_without_jitter() -> None:
    sdcl = build_recipe("sdcl")
    assert _names(sdcl.rgb) == ["color_jitter", *GEO, *HEAD]
    assert _names(sdcl.rgb_aug) == ["color_jitter", *GEO, *HEAD, "channel_exchange"]
    assert _names(sdcl.ir) == ["color_jitter", *GEO, *HEAD, "channel_adap_gray"]
    baseline = build_recipe("baseline")
    assert _names(baseline.rgb_aug) == [*GEO, *HEAD, "channel_exchange"]
    assert set(RECIPE_NAMES) == {"salcr_stage1", "salcr_stage2", "sdcl", "baseline", "tiny"}


def test_parameters_come_from_config() -> None:
    recipe = build_recipe("sdcl", AugmentConfig(height=32, width=16, padding=2, erasing_p=0.25))
    params = {s.name: dict(s.kwargs) for s in recipe.rgb}
    assert params["resize"] == {"height": 32, "width": 16, "interpolation": "bilinear"}
    assert params["pad"] == {"padding": 2} and params["channel_random_erasing"] == {"p": 0.25}
    assert params["color_jitter"] == {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5}
    assert params["normalize"]["mean"] == (0.485, 0.456, 0.406)


def test_built_views_give_normalised_tensors_reproducibly() -> None:
    views = build_recipe("salcr_stage1", AugmentConfig(height=32, width=16)).build()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 20, 3), dtype=np.uint8))
    for view in views:
        a = view(image, torch.Generator().manual_seed(1))
        b = view(image, torch.Generator().manual_seed(1))
        assert a.shape == (3, 32, 16) and a.dtype == torch.float32 and torch.equal(a, b)


def test_unknown_names() -> None:
    with pytest.raises(KeyError, match="salcr_stage1"):
        build_recipe("nope")
    with pytest.raises(KeyError, match="valid"):
        Step("blur").build()
