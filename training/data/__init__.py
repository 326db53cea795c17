"""Training data layer: dataset readers, synthetic generator, augmentations and samplers.

Readers (docs/architecture.md Contract 8) return ``list[ImageRecord]`` sorted by path; test-side helpers
return ``(query, gallery)`` in protocol order. ``eval_transform`` is Contract 2. Augmentation recipes and
samplers follow methods.md §0.2, §A.2 and §B.2.
"""

from vireid.training.data._camera_folders import (
    camera_folders,
    read_cameras_yaml,
    read_identities,
    read_split,
    write_cameras_yaml,
)
from vireid.training.data._eval import EvalTransform, ImageLoadError, eval_transform, load_image
from vireid.training.data._linear_transform import LinearTransform, linear_transform
from vireid.training.data._llcm import llcm, llcm_test
from vireid.training.data._recipes import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPE_NAMES,
    STEP_TYPES,
    AugmentConfig,
    Recipe,
    Step,
    ViewTransform,
    ViewTransforms,
    build_recipe,
)
from vireid.training.data._records import ImageRecord, Modality, normalize_modality
from vireid.training.data._regdb import regdb, regdb_test
from vireid.training.data._samplers import (
    CameraAwarePKSampler,
    IterLoader,
    PairedSampler,
    camera_aware_pk_indices,
    eligible_anchors,
    group_by_label,
    stage_one_indices,
    stage_two_indices,
)
from vireid.training.data._synthetic import SyntheticDataset, generate_synthetic, synthetic_modality_pairs
from vireid.training.data._sysu import read_sysu_ids, sysu_mm01, sysu_mm01_test
from vireid.training.data._trainset import VIEWS, TrainSet, collate_views
from vireid.training.data._transforms import (
    ChannelAdapGray,
    ChannelExchange,
    ChannelRandomErasing,
    ColorJitter,
    Normalize,
    Pad,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    grayscale,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECIPE_NAMES",
    "STEP_TYPES",
    "VIEWS",
    "AugmentConfig",
    "CameraAwarePKSampler",
    "ChannelAdapGray",
    "ChannelExchange",
    "ChannelRandomErasing",
    "ColorJitter",
    "EvalTransform",
    "ImageLoadError",
    "ImageRecord",
    "IterLoader",
    "LinearTransform",
    "Modality",
    "Normalize",
    "Pad",
    "PairedSampler",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Recipe",
    "Resize",
    "Step",
    "SyntheticDataset",
    "ToTensor",
    "TrainSet",
    "ViewTransform",
    "ViewTransforms",
    "build_recipe",
    "camera_aware_pk_indices",
    "camera_folders",
    "collate_views",
    "eligible_anchors",
    "eval_transform",
    "generate_synthetic",
    "grayscale",
    "group_by_label",
    "linear_transform",
    "llcm",
    "llcm_test",
    "load_image",
    "normalize_modality",
    "read_cameras_yaml",
    "read_identities",
    "read_split",
    "read_sysu_ids",
    "regdb",
    "regdb_test",
    "stage_one_indices",
    "stage_two_indices",
    "synthetic_modality_pairs",
    "sysu_mm01",
    "sysu_mm01_test",
    "write_cameras_yaml",
]
