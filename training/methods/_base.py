"""The ``ReIDMethod`` protocol and the types the Trainer and methods exchange (Contract 9).

One :class:`~vireid.training.engine.Trainer` runs every method (house-style §13–16). Per epoch it calls,
in order::

    method.on_stage_start(ctx)          # first epoch of each stage only (ctx.stage_epoch == 0)
    labels = method.refresh(ctx)        # features -> pseudo labels -> memories (+ association)
    for batch in method.epoch_batches(ctx):          # exactly ctx.stage.iters batches
        losses = method.training_step(batch, forward=ctx.forward)   # {"name": scalar, ..., "loss": total}
        losses["loss"].backward(); optimizer.step()
        method.after_backward()                       # explicit memory updates under no_grad

``ctx`` is a :class:`RefreshContext` built fresh for every epoch. All randomness a method needs comes
from ``ctx.seed`` (re-seeded per epoch, so a resumed run repeats an interrupted epoch exactly). Under
DDP every rank calls ``refresh`` on the same gathered features (identical labels on every rank) and
``epoch_batches`` yields the rank's shard of each global batch (:func:`shard_batch`); memory updates
must use :func:`all_gather_cat` so every rank applies the same update in the same order. A method ends
``refresh`` by taking rank 0's labels, association results and memories (:func:`broadcast_from_main`), so
every rank trains on exactly the same ones.

Methods import only ``vireid.training.engine._config`` from the engine (never the engine package),
which keeps the engine ↔ methods imports acyclic.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from vireid.training.engine._config import StageConfig, TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "MODALITIES",
    "DistInfo",
    "ExtractFn",
    "PseudoLabels",
    "ReIDMethod",
    "RefreshContext",
    "TrainForward",
    "all_gather_cat",
    "broadcast_from_main",
    "build_train_set",
    "shard_batch",
    "share_stem_init",
]

MODALITIES = ("visible", "infrared")

TrainForward = Callable[..., dict[str, Tensor]]
"""``forward(*args, **kwargs)`` = ``model.forward_train(*args, **kwargs)``, through DDP when distributed."""

ExtractFn = Callable[..., Tensor]
"""``extract(modality, *, flip=False) -> (N_m, D) float32`` CPU features of ``ctx.records[modality]``
(``model.extract`` per view, flip-averaged and re-normalised when ``flip``), gathered over ranks."""


@dataclass(frozen=True)
class DistInfo:
    """Process-group position: ``rank`` in ``[0, world_size)``; ``world_size`` 1 when not distributed."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


@dataclass(frozen=True)
class PseudoLabels:
    """Pseudo labels of one epoch, both modalities (what ``refresh`` returns).

    Attributes:
        labels: modality → (N_m,) int64 cluster ids in ``[0, K_m)``, −1 = outlier, aligned with
            ``ctx.records[modality]`` (sorted by path).
        cross_labels: modality → (N_m,) int64 labels in the *other* modality's label space
            (−1 = none); empty in intra-modality stages.
        extras: scalars worth logging (e.g. association agreement); not used by the engine.
    """

    labels: Mapping[str, np.ndarray]
    cross_labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    extras: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for modality, lab in self.labels.items():
            if modality not in MODALITIES:
                raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
            if np.asarray(lab).ndim != 1:
                raise ValueError(f"labels[{modality!r}] must be 1-D, got shape {np.shape(lab)}")

    def num_clusters(self, modality: str) -> int:
        """Number of distinct non-outlier labels of ``modality``."""
        lab = np.asarray(self.labels[modality])
        return int(np.unique(lab[lab >= 0]).size)

    def num_outliers(self, modality: str) -> int:
        """Number of samples labelled −1 in ``modality``."""
        return int((np.asarray(self.labels[modality]) < 0).sum())

    def outlier_fraction(self, modality: str) -> float:
        """Fraction of ``modality``'s samples that are outliers (1.0 for an empty modality)."""
        n = len(self.labels[modality])
        return 1.0 if n == 0 else self.num_outliers(modality) / n

    def summary(self) -> dict[str, float]:
        """Flat numbers for logging: ``clusters/<modality>``, ``outliers/<modality>`` and ``extras``."""
        out: dict[str, float] = {}
        for modality in self.labels:
            out[f"clusters/{modality}"] = float(self.num_clusters(modality))
            out[f"outliers/{modality}"] = float(self.num_outliers(modality))
        out.update({k: float(v) for k, v in self.extras.items()})
        return out


@dataclass(frozen=True)
class RefreshContext:
    """Everything a method sees for one epoch (built by the Trainer).

    Attributes:
        config: the root config (methods read their own part; library code below them gets explicit args).
        model: the raw (unwrapped) model, for ``extract``-style eval forwards and ``state_dict``.
        forward: the training forward to use in ``training_step`` (DDP-wrapped when distributed).
        extract: :data:`ExtractFn` over the training records.
        records: modality → training ``ImageRecord`` list, sorted by path (Contract 8).
        stage: the running stage; ``stage_index`` its position; ``stage_epoch`` the epoch within it.
        epoch: global 0-based epoch index over all stages.
        seed: this epoch's seed (derived from the run seed and ``epoch``; identical on all ranks).
        device: the training device.
        input_size: (H, W) training input size in pixels.
        memory_momentum: momentum override for this epoch (collapse guard), None = the configured one.
        dist: this process's rank / world size.
        num_workers: DataLoader workers for ``epoch_batches``.
    """

    config: TrainConfig
    model: nn.Module
    forward: TrainForward
    extract: ExtractFn
    records: Mapping[str, Sequence[Any]]
    stage: StageConfig
    stage_index: int
    stage_epoch: int
    epoch: int
    seed: int
    device: torch.device
    input_size: tuple[int, int]
    memory_momentum: float | None = None
    dist: DistInfo = field(default_factory=DistInfo)
    num_workers: int = 0

    def momentum(self, configured: float) -> float:
        """The memory momentum to use this epoch: the override if set, else ``configured``."""
        return configured if self.memory_momentum is None else self.memory_momentum

    def numpy_rng(self, salt: int = 0) -> np.random.Generator:
        """A NumPy generator seeded from this epoch's seed (and ``salt`` for independent streams)."""
        return np.random.default_rng([self.seed, salt])

    def torch_generator(self, salt: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded from this epoch's seed (and ``salt``)."""
        return torch.Generator().manual_seed(int(self.numpy_rng(salt).integers(0, 2**62)))


@runtime_checkable
class ReIDMethod(Protocol):
    """A training method run by the Trainer (house-style §13; docs/architecture.md Contract 9)."""

    name: str
    model: nn.Module

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups (``[{"params": [...]}, ...]``); LR/WD come from ``OptimConfig``."""
        ...

    def on_stage_start(self, ctx: RefreshContext) -> None:
        """Called before ``refresh`` on the first epoch of every stage (``ctx.stage_epoch == 0``).

        Not called when a run resumes in the middle of a stage: keep what must survive in ``state_dict``.
        """
        ...

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        """Extract features, cluster each modality, rebuild memories; returns this epoch's labels."""
        ...

    def epoch_batches(self, ctx: RefreshContext) -> Iterable[Any]:
        """Yield this rank's ``ctx.stage.iters`` training batches for the epoch (after ``refresh``)."""
        ...

    def training_step(self, batch: Any, *, forward: TrainForward) -> dict[str, Tensor]:
        """Named scalar losses plus ``"loss"`` (their weighted total, the one back-propagated)."""
        ...

    def after_backward(self) -> None:
        """Explicit memory updates under ``no_grad`` with the features of the last step (§0.4)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Method state to checkpoint (memories, association results); tensors on CPU preferred."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        ...


def shard_batch(indices: Sequence[int] | np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch.

    Contiguous slices concatenated in rank order give back the global batch, so gathering per-rank
    features with :func:`all_gather_cat` reproduces the single-process sample order (the order matters
    for sequential memory updates, methods.md §0.4).

    Args:
        indices: (B,) global batch of dataset indices.
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        (B / world_size,) int64 indices.

    Raises:
        ValueError: B is not divisible by ``world_size`` (unequal shards would bias DDP's gradient mean),
            or ``rank`` is out of range.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    if idx.shape[0] % world_size:
        raise ValueError(f"global batch of {idx.shape[0]} is not divisible by world size {world_size}")
    size = idx.shape[0] // world_size
    return idx[rank * size : (rank + 1) * size]


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (B, ...) from all ranks in rank order along dim 0 (identity when alone).

    Every rank must pass the same shape. The result carries no gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


T = TypeVar("T")


def broadcast_from_main(value: T, dist_info: DistInfo, device: torch.device) -> T:
    """Rank 0's ``value`` on every rank (identity when not distributed); all ranks must call it.

    Pseudo labels, association results and memories are computed on every rank (feature extraction is
    collective) but only rank 0's result is kept: this makes them identical on all ranks whatever the
    floating-point or RNG differences between processes (issue 11; docs/architecture.md "Multi-GPU").
    ``value`` is serialised with ``torch.save`` (tensors, modules, NumPy arrays, dataclasses; shared
    references are kept, e.g. one memory under two keys) and loaded on the other ranks with its tensors on
    ``device``. Rank 0 keeps its own object.

    Args:
        value: any ``torch.save``-able object.
        dist_info: this process's rank / world size.
        device: where the receiving ranks put the tensors.

    Returns:
        ``value`` on rank 0, rank 0's copy elsewhere.
    """
    if not dist_info.distributed:
        return value
    payload: list[Any] = [None]
    if dist_info.is_main:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        payload = [buffer.getvalue()]
    dist.broadcast_object_list(payload, src=0)
    if dist_info.is_main:
        return value
    loaded: T = torch.load(io.BytesIO(payload[0]), map_location=device, weights_only=False)
    return loaded


def build_train_set(
    ctx: RefreshContext,
    model: nn.Module,
    *,
    recipe: str,
    visible_labels: np.ndarray,
    infrared_labels: np.ndarray,
    salt: int,
    interpolation: str | None = None,
) -> Any:
    """The epoch's ``TrainSet`` over ``ctx.records`` with a method's augmentation recipe (methods.md §0.2).

    Input size comes from ``ctx.input_size``; mean/std and, unless ``interpolation`` is given, the resize
    interpolation come from ``model.default_cfg``. The augmentation seed is drawn from
    ``ctx.numpy_rng(salt + rank)``, so each method and rank gets its own reproducible stream.

    Args:
        ctx: Refresh context of the epoch (records, input size, RNG, rank, epoch).
        model: Model whose ``default_cfg`` gives the normalisation.
        recipe: Recipe name for ``vireid.training.data.build_recipe``.
        visible_labels: (N_v,) int64 training labels of the visible records (−1 = not trained on).
        infrared_labels: (N_r,) int64 training labels of the infrared records.
        salt: Per-method offset of the augmentation seed.
        interpolation: Resize interpolation override.
    """
    from vireid.training.data import AugmentConfig, TrainSet, build_recipe

    default_cfg: Mapping[str, Any] = getattr(model, "default_cfg", {})
    augment = AugmentConfig(
        height=ctx.input_size[0],
        width=ctx.input_size[1],
        interpolation=interpolation or str(default_cfg.get("interpolation", "bilinear")),
        mean=tuple(default_cfg.get("mean", AugmentConfig.mean)),
        std=tuple(default_cfg.get("std", AugmentConfig.std)),
    )
    dataset = TrainSet(
        transforms=build_recipe(recipe, augment).build(),
        visible=[r.path for r in ctx.records["visible"]],
        infrared=[r.path for r in ctx.records["infrared"]],
        visible_labels=visible_labels,
        infrared_labels=infrared_labels,
        seed=int(ctx.numpy_rng(salt + ctx.dist.rank).integers(2**31)),
    )
    dataset.set_epoch(ctx.epoch)
    return dataset


def share_stem_init(model: nn.Module) -> None:
    """Copy the visible stem's weights into the thermal stem of a two-stream model (``share_stem_init``).

    An ImageNet-initialised SALCR model starts with both stems equal (methods.md §A.1 loads the same weights
    into both); this gives a randomly initialised one the same property.

    Raises:
        ValueError: the model has no ``visible_stem`` / ``thermal_stem``.
    """
    visible, thermal = getattr(model, "visible_stem", None), getattr(model, "thermal_stem", None)
    if not isinstance(visible, nn.Module) or not isinstance(thermal, nn.Module):
        raise ValueError(
            "method_options.share_stem_init needs a two-stream model (visible_stem/thermal_stem)"
        )
    with torch.no_grad():
        thermal.load_state_dict(visible.state_dict())
    logger.info("share_stem_init: thermal stem initialised from the visible stem")
