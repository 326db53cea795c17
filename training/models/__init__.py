"""Model architectures for SALCR and SDCL, their factory and pretrained-weight loaders (Contract 1).

``build_model(method, *, variant="full", pretrained=None)`` returns an ``nn.Module`` with ``default_cfg``,
``extract(x, modality)`` and ``export_module(modality)``; see docs/architecture.md.
"""

from ._common import IMAGENET_MEAN, IMAGENET_STD, MODALITIES, ReIDModel
from ._factory import MODEL_METHODS, MODEL_VARIANTS, build_model
from ._resnet_two_stream import (
    SALCR_VARIANTS,
    TwoStreamResNet50,
    TwoStreamResNetConfig,
    gem_pool,
    split_stripes,
)
from ._vit_ics import SDCL_VARIANTS, SDCLTrainOutput, ViTICS, ViTICSConfig
from ._weights import LoadReport, load_resnet50_imagenet, load_transreid_ssl, resize_pos_embed

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODALITIES",
    "MODEL_METHODS",
    "MODEL_VARIANTS",
    "SALCR_VARIANTS",
    "SDCL_VARIANTS",
    "LoadReport",
    "ReIDModel",
    "SDCLTrainOutput",
    "TwoStreamResNet50",
    "TwoStreamResNetConfig",
    "ViTICS",
    "ViTICSConfig",
    "build_model",
    "gem_pool",
    "load_resnet50_imagenet",
    "load_transreid_ssl",
    "resize_pos_embed",
    "split_stripes",
]
