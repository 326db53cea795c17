"""SALCR (IJCV 2025) as a :class:`~vireid.training.methods.ReIDMethod` (methods.md §A).

Two phases, run as two stages of one Trainer run (house-style §16):

* **intra** (stage 1, epochs 0–39): exactly the baseline objective
  ``CE(m_v(f_V), y_v) + CE(m_v(f_A), y_v) + CE(m_r(f_R), y_r)`` with per-modality DBSCAN labels, the paired
  stage-1 sampler and the ``salcr_stage1`` recipe (LinearTransform on V) — delegated to
  :class:`~vireid.training.methods.BaselineMethod` (§A.4.4 stage 1).
* **cross** (stage 2, epochs 40–79), continuing from the last stage-1 state with the part head re-created
  (§A.1, in place so the optimizer keeps its parameter list; the part head never had a gradient in stage 1,
  so its Adam state starts empty). Every epoch (§A.3): extract ``g = norm(f_g)`` and ``pg = norm(f_pg)``
  without flip; Jaccard + DBSCAN on g per modality; DAGL association (CMFP → bidirectional Sinkhorn → cross
  labels, intra labels re-assigned, :func:`associate`); memories rebuilt — global ``m_v``, ``m_r`` (centroids
  of g), part ``m_vp``, ``m_vpa``, ``m_rp``, ``m_rpa`` (centroids of the pg slices) and static instance banks
  (g and the pg slices of non-outliers). Batches come from the stage-2 sampler (``StageThreeSampler``), so
  row j of V, A and R is a pseudo-positive triple. Loss ``L_dagl + L_fgsal + λ2 (L_gi + L_pi)`` (§A.4.4).

``refresh`` returns the DBSCAN labels (they define the clusters and the memories; the collapse guard watches
them) and the OT cross labels; the re-assigned training targets are kept by the method. Memory updates run
after the backward in random order (``cross=True``, §0.4). The official stage 2 is a second run with a fresh
Adam; the presets reproduce that with ``reset_optimizer: true`` on the cross stage (the engine clears the
Adam moments and step counts at the stage start; with ``false`` the trunk's moments carry over from stage 1).
Under DDP every rank extracts the stage-2 features itself (no sharding of that pass) and then keeps rank
0's labels, association, targets and memories (``broadcast_from_main``), so all ranks train on the same.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vireid.training.engine._config import TrainConfig, config_from_dict
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
from vireid.training.methods._baseline import BaselineMethod
from vireid.training.methods.salcr._association import associate, fused_centroids
from vireid.training.methods.salcr._config import PHASES, SALCRConfig
from vireid.training.methods.salcr._losses import (
    PartBlocks,
    dagl_loss,
    dagl_targets,
    fgsal_loss,
    gpcr_global_masks,
    gpcr_part_masks,
    masked_nll,
    normalized_logits,
    part_blocks,
)

__all__ = ["SALCRMethod"]

logger = logging.getLogger(__name__)

_AUG_SALT = 2000
_ORDER_SALT = 3000
_TARGETS = ("y_v", "cross_v", "y_r", "cross_r")


class _GlobalPartView(nn.Module):
    """``extract(x, modality) = [norm(f_g) | norm(f_pg)]`` of the SALCR eval forward (for feature passes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.default_cfg = model.default_cfg
        self.train(model.training)

    def extract(self, x: Tensor, modality: str) -> Tensor:
        g, pg = self.model(x, modality)
        return torch.cat([g, pg], dim=1)


class SALCRMethod:
    """SALCR training method (see the module docstring; options: :class:`SALCRConfig`).

    Args:
        cfg: root config; reads ``method_options`` (:class:`SALCRConfig`), ``cluster``, ``memory``,
            ``data.extract_batch_size`` and the stage list.
        model: the SALCR backbone (``build_model("salcr", ...)``): ``forward_train(x_rgb, x_ir, *,
            with_parts)``, ``reset_part_head()``, eval ``forward(x, modality) -> (norm f_g, norm f_pg)``.

    Raises:
        KeyError / TypeError / ValueError: invalid ``method_options`` or stage phases.
        ValueError: a model without the SALCR part head.
    """

    name = "salcr"

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        self.cfg = cfg
        self.model = model
        self.options = config_from_dict(SALCRConfig, cfg.method_options, where="method_options")
        if not all(hasattr(model, a) for a in ("forward_train", "reset_part_head", "part_pool")):
            raise ValueError("SALCR needs the two-stream ResNet with a part head (model.arch: salcr)")
        if self.options.bool_flags == "parity" and not (self.options.fgsal and self.options.gpcr):
            logger.warning("bool_flags=parity: FGSAL and GPCR stay on, as argparse type=bool parses 'False'")
        if self.options.grad_checkpointing:
            model.set_grad_checkpointing(True)  # type: ignore[operator]
        self.phases = tuple(_stage_phase(stage.options, i) for i, stage in enumerate(cfg.stages))
        intra = {
            "clusters_per_batch": self.options.clusters_per_batch,
            "num_instances": self.options.num_instances,
            "recipe": self.options.intra_recipe,
            "feature": "f_g",
        }
        self.intra = BaselineMethod(dataclasses.replace(cfg, method="baseline", method_options=intra), model)
        self.phase = self.phases[0]
        self.labels: PseudoLabels | None = None
        self.memories: dict[str, Any] = {}
        self.part_memories: list[dict[str, Any]] = []
        self.instances: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}
        self._order: torch.Generator | None = None
        self._momentum = cfg.memory.momentum
        self._pending: list[tuple[Any, Tensor, Tensor]] = []

    # ------------------------------------------------------------------ protocol

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group with every trainable parameter (part head included; frozen BN-neck biases excluded)."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def on_stage_start(self, ctx: RefreshContext) -> None:
        """Epoch 0 of a fresh run: optionally share the stem init (``share_stem_init``). Cross stage:
        re-create the part head (§A.1), keeping the parameter objects the optimizer holds."""
        if ctx.epoch == 0 and self.options.share_stem_init:
            share_stem_init(self.model)
        if self.phases[ctx.stage_index] == "cross" and self.options.reset_part_head:
            reset_part_head_in_place(self.model)

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        """Pseudo labels, association and memories of the epoch (§A.3); see the module docstring."""
        self.phase = self.phases[ctx.stage_index]
        if self.phase == "intra":
            self.labels = self.intra.refresh(ctx)  # broadcasts rank 0's result itself
            return self.labels
        self._refresh_cross(ctx)
        # under DDP every rank keeps rank 0's labels, association and memories
        synced = broadcast_from_main(
            (self.labels, self.targets, self.memories, self.part_memories, self.instances),
            ctx.dist,
            ctx.device,
        )
        self.labels, self.targets, self.memories, self.part_memories, self.instances = synced
        assert self.labels is not None
        return self.labels

    def epoch_batches(self, ctx: RefreshContext) -> Iterator[dict[str, Tensor]]:
        """This rank's ``ctx.stage.iters`` batches: stage-1 sampler (intra) or stage-2 sampler (cross)."""
        if self.phase == "intra":
            return self.intra.epoch_batches(ctx)
        return self._cross_batches(ctx)

    def training_step(self, batch: Mapping[str, Tensor], *, forward: TrainForward) -> dict[str, Tensor]:
        """Intra: ``loss_v``, ``loss_a``, ``loss_r``; cross: ``loss_dagl``, ``loss_fgsal``, ``loss_gi``,
        ``loss_pi`` (switched-off terms are left out); always ``loss`` = the weighted total (§A.4.4)."""
        if self.phase == "intra":
            return self.intra.training_step(batch, forward=forward)
        return self._cross_step(batch, forward)

    def after_backward(self) -> None:
        """Memory updates with the last step's rows: in order (intra) or in random order (cross, §0.4)."""
        if self.phase == "intra":
            self.intra.after_backward()
            return
        with torch.no_grad():
            for memory, rows, targets in self._pending:
                memory.update(rows, targets, order="random", generator=self._order)
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        """Phase, the intra state, and the cross memories / banks / targets (CPU tensors)."""
        cross = {
            "memories": {name: m.features.detach().cpu().clone() for name, m in self.memories.items()},
            "part_memories": [
                {name: m.features.detach().cpu().clone() for name, m in part.items()}
                for part in self.part_memories
            ],
            "instances": {name: t.detach().cpu().clone() for name, t in self.instances.items()},
            "targets": {name: t.detach().cpu().clone() for name, t in self.targets.items()},
        }
        return {"phase": self.phase, "intra": self.intra.state_dict(), "cross": cross}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the next ``refresh`` rebuilds everything anyway)."""
        self.phase = str(state.get("phase", self.phases[0]))
        self.intra.load_state_dict(state.get("intra", {}))
        cross = state.get("cross", {})
        device = next(self.model.parameters()).device
        self.memories = {n: self._memory(f, device, exact=True) for n, f in cross.get("memories", {}).items()}
        self.part_memories = [
            {n: self._memory(f, device, exact=True) for n, f in part.items()}
            for part in cross.get("part_memories", [])
        ]
        self.instances = {n: t.to(device) for n, t in cross.get("instances", {}).items()}
        self.targets = {n: t.to(device) for n, t in cross.get("targets", {}).items()}

    # ------------------------------------------------------------------ cross phase: refresh

    def _refresh_cross(self, ctx: RefreshContext) -> PseudoLabels:
        g, pg = {}, {}
        for modality in MODALITIES:
            g[modality], pg[modality] = self._extract_global_part(ctx, modality)
        dbscan = {m: self._cluster(g[m], m) for m in MODALITIES}
        if any(y.max(initial=-1) < 0 for y in dbscan.values()):
            self.labels, self.targets = PseudoLabels(dbscan), {}
            return self.labels  # no cluster in a modality: the collapse guard / epoch_batches reports it
        o = self.options
        assoc = associate(
            g["visible"].to(ctx.device),
            g["infrared"].to(ctx.device),
            labels_v=dbscan["visible"],
            labels_r=dbscan["infrared"],
            k=o.k_cmfp,
            lam=o.lambda_ot,
            tol=o.ot_tol,
            max_iter=o.ot_max_iter,
            check_every=o.ot_check_every,
            block_size=o.cmfp_block_size,
        )
        arrays = dict(
            zip(_TARGETS, (assoc.labels_v, assoc.cross_v, assoc.labels_r, assoc.cross_r), strict=True)
        )
        self.targets = {name: torch.from_numpy(y).to(ctx.device) for name, y in arrays.items()}
        part_labels = (
            dbscan
            if o.part_memory_labels == "dbscan"
            else {
                "visible": assoc.labels_v,
                "infrared": assoc.labels_r,
            }
        )
        self._build_memories(ctx, g, pg, dbscan, part_labels)
        self._order = ctx.torch_generator(_ORDER_SALT)
        extras = {
            "sinkhorn_iters/visible": float(assoc.iterations_v),
            "sinkhorn_iters/infrared": float(assoc.iterations_r),
            "reassigned/visible": assoc.changed_v,
            "reassigned/infrared": assoc.changed_r,
        }
        self.labels = PseudoLabels(dbscan, {"visible": assoc.cross_v, "infrared": assoc.cross_r}, extras)
        return self.labels

    def _extract_global_part(self, ctx: RefreshContext, modality: str) -> tuple[Tensor, Tensor]:
        """(N, C) ``norm(f_g)`` and (N, (P+1)·C) ``norm(f_pg)`` of the training records, no flip (§A.3)."""
        from vireid.training.evaluation import extract_features

        both = extract_features(
            _GlobalPartView(self.model),
            ctx.records[modality],
            modality=modality,
            batch_size=self.cfg.data.extract_batch_size,
            device=ctx.device,
            flip=False,
            num_workers=ctx.num_workers,
        )
        feats = torch.from_numpy(both)
        dim = int(self.model.default_cfg["embed_dim"])  # type: ignore[index]
        return F.normalize(feats[:, :dim], dim=1), F.normalize(feats[:, dim:], dim=1)

    def _cluster(self, features: Tensor, modality: str) -> np.ndarray:
        from vireid.training.pseudo_labels import dbscan_pseudo_labels, jaccard_distance

        cl = self.cfg.cluster
        distance = jaccard_distance(features, k1=cl.k1, k2=cl.k2)
        return dbscan_pseudo_labels(distance, cl.eps_for(modality), min_samples=cl.min_samples)

    def _memory(self, features: Tensor, device: torch.device, *, exact: bool = False) -> Any:
        from vireid.training.memory import ClusterMemory

        memory = ClusterMemory(features, temperature=self.cfg.memory.temperature, momentum=self._momentum).to(
            device
        )
        if exact:
            with torch.no_grad():
                memory.features.copy_(features)  # bit-exact restore (the constructor may re-normalise)
        return memory

    def _build_memories(
        self,
        ctx: RefreshContext,
        g: Mapping[str, Tensor],
        pg: Mapping[str, Tensor],
        dbscan: Mapping[str, np.ndarray],
        part_labels: Mapping[str, np.ndarray],
    ) -> None:
        """Global, part and instance memories of the epoch (§A.3 item 6)."""
        self._momentum = ctx.momentum(self.cfg.memory.momentum)
        dim = g["visible"].shape[1]
        keep = {m: torch.from_numpy(dbscan[m] >= 0) for m in MODALITIES}
        self.memories, self.instances = {}, {}
        for modality, key in (("visible", "v"), ("infrared", "r")):
            y = torch.from_numpy(dbscan[modality])
            self.memories[key] = self._memory(_unit_centroids(g[modality], y), ctx.device)
            self.instances[key] = g[modality][keep[modality]].to(ctx.device)
        self.part_memories = []
        num_parts = pg["visible"].shape[1] // dim - 1
        for part in range(num_parts):
            cols = slice(part * dim, (part + 1) * dim)
            entry: dict[str, Any] = {}
            for modality, key in (("visible", "v"), ("infrared", "r")):
                k = int(dbscan[modality].max()) + 1
                y = torch.from_numpy(part_labels[modality])
                cent = _unit_centroids(pg[modality][:, cols], y, num_clusters=k)
                entry[f"{key}p"] = self._memory(cent, ctx.device)
                entry[f"{key}pa"] = self._memory(cent, ctx.device)
                bank = F.normalize(pg[modality][keep[modality]][:, cols], dim=1)
                self.instances[f"{key}p{part}"] = bank.to(ctx.device)
            self.part_memories.append(entry)

    # ------------------------------------------------------------------ cross phase: batches and step

    def _cross_batches(self, ctx: RefreshContext) -> Iterator[dict[str, Tensor]]:
        from vireid.training.data import PairedSampler, collate_views, stage_two_indices

        if not self.targets:
            raise ValueError("no clusters in at least one modality: nothing to train on (see cluster.eps)")
        t = {name: y.cpu().numpy() for name, y in self.targets.items()}
        rgb, ir = stage_two_indices(
            t["y_v"],
            t["y_r"],
            rgb_cross=t["cross_v"],
            ir_cross=t["cross_r"],
            num_iterations=ctx.stage.iters,
            rng=ctx.numpy_rng(),
            anchors_per_modality=self.options.anchors_per_modality,
            num_instances=self.options.num_instances,
        )
        global_batch = 2 * self.options.anchors_per_modality * self.options.num_instances
        loader = DataLoader(
            self._train_set(ctx, t),
            batch_size=global_batch // ctx.dist.world_size,
            sampler=PairedSampler(_shard(rgb, global_batch, ctx), _shard(ir, global_batch, ctx)),
            collate_fn=collate_views,
            num_workers=ctx.num_workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
        )
        return iter(loader)

    def _train_set(self, ctx: RefreshContext, targets: Mapping[str, np.ndarray]) -> Any:
        return build_train_set(
            ctx,
            self.model,
            recipe=self.options.cross_recipe,
            visible_labels=targets["y_v"],
            infrared_labels=targets["y_r"],
            salt=_AUG_SALT,
        )

    def _cross_step(self, batch: Mapping[str, Tensor], forward: TrainForward) -> dict[str, Tensor]:
        device = self.memories["v"].features.device
        v, a, r = (batch[k].to(device, non_blocking=True) for k in ("rgb", "rgb_aug", "ir"))
        iv, ir_ = batch["rgb_index"].to(device), batch["ir_index"].to(device)
        y = {
            "y_v": self.targets["y_v"][iv],
            "cross_v": self.targets["cross_v"][iv],
            "y_r": self.targets["y_r"][ir_],
            "cross_r": self.targets["cross_r"][ir_],
        }
        o = self.options
        out = forward(torch.cat([v, a]), r, with_parts=o.use_fgsal or o.use_gpcr)
        f_g = out["f_g"].float()
        rgb_space, ir_space = dagl_targets(**y)
        losses = {
            "loss_dagl": dagl_loss(
                f_g,
                rgb_space=rgb_space,
                ir_space=ir_space,
                memory_v=self.memories["v"],
                memory_r=self.memories["r"],
            )
        }
        updates: list[tuple[Any, Tensor, Tensor]] = [
            (self.memories["v"], f_g, rgb_space),
            (self.memories["r"], f_g, ir_space),
        ]
        total = losses["loss_dagl"]
        parts = self._parts(out, f_g.shape[1]) if o.use_fgsal or o.use_gpcr else []
        if o.use_fgsal:
            losses["loss_fgsal"], part_updates = fgsal_loss(parts, memories=self.part_memories, **y)
            updates.extend(part_updates)
            total = total + losses["loss_fgsal"]
        if o.use_gpcr:
            losses["loss_gi"], losses["loss_pi"] = self._gpcr(f_g, parts)
            total = total + o.lambda_gpcr * (losses["loss_gi"] + losses["loss_pi"])
        losses["loss"] = total
        self._pending = [(m, all_gather_cat(rows.detach()), all_gather_cat(t)) for m, rows, t in updates]
        return losses

    def _parts(self, out: Mapping[str, Tensor], dim: int) -> list[PartBlocks]:
        num_parts = out["f_pg"].shape[1] // dim - 1
        return [part_blocks(out, part=k, dim=dim, a_to_r=self.options.a_to_r) for k in range(num_parts)]

    def _gpcr(self, f_g: Tensor, parts: list[PartBlocks]) -> tuple[Tensor, Tensor]:
        """``(L_gi, L_pi)`` of §A.4.3 against the static instance banks."""
        tau, k = self.cfg.memory.temperature, self.options.k_instance
        loss_gi = f_g.new_zeros(())
        loss_pi = f_g.new_zeros(())
        for key in ("v", "r"):
            logits = normalized_logits(f_g, self.instances[key], temperature=tau)
            top, omega = gpcr_global_masks(logits.detach(), k=k)
            loss_gi = loss_gi + masked_nll(logits, omega)
            for index, blocks in enumerate(parts):
                scores = normalized_logits(blocks.by_map, self.instances[f"{key}p{index}"], temperature=tau)
                mask = gpcr_part_masks(scores.detach(), top, k=k)
                loss_pi = loss_pi + masked_nll(scores, mask) / len(parts)
        return loss_gi, loss_pi


def reset_part_head_in_place(model: nn.Module) -> None:
    """Re-initialise SALCR's part head (``part_pool``, ``bottleneck_part``) keeping its parameter objects.

    ``model.reset_part_head()`` builds fresh modules; their values (and reset BN statistics) are copied
    into the existing modules, which are put back, so an optimizer built before still owns the parameters.
    """
    old = {name: getattr(model, name) for name in ("part_pool", "bottleneck_part")}
    model.reset_part_head()  # type: ignore[operator]
    for name, module in old.items():
        module.load_state_dict(getattr(model, name).state_dict())
        setattr(model, name, module)


def _unit_centroids(features: Tensor, labels: Tensor, *, num_clusters: int | None = None) -> Tensor:
    """``norm`` of the per-cluster means of ``features`` over labels ≥ 0 (the memory initialisation)."""
    keep = labels >= 0
    return F.normalize(fused_centroids(features[keep], labels[keep], num_clusters=num_clusters), dim=1)


def _stage_phase(options: Mapping[str, Any], index: int) -> str:
    phase = str(options.get("phase", "intra" if index == 0 else "cross"))
    unknown = set(options) - {"phase"}
    if phase not in PHASES or unknown:
        raise ValueError(f"stage {index}: options must be {{phase: intra|cross}}, got {dict(options)}")
    return phase


def _shard(indices: np.ndarray, global_batch: int, ctx: RefreshContext) -> np.ndarray:
    """This rank's contiguous share of every global batch of a flat per-epoch index array."""
    batches = indices.reshape(-1, global_batch)
    return np.concatenate([shard_batch(b, ctx.dist.rank, ctx.dist.world_size) for b in batches])
