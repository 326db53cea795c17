"""Evaluation: ranking metrics, benchmark protocols, test-time feature extraction and result pictures.

One copy of the field's metrics serves training callbacks, the ``vireid evaluate`` command and tests
(methods.md §C; house-style §19–20). Metric maths (:mod:`._metrics`, pure NumPy) is kept apart from the
feature-extraction loop (:mod:`._features`) and the protocols (:mod:`._protocols`, :mod:`._evaluate`).
"""

from vireid.training.evaluation._evaluate import (
    DEFAULT_TRIALS,
    SCHEMA_VERSION,
    evaluate_cross_modality,
    evaluate_model,
    merge_results,
    write_results_json,
)
from vireid.training.evaluation._features import (
    FeatureStore,
    RecordLike,
    default_eval_transform,
    extract_features,
    negative_dot_distance,
    resolve_device,
)
from vireid.training.evaluation._metrics import (
    RankResult,
    evaluate_llcm,
    evaluate_rank,
    evaluate_regdb,
    evaluate_sysu,
    mean_results,
    ranked_gallery,
    same_camera_mask,
    sysu_camera_mask,
)
from vireid.training.evaluation._plots import plot_cmc, plot_rank_list, select_queries
from vireid.training.evaluation._protocols import (
    DATASETS,
    LLCM_DIRECTIONS,
    REGDB_DIRECTIONS,
    SYSU_MODES,
    EvalSetting,
    Postprocess,
    camera_number,
    llcm_settings,
    regdb_settings,
    single_shot_gallery,
    sysu_settings,
)

__all__ = [
    "DATASETS",
    "DEFAULT_TRIALS",
    "LLCM_DIRECTIONS",
    "REGDB_DIRECTIONS",
    "SCHEMA_VERSION",
    "SYSU_MODES",
    "EvalSetting",
    "FeatureStore",
    "Postprocess",
    "RankResult",
    "RecordLike",
    "camera_number",
    "default_eval_transform",
    "evaluate_cross_modality",
    "evaluate_llcm",
    "evaluate_model",
    "evaluate_rank",
    "evaluate_regdb",
    "evaluate_sysu",
    "extract_features",
    "llcm_settings",
    "mean_results",
    "merge_results",
    "negative_dot_distance",
    "plot_cmc",
    "plot_rank_list",
    "ranked_gallery",
    "regdb_settings",
    "resolve_device",
    "same_camera_mask",
    "select_queries",
    "single_shot_gallery",
    "sysu_camera_mask",
    "sysu_settings",
    "write_results_json",
]
