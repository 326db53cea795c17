"""Model architectures for SALCR and SDCL, their factory and pretrained-weight loaders (Contract 1).

``build_model(method, *, variant="full", pretrained=None, input_size=None)`` returns an ``nn.Module`` with
``default_cfg``, ``extract(x, modality)`` and ``export_module(modality)``; see docs/architecture.md.
"""

from ._common import IMAGENET_MEAN, IMAGENET_STD, MODALITIES, ReIDModel
from ._factory import MODEL_METHODS, MODEL_VARIANTS, build_model
from ._mobilenet_v2 import MOBILE_VARIANTS, MobileNetV2Config, MobileSDCL, TwoStreamMobileNetV2
from ._resnet_two_stream import (
    SALCR_VARIANTS,
    TwoStreamResNet50,
    TwoStreamResNetConfig,
    gem_pool,
    split_stripes,
)
from ._vit_ics import SDCL_VARIANTS, SDCLTrainOutput, ViTICS, ViTICSConfig
from ._weights import (
    IMAGENET,
    LoadReport,
    load_mobilenetv2_imagenet,
    load_resnet50_imagenet,
    load_transreid_ssl,
    packaged_imagenet_weights,
    resize_pos_embed,
)

__all__ = [
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILE_VARIANTS",
    "MODALITIES",
    "MODEL_METHODS",
    "MODEL_VARIANTS",
    "SALCR_VARIANTS",
    "SDCL_VARIANTS",
    "LoadReport",
    "MobileNetV2Config",
    "MobileSDCL",
    "ReIDModel",
    "SDCLTrainOutput",
    "TwoStreamMobileNetV2",
    "TwoStreamResNet50",
    "TwoStreamResNetConfig",
    "ViTICS",
    "ViTICSConfig",
    "build_model",
    "gem_pool",
    "load_mobilenetv2_imagenet",
    "load_resnet50_imagenet",
    "load_transreid_ssl",
    "packaged_imagenet_weights",
    "resize_pos_embed",
    "split_stripes",
]
