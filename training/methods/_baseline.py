"""Baseline: per-modality cluster contrast with two visible views (ADCA / SALCR stage 1).

methods.md §A.4.4 stage 1 (and §E, the ADCA lineage)::

    L = CE(m_v(f_V), y_v) + CE(m_v(f_A), y_v) + CE(m_r(f_R), y_r)

* Every epoch (:meth:`BaselineMethod.refresh`), per modality separately: ``norm(extract(x))`` without
  flip (SALCR: ``norm(f_g)``) → Jaccard distance (k1, k2) → DBSCAN (eps, min_samples) (§0.3) → memory
  ``m`` ← ``norm(mean of the normalised features per cluster)`` (§A.3 items 3, 6).
* Batches (:meth:`BaselineMethod.epoch_batches`): the SALCR stage-1 paired sampler (P visible + P
  infrared clusters drawn independently, K images each, §A.2); visible images give a plain view V and an
  augmented view A with the same label, infrared images one view R.
* Memory updates (§0.4, ``cross=False``), per sample in batch order, with the detached features of the
  step; the logits see the step-start memory. ``memory.update_order: official`` (default) follows the
  official step, which builds ``CE(m_v(f_V))`` before ``CE(m_v(f_A))`` and updates ``m_v`` inside their
  backward: ``m_v`` takes the A rows first, then the V rows, and V's gradient is taken against ``m_v``
  already updated with A (:meth:`~vireid.training.memory.ClusterMemory.chained_losses`). ``pre_update``:
  both gradients on the step-start memory, then V rows, then A rows. The new memories are stored after
  the backward. Under DDP the rows are gathered from all ranks first (same order as a single process
  would use).

The baseline learns no cross-modality association: what transfers across modalities comes from the
shared trunk. It runs on either backbone: ``feature`` names the ``forward_train`` outputs whose
concatenation is trained (SALCR ``f_g``; SDCL ``f_d+f_s``, matching its ``extract``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vireid.training.engine._config import TrainConfig, config_from_dict
from vireid.training.memory import ClusterMemory, MemoryUse
from vireid.training.methods._base import (
    MODALITIES,
    PseudoLabels,
    RefreshContext,
    TrainForward,
    all_gather_cat,
    broadcast_from_main,
    build_train_set,
    shard_batch,
    share_stem_init,
)

__all__ = ["BaselineConfig", "BaselineMethod"]

logger = logging.getLogger(__name__)

_DEFAULT_FEATURE = {"salcr": "f_g", "sdcl": "f_d+f_s"}
_AUG_SALT = 1000


@dataclass(frozen=True)
class BaselineConfig:
    """``method_options`` of the baseline.

    Attributes:
        clusters_per_batch: P, clusters drawn per modality per step (SALCR: 12).
        num_instances: K, images per cluster (SALCR: 12); a step sees P·K visible (×2 views) + P·K infrared.
        recipe: augmentation recipe name of ``vireid.training.data.build_recipe``.
        feature: ``+``-joined ``forward_train`` keys to train (None = by backbone: salcr ``f_g``,
            sdcl ``f_d+f_s``).
        share_stem_init: at epoch 0, copy the visible stem into the thermal stem (two-stream models).
            An ImageNet-initialised SALCR model starts with both stems equal (§A.1 loads the weights
            into both); this gives a randomly initialised model the same property.
    """

    clusters_per_batch: int = 12
    num_instances: int = 12
    recipe: str = "salcr_stage1"
    feature: str | None = None
    share_stem_init: bool = False

    def __post_init__(self) -> None:
        if self.clusters_per_batch < 1 or self.num_instances < 1:
            raise ValueError("method_options.clusters_per_batch and num_instances must be >= 1")


class BaselineMethod:
    """The baseline :class:`~vireid.training.methods.ReIDMethod` (see the module docstring).

    Args:
        cfg: root config; reads ``cluster``, ``memory``, ``model.arch`` and ``method_options``.
        model: a Contract-1 model with ``forward_train(x_rgb, x_ir, ...)`` returning rows [V; A; R].

    Raises:
        KeyError / TypeError / ValueError: invalid ``method_options``.
    """

    name = "baseline"

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        self.cfg = cfg
        self.model = model
        self.options = config_from_dict(BaselineConfig, cfg.method_options, where="method_options")
        feature = self.options.feature or _DEFAULT_FEATURE.get(cfg.model.arch, "f_g")
        self.feature_keys = tuple(feature.split("+"))
        self.forward_kwargs: dict[str, Any] = {"with_parts": False} if cfg.model.arch == "salcr" else {}
        self.memories: dict[str, Any] = {}
        self.labels: PseudoLabels | None = None
        self._pending: list[tuple[ClusterMemory, Tensor]] = []

    # ------------------------------------------------------------------ protocol

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group with every trainable parameter (frozen BN-neck biases excluded)."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def on_stage_start(self, ctx: RefreshContext) -> None:
        """Epoch 0: optionally start the thermal stem as a copy of the visible stem (``share_stem_init``)."""
        if ctx.epoch == 0 and self.options.share_stem_init:
            share_stem_init(self.model)

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        """Cluster each modality and rebuild its cluster memory (methods.md §0.3, §A.3).

        Under DDP rank 0's labels and memories are kept on every rank (:func:`broadcast_from_main`).
        """
        from vireid.training.pseudo_labels import dbscan_pseudo_labels, jaccard_distance

        cl, momentum = self.cfg.cluster, ctx.momentum(self.cfg.memory.momentum)
        labels: dict[str, np.ndarray] = {}
        self.memories = {}
        for modality in MODALITIES:
            feats = ctx.extract(modality, flip=False)
            distance = jaccard_distance(feats, k1=cl.k1, k2=cl.k2)
            labels[modality] = dbscan_pseudo_labels(
                distance, cl.eps_for(modality), min_samples=cl.min_samples
            )
            if labels[modality].max(initial=-1) < 0:
                continue  # no cluster: the collapse guard (or epoch_batches) reports it
            self.memories[modality] = self._centroid_memory(feats, labels[modality], momentum, ctx.device)
        self.labels, self.memories = broadcast_from_main(
            (PseudoLabels(labels), self.memories), ctx.dist, ctx.device
        )
        return self.labels

    def _centroid_memory(
        self, feats: Tensor, labels: np.ndarray, momentum: float, device: torch.device
    ) -> ClusterMemory:
        """Cluster memory of the normalised centroids of the normalised ``feats`` (N, D) per label (§A.3)."""
        from vireid.training.pseudo_labels import cluster_centroids

        centroids = cluster_centroids(feats, labels, normalize_inputs=True)
        memory = ClusterMemory(
            nn.functional.normalize(centroids, dim=1),
            temperature=self.cfg.memory.temperature,
            momentum=momentum,
        )
        return memory.to(device)

    def epoch_batches(self, ctx: RefreshContext) -> Iterator[dict[str, Tensor]]:
        """``ctx.stage.iters`` batches of this rank's share of the stage-1 paired sampler (§A.2)."""
        from vireid.training.data import PairedSampler, collate_views, stage_one_indices

        if self.labels is None or set(self.memories) != set(MODALITIES):
            raise ValueError("no clusters in at least one modality: nothing to train on (see cluster.eps)")
        rgb, ir = stage_one_indices(
            self.labels.labels["visible"],
            self.labels.labels["infrared"],
            num_iterations=ctx.stage.iters,
            rng=ctx.numpy_rng(),
            clusters_per_batch=self.options.clusters_per_batch,
            num_instances=self.options.num_instances,
        )
        global_batch = self.options.clusters_per_batch * self.options.num_instances
        loader = DataLoader(
            self._train_set(ctx, self.labels),
            batch_size=global_batch // ctx.dist.world_size,
            sampler=PairedSampler(_shard(rgb, global_batch, ctx), _shard(ir, global_batch, ctx)),
            collate_fn=collate_views,
            num_workers=ctx.num_workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
        )
        return iter(loader)

    def _train_set(self, ctx: RefreshContext, labels: PseudoLabels) -> Any:
        return build_train_set(
            ctx,
            self.model,
            recipe=self.options.recipe,
            visible_labels=labels.labels["visible"],
            infrared_labels=labels.labels["infrared"],
            salt=_AUG_SALT,
        )

    def training_step(self, batch: Mapping[str, Tensor], *, forward: TrainForward) -> dict[str, Tensor]:
        """Losses ``loss_v`` (view V), ``loss_a`` (view A), ``loss_r`` (infrared) and their sum ``loss``."""
        device = self.memories["visible"].features.device
        v, a, r = (batch[k].to(device, non_blocking=True) for k in ("rgb", "rgb_aug", "ir"))
        y_v, y_r = batch["rgb_label"].to(device), batch["ir_label"].to(device)
        out = forward(torch.cat([v, a]), r, **self.forward_kwargs)
        feats = torch.cat([out[k] for k in self.feature_keys], dim=1).float()
        n = v.shape[0]
        f_v, f_a, f_r = feats[:n], feats[n : 2 * n], feats[2 * n :]
        y_v_all, y_r_all = all_gather_cat(y_v), all_gather_cat(y_r)
        visible = [  # in the official construction order: V, then A
            MemoryUse(f_v, y_v, all_gather_cat(f_v.detach()), y_v_all),
            MemoryUse(f_a, y_v, all_gather_cat(f_a.detach()), y_v_all),
        ]
        order = self.cfg.memory.update_order
        (loss_v, loss_a), bank_v = self.memories["visible"].chained_losses(visible, update_order=order)
        (loss_r,), bank_r = self.memories["infrared"].chained_losses(
            [MemoryUse(f_r, y_r, all_gather_cat(f_r.detach()), y_r_all)], update_order=order
        )
        losses = {"loss_v": loss_v, "loss_a": loss_a, "loss_r": loss_r}
        losses["loss"] = losses["loss_v"] + losses["loss_a"] + losses["loss_r"]
        self._pending = [(self.memories["visible"], bank_v), (self.memories["infrared"], bank_r)]
        return losses

    def after_backward(self) -> None:
        """Store the memories the last step's updates produced (§0.4, ``memory.update_order``)."""
        for memory, bank in self._pending:
            memory.assign(bank)
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        """The memories (tensors) and this epoch's labels (tensors), for checkpoints."""
        return {
            "memories": {m: mem.features.detach().cpu().clone() for m, mem in self.memories.items()},
            "labels": {
                m: torch.from_numpy(np.asarray(y))
                for m, y in (self.labels.labels if self.labels else {}).items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore memories and labels (the next ``refresh`` rebuilds both anyway)."""
        momentum, temperature = self.cfg.memory.momentum, self.cfg.memory.temperature
        self.memories = {}
        for modality, feats in state.get("memories", {}).items():
            memory = ClusterMemory(feats, temperature=temperature, momentum=momentum).to(self._device())
            with torch.no_grad():
                memory.features.copy_(feats)  # bit-exact (the constructor may re-normalise)
            self.memories[modality] = memory
        labels = {m: y.numpy().copy() for m, y in state.get("labels", {}).items()}
        self.labels = PseudoLabels(labels) if labels else None

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def _shard(indices: np.ndarray, global_batch: int, ctx: RefreshContext) -> np.ndarray:
    """This rank's contiguous share of every global batch of a flat per-epoch index array."""
    batches = indices.reshape(-1, global_batch)
    return np.concatenate([shard_batch(b, ctx.dist.rank, ctx.dist.world_size) for b in batches])
