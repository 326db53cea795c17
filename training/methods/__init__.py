"""Training methods on one core (Contract 9): ``ReIDMethod`` protocol, ``METHODS``, ``build_method``."""

from __future__ import annotations

from typing import Any

from torch import nn

from vireid.training.engine._config import TrainConfig
from vireid.training.methods._base import (
    MODALITIES,
    DistInfo,
    ExtractFn,
    PseudoLabels,
    RefreshContext,
    ReIDMethod,
    TrainForward,
    all_gather_cat,
    broadcast_from_main,
    shard_batch,
)
from vireid.training.methods._baseline import BaselineConfig, BaselineMethod
from vireid.training.methods._supervised import SupervisedMethod
from vireid.training.methods.salcr import SALCRMethod, test_time_cmfp  # noqa: F401 (CLI --cmfp hook)
from vireid.training.methods.sdcl import SDCLMethod

# name -> class with __init__(self, cfg: TrainConfig, model: nn.Module); SALCR and SDCL are added here.
METHODS: dict[str, Any] = {
    "baseline": BaselineMethod,
    "salcr": SALCRMethod,
    "sdcl": SDCLMethod,
    "supervised": SupervisedMethod,
}

__all__ = [
    "METHODS",
    "MODALITIES",
    "BaselineConfig",
    "BaselineMethod",
    "DistInfo",
    "ExtractFn",
    "PseudoLabels",
    "ReIDMethod",
    "RefreshContext",
    "SupervisedMethod",
    "TrainForward",
    "all_gather_cat",
    "broadcast_from_main",
    "build_method",
    "shard_batch",
]


def build_method(cfg: TrainConfig, *, model: nn.Module | None = None) -> ReIDMethod:
    """Build the method named by ``cfg.method`` (its model from ``cfg.model`` unless ``model`` is given).

    Raises:
        KeyError: an unknown method name (the message lists the valid names).
    """
    if cfg.method not in METHODS:
        raise KeyError(f"unknown method {cfg.method!r}; valid methods: {sorted(METHODS)}")
    if model is None:
        from vireid.training.models import build_model

        model = build_model(
            cfg.model.arch,
            variant=cfg.model.variant,
            pretrained=cfg.model.pretrained,
            input_size=cfg.model.input_size,
        )
    method: ReIDMethod = METHODS[cfg.method](cfg, model)
    return method
