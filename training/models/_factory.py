"""``build_model``: the one place that turns (method, variant, pretrained) into a model (Contract 1)."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ._resnet_two_stream import SALCR_VARIANTS, TwoStreamResNet50
from ._vit_ics import SDCL_VARIANTS, ViTICS
from ._weights import load_resnet50_imagenet, load_transreid_ssl

logger = logging.getLogger(__name__)

MODEL_METHODS: tuple[str, ...] = ("salcr", "sdcl")
MODEL_VARIANTS: tuple[str, ...] = ("full", "tiny")


def build_model(method: str, *, variant: str = "full", pretrained: str | Path | None = None) -> nn.Module:
    """Build the backbone of a method, optionally loading pretrained weights from a local file.

    Args:
        method: ``"salcr"`` (:class:`TwoStreamResNet50`, methods.md §A.1) or ``"sdcl"``
            (:class:`ViTICS`, methods.md §B.1).
        variant: ``"full"`` (288×144 input) or ``"tiny"`` (narrow, shallow, small input; for tests).
        pretrained: local ImageNet ResNet-50 state dict (salcr) or TransReID-SSL checkpoint (sdcl); None keeps
            the random initialisation.

    Returns:
        The model (train mode) with ``default_cfg``, ``extract`` and ``export_module`` (Contract 1).

    Raises:
        KeyError: unknown method or variant (the message lists the valid names).
        FileNotFoundError: ``pretrained`` does not exist.
        ValueError: ``pretrained`` cannot be read or does not match the model.
    """
    if method not in MODEL_METHODS:
        raise KeyError(f"unknown method {method!r}; valid methods: {', '.join(MODEL_METHODS)}")
    if variant not in MODEL_VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; valid variants: {', '.join(MODEL_VARIANTS)}")
    model: nn.Module
    if method == "salcr":
        model = TwoStreamResNet50(SALCR_VARIANTS[variant])
        if pretrained is not None:
            load_resnet50_imagenet(model, pretrained)
    else:
        model = ViTICS(SDCL_VARIANTS[variant])
        if pretrained is not None:
            load_transreid_ssl(model, pretrained)
    logger.info(
        "built %s/%s (%.1fM parameters, pretrained=%s)",
        method,
        variant,
        sum(p.numel() for p in model.parameters()) / 1e6,
        pretrained,
    )
    return model
