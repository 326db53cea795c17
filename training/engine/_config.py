"""Training configuration: frozen dataclasses per concern, YAML + dotted overrides, validation.

The root is :class:`TrainConfig` (house-style §6–9). It is built once at start-up by :func:`load_config`
from a YAML file plus ``key=value`` overrides (``cluster.eps=0.6``, ``stages.0.epochs=3``), validated
(unknown keys raise ``KeyError`` listing the valid ones, wrong types raise ``TypeError``), and written
resolved into the run directory with :func:`save_config`. Validation runs through pydantic models generated
from the dataclasses (:func:`config_model`); its errors are re-raised as ``KeyError`` / ``TypeError`` that
name the bad key. Values found at run time (cluster counts,
collapse-guard retries) are trainer state and never written back here.

Each method validates its own ``method_options`` mapping into its own dataclass with
:func:`config_from_dict` (e.g. ``BaselineConfig``, later ``SALCRConfig``/``SDCLConfig``).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
)

__all__ = [
    "CheckpointConfig",
    "ClusterConfig",
    "CollapseConfig",
    "DataConfig",
    "EvalConfig",
    "LoggingConfig",
    "MemoryConfig",
    "ModelConfig",
    "OptimConfig",
    "StageConfig",
    "SyntheticDataConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_model",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "save_config",
]

T = TypeVar("T")

DATASETS = ("synthetic", "camera_folders", "sysu", "regdb")


@dataclass(frozen=True)
class SyntheticDataConfig:
    """Options of ``vireid.training.data.generate_synthetic`` when the synthetic set is generated."""

    num_identities: int = 40
    visible_cameras: int = 2
    infrared_cameras: int = 2
    images_per_camera: int = 4
    size: tuple[int, int] = (128, 64)
    test_fraction: float = 0.25
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Training data (methods.md §0.1). The input size is always the model's ``default_cfg`` one, so
    training, evaluation and the exported manifest agree.

    Attributes:
        dataset: ``synthetic`` (generated into ``<run_dir>/data/synthetic`` when ``root`` is None or
            absent), ``camera_folders`` (unlabeled camera data, Contract 8), ``sysu`` (train + val ids)
            or ``regdb`` (split ``trial``).
        root: dataset folder; required except for ``synthetic``.
        trial: RegDB split 1..10.
        num_workers: DataLoader worker processes.
        extract_batch_size: batch size of the per-epoch feature extraction.
        cameras: camera → modality mapping for ``camera_folders`` (None = ``ROOT/cameras.yaml``).
        synthetic: generator options for ``synthetic``.
    """

    dataset: str = "synthetic"
    root: str | None = None
    trial: int = 1
    num_workers: int = 0
    extract_batch_size: int = 64
    cameras: dict[str, str] | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"data.root is required for dataset {self.dataset!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone (Contract 1): ``arch`` in {salcr, sdcl}, ``variant`` in {full, tiny, mobile}, weights.

    Attributes:
        arch: ``salcr`` (two-stream ResNet-50, methods.md §A.1) or ``sdcl`` (ViT ICS, §B.1).
        variant: ``full``, ``tiny`` or ``mobile`` (MobileNetV2 backbone of either method).
        pretrained: ``imagenet`` (the ImageNet MobileNetV2 packaged in the ``train`` extra; ``mobile`` only)
            or local backbone weights (ImageNet ResNet-50 for salcr, TransReID-SSL for sdcl, an ImageNet
            MobileNetV2 ``features`` state dict for mobile).
        init_from: a vireid training checkpoint (Contract 7, e.g. ``<run>/checkpoints/last.pt``) of the same
            ``arch`` and ``variant`` whose model weights start this run: adapt a trained model to new
            cameras without labels, or start from a supervised source model. Only the weights are taken
            (optimizer, schedule and method state start fresh); ``--resume`` still wins over it.
            Mutually exclusive with ``pretrained``.
        input_size: [H, W] in pixels instead of the variant's own (e.g. [144, 72] for the CPU presets);
            training, evaluation, checkpoints and the exported manifest all follow it.
    """

    arch: str = "salcr"
    variant: str = "full"
    pretrained: str | None = None
    init_from: str | None = None
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.pretrained and self.init_from:
            raise ValueError("model.pretrained and model.init_from are mutually exclusive: set one of them")


@dataclass(frozen=True)
class ClusterConfig:
    """Jaccard + DBSCAN parameters (methods.md §0.3).

    ``eps_infrared``: DBSCAN eps of the infrared modality when it should differ from ``eps`` (None = the
    same; the official code uses one eps). Grey infrared crops are more alike than colour ones, so one eps
    can over-segment the visible and under-segment the infrared clusters (docs/benchmarks.md, learning).
    """

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    eps_infrared: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("eps", self.eps), ("eps_infrared", self.eps_infrared)):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"cluster.{name} must be in (0, 1), got {value}")
        if self.min_samples < 1 or self.k1 < 2 or self.k2 < 1:
            raise ValueError("cluster.min_samples >= 1, cluster.k1 >= 2 and cluster.k2 >= 1 are required")

    def eps_for(self, modality: str) -> float:
        """DBSCAN eps of ``modality`` (``eps_infrared`` for infrared when set, else ``eps``)."""
        return self.eps_infrared if modality == "infrared" and self.eps_infrared is not None else self.eps


MEMORY_UPDATE_ORDERS = ("official", "pre_update")


@dataclass(frozen=True)
class MemoryConfig:
    """Cluster-memory parameters (methods.md §0.4): ``c ← norm(m·c + (1−m)·x)``, logits / τ.

    ``update_order``: ``official`` (default, every preset) reproduces the official training step, where a
    memory used by several loss terms is updated inside autograd's backward, last-built term first, and
    each earlier term's gradient sees the memory the later terms already updated; SDCL's instance memories
    are updated before the backward and its neighbour-loss gradients read the updated banks.
    ``pre_update``: every gradient on the step-start memories, all updates after the backward in the order
    the terms are built (vireid's earlier order). docs/salcr.md and docs/sdcl.md "Memory update order";
    ``vireid.training.memory``.
    """

    momentum: float = 0.1
    temperature: float = 0.05
    update_order: str = "official"

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0 or self.temperature <= 0.0:
            raise ValueError("memory.momentum must be in [0, 1) and memory.temperature > 0")
        if self.update_order not in MEMORY_UPDATE_ORDERS:
            raise ValueError(
                f"memory.update_order must be one of {list(MEMORY_UPDATE_ORDERS)}, got {self.update_order!r}"
            )


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and per-epoch LR schedule (methods.md §A.5, §B.5).

    ``schedule``: ``multistep`` (×gamma at each epoch in ``milestones``), ``step`` (×gamma every
    ``step_size`` epochs) or ``constant``. Epochs count over the whole run (all stages).
    ``warmup_epochs`` > 0 ramps linearly from ``lr / warmup_epochs`` (neither paper uses warm-up).
    Run as ``torch.optim.lr_scheduler`` objects (``MultiStepLR`` / ``StepLR`` / ``ConstantLR``, chained
    with ``LinearLR`` for the warm-up) whose state is checkpointed
    (``vireid.training.engine.build_lr_scheduler``).
    """

    name: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (20, 40)
    step_size: int = 20
    gamma: float = 0.1
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.name not in ("adam", "sgd"):
            raise ValueError(f"optim.name must be 'adam' or 'sgd', got {self.name!r}")
        if self.schedule not in ("multistep", "step", "constant"):
            raise ValueError(f"optim.schedule must be multistep|step|constant, got {self.schedule!r}")
        if self.lr <= 0 or self.step_size < 1:
            raise ValueError("optim.lr must be > 0 and optim.step_size >= 1")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: ``epochs`` epochs of ``iters`` steps; ``options`` are method-specific.

    ``reset_optimizer``: at the start of the stage's first epoch, drop the optimizer's per-parameter state
    (Adam moments and step counts, SGD momentum buffers), as a fresh optimizer would start, e.g. SALCR's
    official stage 2 (methods.md §A.5). Parameter groups, weight decay and the per-epoch LR schedule are
    unchanged. A run resumed later in the stage does not reset again. Default ``False``: the state carries
    over from the previous stage (SDCL, §B.4.3).
    """

    name: str = "main"
    epochs: int = 1
    iters: int = 100
    options: dict[str, Any] = field(default_factory=dict)
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.iters < 1:
            raise ValueError(f"stage {self.name!r}: epochs and iters must be >= 1")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name) or self.name == "last":
            raise ValueError(
                f"stage name {self.name!r} names the checkpoint <name>.pt: use letters, digits, '_', '.', "
                "'-' (not 'last')"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation callback.

    ``every`` epochs (0 = never; the last epoch is always evaluated when > 0). Synthetic/camera
    folders with identities: held-out identities, infrared query → visible gallery. SYSU: the test
    protocol on ``root`` (skipped when None), ``mode`` all|indoor|both, ``trials`` gallery trials.
    """

    every: int = 1
    root: str | None = None
    mode: str = "all"
    trials: int = 10
    batch_size: int = 64
    flip: bool = True
    plots: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    """``last.pt`` after every epoch; ``epoch_XXXX.pt`` copies every ``keep_every`` epochs (0 = none);
    ``<stage name>.pt`` after the last epoch of each stage (always)."""

    keep_every: int = 0


@dataclass(frozen=True)
class CollapseConfig:
    """First-epoch-collapse guard (methods.md §B.3: SDCL README's momentum 0.9/0.99 trick).

    Collapse = non-finite loss, fewer than ``min_clusters`` clusters in a modality,
    ≥ ``max_outlier_fraction`` outliers, or a drop of more than ``max_cluster_drop`` (fraction) in a
    modality's cluster count from one epoch to the next, watched only after the first ``watch_epochs``
    epochs (the known collapse happens there; later, counts legitimately shrink as clusters merge).
    Recovery: restore the state of the epoch that collapsed and re-run it with memory momentum
    ``momenta[i]`` for attempt i; attempts beyond ``len(momenta)`` keep the last momentum and also
    multiply the LR by ``lr_factor``. At most ``max_retries`` re-runs per epoch.
    """

    enabled: bool = True
    min_clusters: int = 2
    max_outlier_fraction: float = 0.99
    max_cluster_drop: float = 0.5
    watch_epochs: int = 2
    momenta: tuple[float, ...] = (0.9, 0.99)
    lr_factor: float = 0.1
    max_retries: int = 3


@dataclass(frozen=True)
class LoggingConfig:
    """TensorBoard (``<run_dir>/tb``) and the console progress bar."""

    tensorboard: bool = True
    progress: bool = True
    log_every: int = 10


@dataclass(frozen=True)
class TrainConfig:
    """Root training configuration (house-style §6).

    ``method`` names an entry of ``vireid.training.methods.METHODS``; ``method_options`` is validated
    by that method into its own dataclass. ``stages`` run in order by one Trainer (house-style §16).
    ``precision``: ``fp32``, or ``bf16`` for bf16 autocast of the training step and SDCL's per-epoch
    extraction, on CUDA and on CPU (other devices are refused when the run starts;
    ``vireid.training._precision``). Evaluation and export always run fp32.
    """

    method: str = "baseline"
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 1
    device: str = "auto"
    precision: str = "fp32"
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not self.stages:
            raise ValueError("at least one stage is required")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")

    @property
    def total_epochs(self) -> int:
        """Number of epochs over all stages."""
        return sum(s.epochs for s in self.stages)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass with validation (pydantic models generated from the dataclasses)


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``3.5e-4`` as a string: accept a float-looking string for a float field."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_SCALARS: dict[Any, Any] = {
    int: StrictInt,
    bool: StrictBool,
    str: StrictStr,
    float: Annotated[StrictFloat, BeforeValidator(_yaml_float)],
}
_MODELS: dict[type, type[BaseModel]] = {}
_EXPECTED = {
    "int": "int",
    "bool": "bool",
    "float": "float",
    "string": "str",
    "tuple": "a list",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}


def _field_type(tp: Any) -> Any:
    """The pydantic annotation of a dataclass field annotation: strict scalars (no str → int, no
    bool → int; int → float allowed), lists for tuples, a generated model for a nested dataclass."""
    if tp is Any:
        return Any
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return config_model(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [_field_type(a) for a in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[_field_type(args[0]), ...]  # type: ignore[misc]
        return tuple[tuple(_field_type(a) for a in args)]  # type: ignore[misc]
    if origin is dict:
        return dict[_field_type(args[0]), _field_type(args[1])]  # type: ignore[misc]
    if tp in _SCALARS or tp is type(None):
        return _SCALARS.get(tp, tp)
    raise TypeError(f"unsupported config annotation {tp!r}")


def config_model(cls: type) -> type[BaseModel]:
    """The pydantic model validating the mapping form of config dataclass ``cls`` (cached).

    Fields keep the dataclass's names and defaults; unknown keys are forbidden (``extra="forbid"``).
    The dataclass itself stays the config object: :func:`config_from_dict` validates with this model and
    then builds ``cls``, whose ``__post_init__`` checks the values.
    """
    if cls not in _MODELS:
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {f.name: (_field_type(hints[f.name]), None) for f in dataclasses.fields(cls)}
        _MODELS[cls] = create_model(f"{cls.__name__}Model", __config__=ConfigDict(extra="forbid"), **fields)
    return _MODELS[cls]


def _to_dataclass(cls: type[T], model: BaseModel) -> T:
    """Build ``cls`` from a validated model, passing only the keys the input had (defaults stay)."""
    hints = typing.get_type_hints(cls)
    kwargs = {name: _to_value(getattr(model, name), hints[name]) for name in model.model_fields_set}
    return cls(**kwargs)


def _to_value(value: Any, tp: Any) -> Any:
    if isinstance(value, BaseModel):
        target = next(c for c, m in _MODELS.items() if isinstance(value, m))
        return _to_dataclass(target, value)
    if isinstance(value, tuple):
        args = typing.get_args(tp) or (Any,)
        return tuple(_to_value(v, args[0] if args[-1] is Ellipsis or len(args) == 1 else Any) for v in value)
    return value


def _optional_inner(tp: Any) -> Any:
    """``X`` for ``X | None``; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _walk(cls: Any, loc: Sequence[Any]) -> tuple[list[str], Any]:
    """The readable path of a pydantic error location and the dataclass that holds its last key."""
    path: list[str] = []
    node: Any = cls
    holder: Any = cls
    for part in loc:
        if isinstance(node, type) and dataclasses.is_dataclass(node):
            holder, hints = node, typing.get_type_hints(node)
            if part in hints:
                path.append(str(part))
                node = _optional_inner(hints[part])
            continue  # anything else is a union tag of pydantic's
        origin, args = typing.get_origin(node), typing.get_args(node)
        if origin is tuple and isinstance(part, int):
            path.append(str(part))
            element = args[0] if args[-1] is Ellipsis else args[min(part, len(args) - 1)]
            node = _optional_inner(element)
        elif origin is dict or node is Any:
            path.append(str(part))
            node = _optional_inner(args[1]) if origin is dict else Any
    if isinstance(node, type) and dataclasses.is_dataclass(node):
        holder = node
    return path, holder


def _config_error(cls: type, exc: ValidationError, where: str) -> Exception:
    """A ``KeyError`` (unknown keys, listing the valid ones) or ``TypeError`` naming the bad key."""
    prefix = f"{where}." if where else ""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        path, holder = _walk(cls, extra[0]["loc"][:-1])
        unknown = [prefix + ".".join([*path, str(e["loc"][-1])]) for e in extra]
        parent = ".".join(p for p in (where, *path) if p) or cls.__name__
        valid = sorted(f.name for f in dataclasses.fields(holder))
        return KeyError(f"unknown config key(s) {unknown}; valid keys under {parent!r}: {valid}")
    first = errors[0]
    path, _ = _walk(cls, first["loc"])
    kind = str(first["type"]).removesuffix("_type").removesuffix("_parsing")
    value = first.get("input")
    if kind not in _EXPECTED:  # e.g. a list of the wrong length: pydantic's own words
        return TypeError(f"{prefix}{'.'.join(path)}: {first['msg']}, got {value!r}")
    return TypeError(
        f"{prefix}{'.'.join(path)}: expected {_EXPECTED[kind]}, got {type(value).__name__} {value!r}"
    )


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build and validate a config dataclass from a mapping (pydantic, :func:`config_model`).

    Lists become tuples, ints become floats and float-looking strings (YAML 1.1's ``3.5e-4``) become floats;
    nothing else is coerced (no ``"1"`` → 1, no ``true`` → 1).

    Args:
        cls: a dataclass type (e.g. :class:`TrainConfig` or a method's own config).
        data: the values; missing keys take the dataclass defaults.
        where: dotted prefix used in error messages (e.g. ``"method_options"``).

    Returns:
        The frozen dataclass instance.

    Raises:
        KeyError: an unknown key (the message names it and lists the valid keys).
        TypeError: a value of the wrong type (the message names the key, e.g. ``cluster.k1``).
        ValueError: a value rejected by the dataclass's own checks.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    try:
        model = config_model(cls).model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(cls, exc, where) from None
    return _to_dataclass(cls, model)


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML-safe structure of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    return cfg


# --------------------------------------------------------------------------------------------------
# overrides and files


def parse_overrides(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML (``3.5e-4``, ``[20, 40]``, ``null``).

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        value = yaml.safe_load(raw) if raw.strip() else ""
        parsed.append((key.strip().split("."), value))
    return parsed


def _set_path(tree: Any, path: list[str], value: Any, full: str) -> None:
    node = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"override {full!r}: {part!r} is not an index of a {len(node)}-item list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise KeyError(f"override {full!r}: {part!r} is a value, not a section")


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of the raw config ``tree`` with dotted ``key=value`` overrides applied."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    if "stages" not in tree and any(item.startswith("stages.") for item in overrides):
        tree["stages"] = config_to_dict(TrainConfig().stages)
    for path, value in parse_overrides(overrides):
        _set_path(tree, path, value, ".".join(path))
    return tree


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a YAML config, apply overrides and validate.

    Args:
        path: YAML file (None = defaults only).
        overrides: ``key.sub=value`` strings (``stages.0.epochs=2`` indexes the stage list).

    Returns:
        The validated :class:`TrainConfig`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError: unknown keys; TypeError / ValueError: invalid values.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise TypeError(f"{path}: the top level must be a mapping")
    return config_from_dict(TrainConfig, apply_overrides(tree, overrides))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (the run directory's ``config.yaml``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
