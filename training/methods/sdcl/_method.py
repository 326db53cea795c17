"""SDCL: Shallow-Deep Collaborative Learning (CVPR 2024) on the shared training core (methods.md §B).

Per epoch (:meth:`SDCLMethod.refresh`, §B.3):

1. Raw flip-averaged ``f_d``, ``f_s`` of every training image, per modality (own patch embedding).
2. Per modality: ``norm([f_d; f_s])`` → Jaccard (IR ``cluster.k1``; visible the stage's ``rgb_k1``) → DBSCAN.
3. Instance memories ``I^{m,d}``, ``I^{m,s}`` = normalised raw features of all images, outliers included
   (EMA 0.9 with the raw features).
4. Stage ``intra``: four cluster memories ``C^{m,x}`` = norm(centroids of the raw features).
   Stage ``cross``: CRA (§B.4.2) maps visible images into the infrared label space and one shared memory
   per depth is built from the visible (CRA-labelled, DBSCAN outliers included) and infrared members.
   If CRA labels no visible image at all (an untrained model; the reference would stop on an empty loader),
   the epoch falls back to the stage-1 memories with a warning (``cra/fallback_intra`` in the log).

Per step (:meth:`SDCLMethod.training_step`, §B.4.1): ``L = L_cc + w_hom·L_hom + w_het·L_het``. The
instance memories (raw features, per sample) and the cluster memories (normalised features, per sample)
are updated in batch order, and the new banks are stored after the backward
(:meth:`SDCLMethod.after_backward`). With ``memory.update_order: official`` (default) the gradients follow
the official step: the neighbour losses' gradients are taken against the *updated* instance banks (the
official code updates them before ``loss.backward()`` while the loss holds them by reference), and a
stage-2 shared cluster memory is updated with the visible rows first, the infrared gradient seeing that
updated memory (:meth:`SDCLMethod._cluster_terms`). Loss values, neighbour masks and logits always use the
step-start memories. Both memory kinds are the shared :mod:`vireid.training.memory` ones
(``ClusterMemory``, ``InstanceMemory(momentum=0.9)``).

Stage switch (§B.4.3) in :meth:`SDCLMethod.on_stage_start`: the ``reload`` stage option (``last`` by
default; ``best_unsupervised``; ``checkpoint:PATH`` for the authors' test-set selection). The optimizer
state is kept, as in the official code (§B.4.3; the presets set the stage's ``reset_optimizer: false``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vireid.training.engine._config import TrainConfig, config_from_dict
from vireid.training.memory import ClusterMemory, InstanceMemory, MemoryUse
from vireid.training.methods._base import (
    MODALITIES,
    PseudoLabels,
    RefreshContext,
    TrainForward,
    all_gather_cat,
    broadcast_from_main,
    build_train_set,
)
from vireid.training.methods.sdcl._cnl import CNLSchedule, joint_neighbor_mask, neighbor_loss
from vireid.training.methods.sdcl._config import SDCLConfig, SDCLStageConfig
from vireid.training.methods.sdcl._cra import collaborative_ranking_association, cra_agreement
from vireid.training.methods.sdcl._features import (
    RawFeatures,
    enable_activation_checkpointing,
    extract_raw_features,
)
from vireid.training.methods.sdcl._sampling import pk_stream, shard_stream

__all__ = ["SDCLMethod"]

logger = logging.getLogger(__name__)

DEPTHS = ("deep", "shallow")
_SAMPLER_SALT = 11
_AUG_SALT = 1000


_CC_TERMS = {
    # the official trainer builds the cluster terms IR-shallow, V-shallow, IR-deep, V-deep
    "official": (("infrared", "shallow"), ("visible", "shallow"), ("infrared", "deep"), ("visible", "deep")),
    # vireid's earlier update order (all gradients on the step-start memories)
    "pre_update": (
        ("infrared", "deep"),
        ("visible", "deep"),
        ("visible", "shallow"),
        ("infrared", "shallow"),
    ),
}


def _key(modality: str, depth: str) -> str:
    return f"{modality}/{depth}"


class SDCLMethod:
    """The SDCL :class:`~vireid.training.methods.ReIDMethod` (see the module docstring).

    Args:
        cfg: root config; reads ``cluster``, ``memory``, ``precision``, ``data.extract_batch_size``,
            ``method_options`` (:class:`SDCLConfig`), every ``stages[i].options`` (:class:`SDCLStageConfig`).
        model: the SDCL ``ViTICS`` (``build_model("sdcl", ...)``).

    Raises:
        ValueError: ``model.arch`` is not ``sdcl`` or an option is invalid; KeyError / TypeError: bad options.
    """

    name = "sdcl"

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        if cfg.model.arch != "sdcl":
            raise ValueError(
                f"method sdcl needs model.arch 'sdcl' (the ViT-ICS backbone), got {cfg.model.arch!r}"
            )
        self.cfg = cfg
        self.model = model
        self.options = config_from_dict(SDCLConfig, cfg.method_options, where="method_options")
        self.stage_options = tuple(
            config_from_dict(SDCLStageConfig, stage.options, where=f"stages.{i}.options")
            for i, stage in enumerate(cfg.stages)
        )
        self.schedule = CNLSchedule(
            hom_start=self.options.hom_start,
            het_start=self.options.het_start,
            rgb_to_ir_scale=self.options.het_rgb_to_ir_scale,
        )
        if self.options.grad_checkpointing:
            enable_activation_checkpointing(model)
        self._track_best = any(s.reload == "best_unsupervised" for s in self.stage_options)
        self.cluster_memories: dict[str, ClusterMemory] = {}
        self.instance_memories: dict[str, InstanceMemory] = {}
        self.train_labels: dict[str, np.ndarray] = {}
        self.labels: PseudoLabels | None = None
        self.best: dict[str, Any] | None = None
        self._epoch = 0
        self._stage = self.stage_options[0]
        self._pending: list[tuple[ClusterMemory | InstanceMemory, Tensor]] = []
        self._cached: tuple[int, dict[str, RawFeatures]] | None = None

    # ------------------------------------------------------------------ protocol

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group with every trainable parameter, no bias / norm exclusions (§B.5)."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def on_stage_start(self, ctx: RefreshContext) -> None:
        """Apply the stage's ``reload`` rule at a stage boundary (§B.4.3); nothing for the first stage."""
        opts = self.stage_options[ctx.stage_index]
        if ctx.stage_index == 0 or opts.reload == "last":
            if ctx.stage_index > 0:
                logger.info("stage %s starts from the last weights (reload=last)", ctx.stage.name)
            return
        path = opts.reload_path
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=False)
            self.model.load_state_dict(state.get("model", state))
            logger.info("stage %s starts from the model weights of %s", ctx.stage.name, path)
            return
        feats = self._features(ctx)
        self._consider(ctx, feats, self._cluster(ctx, feats, modality="infrared", k1=self.cfg.cluster.k1))
        self.best = broadcast_from_main(self.best, ctx.dist, torch.device("cpu"))  # rank 0's choice
        assert self.best is not None
        logger.info(
            "stage %s starts from the weights at the end of epoch %d (CRA agreement %.4f, best_unsupervised)",
            ctx.stage.name,
            self.best["epoch"],
            self.best["score"],
        )
        self.model.load_state_dict(self.best["model"])
        self._cached = None

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        """Features → pseudo labels → instance and cluster memories (+ CRA in ``cross`` stages), §B.3.

        Under DDP rank 0's labels, CRA result, memories and best-so-far snapshot are kept on every rank
        (``broadcast_from_main``).
        """
        self._epoch, self._stage = ctx.epoch, self.stage_options[ctx.stage_index]
        feats = self._features(ctx)
        self._cached = None
        k1 = {"visible": self._stage.rgb_k1 or self.cfg.cluster.k1, "infrared": self.cfg.cluster.k1}
        labels = {m: self._cluster(ctx, feats, modality=m, k1=k1[m]) for m in MODALITIES}
        extras: dict[str, float] = {}
        if self._track_best and self._stage.kind == "intra" and ctx.stage_epoch >= 1:
            extras["selection/cra_agreement"] = self._consider(ctx, feats, labels["infrared"])
        self.instance_memories = {
            _key(m, depth): InstanceMemory(
                f, momentum=self.options.instance_momentum, temperature=self.options.neighbor_temperature
            ).to(ctx.device)
            for m in MODALITIES
            for depth, f in zip(DEPTHS, feats[m], strict=True)
        }
        cross: dict[str, np.ndarray] = {}
        self.cluster_memories, self.train_labels = {}, {}
        if all(labels[m].max(initial=-1) >= 0 for m in MODALITIES):  # else the collapse guard reports it
            if self._stage.kind == "cross":
                cross["visible"] = self._build_cross(ctx, feats, labels, extras)
            if self._stage.kind == "intra" or cross["visible"].max(initial=-1) < 0:
                self._build_intra(ctx, feats, labels)
        synced = broadcast_from_main(
            (
                PseudoLabels(labels, cross, extras),
                self.cluster_memories,
                self.instance_memories,
                self.train_labels,
            ),
            ctx.dist,
            ctx.device,
        )
        self.labels, self.cluster_memories, self.instance_memories, self.train_labels = synced
        self.best = broadcast_from_main(self.best, ctx.dist, torch.device("cpu"))
        return self.labels

    def epoch_batches(self, ctx: RefreshContext) -> Iterator[dict[str, Tensor]]:
        """``ctx.stage.iters`` batches: per modality a camera-aware P×K stream (§B.2), zipped.

        Raises:
            ValueError: a modality has no trainable pseudo label this epoch.
        """
        from vireid.training.data import PairedSampler, collate_views

        if set(self.train_labels) != set(MODALITIES) or any(
            y.max(initial=-1) < 0 for y in self.train_labels.values()
        ):
            raise ValueError("no trainable pseudo labels in at least one modality (see cluster.eps / CRA)")
        opts, rng = self.options, ctx.numpy_rng(_SAMPLER_SALT)
        batch = opts.clusters_per_batch * opts.num_instances
        streams = {
            m: pk_stream(
                self.train_labels[m],
                [r.camera for r in ctx.records[m]],
                num_instances=opts.num_instances,
                batch_size=batch,
                num_batches=ctx.stage.iters,
                rng=rng,
            )
            for m in MODALITIES
        }
        rank, world = ctx.dist.rank, ctx.dist.world_size
        loader = DataLoader(
            self._train_set(ctx),
            batch_size=batch // world,
            sampler=PairedSampler(
                shard_stream(streams["visible"], batch, rank=rank, world_size=world),
                shard_stream(streams["infrared"], batch, rank=rank, world_size=world),
            ),
            collate_fn=collate_views,
            num_workers=ctx.num_workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
        )
        return iter(loader)

    def training_step(self, batch: Mapping[str, Tensor], *, forward: TrainForward) -> dict[str, Tensor]:
        """Losses ``loss_cc_deep``, ``loss_cc_shallow``, ``loss_hom``, ``loss_het`` and the total ``loss``."""
        device = self._device()
        rgb, aug, ir = (batch[k].to(device, non_blocking=True) for k in ("rgb", "rgb_aug", "ir"))
        y_v, y_r = batch["rgb_label"].to(device).repeat(2), batch["ir_label"].to(device)
        n_v, n_r = batch["rgb_index"].to(device).repeat(2), batch["ir_index"].to(device)
        out = forward(torch.cat([rgb, aug]), ir)
        split = 2 * rgb.shape[0]
        f_d, f_s = out["f_d"].float(), out["f_s"].float()
        live = {
            ("visible", "deep"): f_d[:split],
            ("infrared", "deep"): f_d[split:],
            ("visible", "shallow"): f_s[:split],
            ("infrared", "shallow"): f_s[split:],
        }
        index, target = {"visible": n_v, "infrared": n_r}, {"visible": y_v, "infrared": y_r}
        views = rgb.shape[0]
        rows = {key: _gather(f.detach(), key[0], views) for key, f in live.items()}
        slots = {m: _gather(index[m].unsqueeze(1), m, views).squeeze(1) for m in MODALITIES}
        labels = {m: _gather(target[m].unsqueeze(1), m, views).squeeze(1) for m in MODALITIES}
        order = self.cfg.memory.update_order
        banks = {key: self.instance_memories[_key(*key)].updated(rows[key], slots[key[0]]) for key in live}
        cc, pending = self._cluster_terms(live, target, rows, labels, order)
        losses = {
            "loss_cc_deep": cc["infrared", "deep"] + cc["visible", "deep"],
            "loss_cc_shallow": cc["visible", "shallow"] + cc["infrared", "shallow"],
        }
        grad_banks = banks if order == "official" else None
        zero = f_d.new_zeros(())
        losses["loss_hom"], losses["loss_het"] = zero, zero
        if self.schedule.homogeneous(self._epoch):
            losses["loss_hom"] = sum(
                (self._cnl(live, index, modality=m, target=m, grad_banks=grad_banks) for m in MODALITIES),
                start=zero,
            )
        direction = self.schedule.heterogeneous(self._epoch)
        if direction is not None:
            anchor, memory, factor = direction
            losses["loss_het"] = factor * self._cnl(
                live, index, modality=anchor, target=memory, grad_banks=grad_banks
            )
        losses["loss"] = (
            losses["loss_cc_deep"]
            + self.options.shallow_weight * losses["loss_cc_shallow"]
            + self._stage.hom_weight * losses["loss_hom"]
            + self._stage.het_weight * losses["loss_het"]
        )
        self._pending = [(self.instance_memories[_key(*key)], bank) for key, bank in banks.items()]
        self._pending.extend(pending)
        return losses

    def _cluster_terms(
        self,
        live: Mapping[tuple[str, str], Tensor],
        target: Mapping[str, Tensor],
        rows: Mapping[tuple[str, str], Tensor],
        labels: Mapping[str, Tensor],
        order: str,
    ) -> tuple[dict[tuple[str, str], Tensor], list[tuple[ClusterMemory, Tensor]]]:
        """The four cluster-contrast terms and the memories they leave (§B.4.1, ``memory.update_order``).

        The terms are built in the official order (infrared-shallow, visible-shallow, infrared-deep,
        visible-deep). With separate memories (stage 1) the order does not matter; with the stage-2 shared
        memory of a depth, ``official`` updates it with the visible rows first and takes the infrared
        gradient against that updated memory (:meth:`ClusterMemory.chained_losses`).
        """
        groups: dict[int, tuple[ClusterMemory, list[tuple[str, str]]]] = {}
        for key in _CC_TERMS[order]:
            memory = self.cluster_memories[_key(*key)]
            groups.setdefault(id(memory), (memory, []))[1].append(key)
        terms: dict[tuple[str, str], Tensor] = {}
        pending: list[tuple[ClusterMemory, Tensor]] = []
        for memory, keys in groups.values():
            uses = [MemoryUse(live[k], target[k[0]], rows[k], labels[k[0]]) for k in keys]
            values, bank = memory.chained_losses(uses, update_order=order)
            terms.update(zip(keys, values, strict=True))
            pending.append((memory, bank))
        return terms, pending

    def after_backward(self) -> None:
        """Store the instance and cluster memories the last step's updates produced (§B.4.1)."""
        for memory, bank in self._pending:
            memory.assign(bank)
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        """Labels, cluster memories, the best-so-far snapshot (instance memories are rebuilt every epoch)."""
        shared = self._shared()
        return {
            "cluster_memories": {
                k: m.features.detach().cpu().clone() for k, m in self.cluster_memories.items()
            },
            "shared": shared,
            "train_labels": {m: torch.from_numpy(np.asarray(y)) for m, y in self.train_labels.items()},
            "labels": {
                m: torch.from_numpy(np.asarray(y))
                for m, y in (self.labels.labels if self.labels else {}).items()
            },
            "best": self.best,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the next ``refresh`` rebuilds memories and labels anyway)."""
        device = self._device()
        self.cluster_memories = {}
        for key, feats in state.get("cluster_memories", {}).items():
            if state.get("shared") and key.startswith("infrared/"):
                continue
            memory = ClusterMemory(
                feats, temperature=self.cfg.memory.temperature, momentum=self.cfg.memory.momentum
            )
            with torch.no_grad():
                memory.features.copy_(feats)
            self.cluster_memories[key] = memory.to(device)
        if state.get("shared"):
            for depth in DEPTHS:
                self.cluster_memories[_key("infrared", depth)] = self.cluster_memories[_key("visible", depth)]
        self.train_labels = {m: y.numpy().copy() for m, y in state.get("train_labels", {}).items()}
        labels = {m: y.numpy().copy() for m, y in state.get("labels", {}).items()}
        self.labels = PseudoLabels(labels) if labels else None
        self.best = state.get("best")

    # ------------------------------------------------------------------ helpers

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _shared(self) -> bool:
        mem = self.cluster_memories
        return bool(mem) and mem.get(_key("visible", "deep")) is mem.get(_key("infrared", "deep"))

    def _features(self, ctx: RefreshContext) -> dict[str, RawFeatures]:
        if self._cached is not None and self._cached[0] == ctx.epoch:
            return self._cached[1]
        feats = {
            m: extract_raw_features(
                self.model,
                ctx.records[m],
                modality=m,
                batch_size=self.cfg.data.extract_batch_size,
                device=ctx.device,
                flip=self.options.flip_extract,
                bf16=self.cfg.precision == "bf16",
                num_workers=ctx.num_workers,
            )
            for m in MODALITIES
        }
        self._cached = (ctx.epoch, feats)
        return feats

    def _cluster(
        self, ctx: RefreshContext, feats: Mapping[str, RawFeatures], *, modality: str, k1: int
    ) -> np.ndarray:
        """Jaccard + DBSCAN on ``norm([f_d; f_s])`` of one modality (§B.3 step 2)."""
        from vireid.training.pseudo_labels import dbscan_pseudo_labels, jaccard_distance

        cl = self.cfg.cluster
        x = F.normalize(torch.cat(feats[modality], dim=1), dim=1)
        if ctx.device.type == "cuda":
            x = x.to(ctx.device)
        distance = jaccard_distance(x, k1=min(k1, x.shape[0]), k2=min(cl.k2, k1, x.shape[0]))
        labels = dbscan_pseudo_labels(distance, cl.eps_for(modality), min_samples=cl.min_samples)
        logger.info(
            "%s: k1=%d -> %d clusters, %d outliers of %d",
            modality,
            k1,
            int(labels.max(initial=-1)) + 1,
            int((labels < 0).sum()),
            labels.size,
        )
        return labels

    def _normalised(self, feats: Mapping[str, RawFeatures], device: torch.device) -> list[Tensor]:
        """[D_v, D_r, S_v, S_r] L2-normalised (CRA inputs, §B.4.2)."""
        order = [("visible", 0), ("infrared", 0), ("visible", 1), ("infrared", 1)]
        return [F.normalize(feats[m][i], dim=1).to(device) for m, i in order]

    def _consider(
        self, ctx: RefreshContext, feats: Mapping[str, RawFeatures], ir_labels: np.ndarray
    ) -> float:
        """Score the current weights (end of epoch ``ctx.epoch − 1``) and keep them if the best so far."""
        if ir_labels.max(initial=-1) < 0:
            return 0.0
        score = cra_agreement(
            *self._normalised(feats, ctx.device), ir_labels=ir_labels, topk=self.options.cra_topk
        )
        if self.best is None or score > self.best["score"]:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best = {"score": score, "epoch": ctx.epoch - 1, "model": state}
        return score

    def _memory(self, centroids: Tensor, ctx: RefreshContext) -> ClusterMemory:
        return ClusterMemory(
            centroids,
            temperature=self.cfg.memory.temperature,
            momentum=ctx.momentum(self.cfg.memory.momentum),
        ).to(ctx.device)

    def _build_intra(
        self, ctx: RefreshContext, feats: Mapping[str, RawFeatures], labels: Mapping[str, np.ndarray]
    ) -> None:
        """Stage 1: per-modality deep and shallow memories from raw-feature centroids (§B.3 item 3)."""
        from vireid.training.pseudo_labels import cluster_centroids

        for m in MODALITIES:
            for depth, f in zip(DEPTHS, feats[m], strict=True):
                self.cluster_memories[_key(m, depth)] = self._memory(
                    cluster_centroids(f, labels[m], normalize_inputs=False), ctx
                )
            self.train_labels[m] = np.asarray(labels[m], dtype=np.int64)

    def _build_cross(
        self,
        ctx: RefreshContext,
        feats: Mapping[str, RawFeatures],
        labels: Mapping[str, np.ndarray],
        extras: dict[str, float],
    ) -> np.ndarray:
        """Stage 2: CRA, then one shared memory per depth over the infrared label space (§B.3 item 5)."""
        from vireid.training.pseudo_labels import cluster_centroids

        cra = collaborative_ranking_association(
            *self._normalised(feats, ctx.device),
            ir_labels=labels["infrared"],
            rgb_labels=labels["visible"],
            topk=self.options.cra_topk,
            vote=self.options.cra_vote,
            block_rows=self.options.cra_block_rows,
        )
        if cra.train_labels.max(initial=-1) < 0:
            logger.warning(
                "CRA labelled no visible image (agreement %.3f): this epoch trains per modality "
                "(stage-1 memories)",
                cra.agreement,
            )
            extras.update(
                {"cra/agreement": cra.agreement, "cra/visible_trained": 0.0, "cra/fallback_intra": 1.0}
            )
            return cra.train_labels
        joint = np.concatenate([cra.labels, labels["infrared"]])
        for i, depth in enumerate(DEPTHS):
            rows = torch.cat([feats["visible"][i], feats["infrared"][i]])
            memory = self._memory(cluster_centroids(rows, joint, normalize_inputs=False), ctx)
            self.cluster_memories[_key("visible", depth)] = memory
            self.cluster_memories[_key("infrared", depth)] = memory
        self.train_labels = {
            "visible": cra.train_labels,
            "infrared": np.asarray(labels["infrared"], dtype=np.int64),
        }
        trained = cra.train_labels >= 0
        extras.update(
            {
                "cra/agreement": cra.agreement,
                "cra/visible_trained": float(trained.sum()),
                "cra/distinct_labels": float(np.unique(cra.train_labels[trained]).size),
            }
        )
        logger.info(
            "CRA: %d of %d visible images labelled into %d infrared clusters (agreement %.3f)",
            int(trained.sum()),
            trained.size,
            int(extras["cra/distinct_labels"]),
            cra.agreement,
        )
        return cra.train_labels

    def _train_set(self, ctx: RefreshContext) -> Any:
        return build_train_set(
            ctx,
            self.model,
            recipe=self.options.recipe,
            visible_labels=self.train_labels["visible"],
            infrared_labels=self.train_labels["infrared"],
            salt=_AUG_SALT,
            interpolation=self.options.train_interpolation,
        )

    def _cnl(
        self,
        live: Mapping[tuple[str, str], Tensor],
        index: Mapping[str, Tensor],
        *,
        modality: str,
        target: str,
        grad_banks: Mapping[tuple[str, str], Tensor] | None = None,
    ) -> Tensor:
        """``ℓ_d^{a→b} + w_s·ℓ_s^{a→b}`` with the joint deep/shallow mask from the pre-update memories.

        ``grad_banks``: (modality, depth) → the updated instance bank the gradient is taken against
        (``official``: the official step updates the banks before the backward); None = the current banks.
        """
        inst = self.instance_memories
        with torch.no_grad():
            sims = [
                inst[_key(modality, depth)].features[index[modality]] @ inst[_key(target, depth)].features.T
                for depth in DEPTHS
            ]
            mask = joint_neighbor_mask(*sims, ratio=self.options.mask_ratio)
        weights = {"deep": self.options.hom_deep_weight, "shallow": self.options.hom_shallow_weight}
        return sum(
            (
                weights[depth]
                * neighbor_loss(
                    live[modality, depth],
                    inst[_key(target, depth)].features,
                    mask,
                    temperature=self.options.neighbor_temperature,
                    grad_memory=None if grad_banks is None else grad_banks[target, depth],
                )
                for depth in DEPTHS
            ),
            start=live[modality, "deep"].new_zeros(()),
        )


def _gather(x: Tensor, modality: str, views: int) -> Tensor:
    """Rows of all ranks in single-process order: infrared as is; visible view 1 of all ranks, then view 2."""
    if modality == "infrared":
        return all_gather_cat(x)
    return torch.cat([all_gather_cat(x[:views]), all_gather_cat(x[views:])])
