"""Training engine: config dataclasses, the Trainer and its callbacks, checkpoints (Contract 7).

``train(cfg, run_dir=...)`` builds everything from a :class:`TrainConfig`; ``load_model_from_checkpoint``
is what export and evaluation use to read a trained model back.
"""

from vireid.training.engine._callbacks import (
    Checkpoint,
    CollapseGuard,
    EvaluateFn,
    Evaluation,
    Logging,
    LRSchedule,
    lr_factor,
)
from vireid.training.engine._checkpoint import (
    FORMAT_VERSION,
    atomic_torch_save,
    capture_rng_state,
    epoch_seed,
    load_checkpoint,
    load_model_from_checkpoint,
    restore_rng_state,
    seed_everything,
)
from vireid.training.engine._config import (
    CheckpointConfig,
    ClusterConfig,
    CollapseConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    MemoryConfig,
    ModelConfig,
    OptimConfig,
    StageConfig,
    SyntheticDataConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)
from vireid.training.engine._data import TrainData, make_evaluator, make_extractor, prepare_data
from vireid.training.engine._dist import shard_range
from vireid.training.engine._run import build_optimizer, build_trainer, last_checkpoint, train
from vireid.training.engine._trainer import Callback, NonFiniteLossError, RestartEpoch, Trainer, TrainerState

__all__ = [
    "FORMAT_VERSION",
    "Callback",
    "Checkpoint",
    "CheckpointConfig",
    "ClusterConfig",
    "CollapseConfig",
    "CollapseGuard",
    "DataConfig",
    "EvalConfig",
    "EvaluateFn",
    "Evaluation",
    "LRSchedule",
    "Logging",
    "LoggingConfig",
    "MemoryConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "RestartEpoch",
    "StageConfig",
    "SyntheticDataConfig",
    "TrainConfig",
    "TrainData",
    "Trainer",
    "TrainerState",
    "apply_overrides",
    "atomic_torch_save",
    "build_optimizer",
    "build_trainer",
    "capture_rng_state",
    "config_from_dict",
    "config_to_dict",
    "epoch_seed",
    "last_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_model_from_checkpoint",
    "lr_factor",
    "make_evaluator",
    "make_extractor",
    "parse_overrides",
    "prepare_data",
    "restore_rng_state",
    "save_config",
    "seed_everything",
    "shard_range",
    "train",
]
