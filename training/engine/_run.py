"""``train(cfg, run_dir=...)``: the one ``build_*`` layer that turns a config into a running Trainer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vireid.training._precision import autocast
from vireid.training.engine._callbacks import Checkpoint, CollapseGuard, Evaluation, Logging, LRSchedule
from vireid.training.engine._checkpoint import load_checkpoint, load_model_weights, seed_everything
from vireid.training.engine._config import OptimConfig, TrainConfig, save_config
from vireid.training.engine._data import make_evaluator, make_extractor, prepare_data
from vireid.training.engine._dist import cleanup_distributed, init_distributed
from vireid.training.engine._trainer import Callback, Trainer, TrainerState

__all__ = ["build_optimizer", "build_trainer", "last_checkpoint", "train"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"


def last_checkpoint(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/last.pt`` (may not exist)."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def build_optimizer(cfg: OptimConfig, groups: Sequence[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam (L2 weight decay, not AdamW) or SGD with momentum over ``groups`` (methods.md §A.5, §B.5).

    Each group gets ``initial_lr`` (the LR schedule multiplies it per epoch).
    """
    groups = [dict(g) for g in groups]
    for group in groups:
        group.setdefault("initial_lr", group.get("lr", cfg.lr))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _set_determinism(cfg: TrainConfig, device: torch.device) -> None:
    seed_everything(cfg.seed)
    if cfg.deterministic and device.type == "cuda":  # CPU kernels used here are deterministic already
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_trainer(
    cfg: TrainConfig,
    *,
    run_dir: str | Path,
    extra_callbacks: Sequence[Callback] = (),
) -> Trainer:
    """Build data, method, optimizer, callbacks and the Trainer for ``cfg`` (joins DDP under torchrun).

    ``extra_callbacks`` run after the standard ones (tests use them to inject faults).

    Raises:
        KeyError: unknown method / model names; FileNotFoundError: missing data.
    """
    from vireid.training.methods import METHODS, build_method

    if cfg.model.init_from and cfg.method_options.get("share_stem_init"):
        raise ValueError(
            "method_options.share_stem_init would overwrite the thermal stem loaded from model.init_from; "
            "set method_options.share_stem_init=false"
        )
    run_dir = Path(run_dir)
    dist_info, device = init_distributed(cfg.device)
    autocast(cfg.precision, device)  # refuses bf16 on a device without autocast before anything runs
    if cfg.precision != "fp32":
        logger.info("precision %s: %s autocast of the training step", cfg.precision, device.type)
    _set_determinism(cfg, device)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    keep_identities = bool(getattr(METHODS.get(cfg.method), "uses_identities", False))
    data = prepare_data(cfg.data, run_dir=run_dir, dist_info=dist_info, keep_identities=keep_identities)
    method = build_method(cfg)
    if cfg.model.init_from:
        load_model_weights(method.model, cfg.model.init_from, arch=cfg.model.arch, variant=cfg.model.variant)
    method.model.to(device)
    optimizer = build_optimizer(cfg.optim, method.parameter_groups())
    input_size = tuple(method.model.default_cfg["input_size"][1:])  # type: ignore[index]
    callbacks: list[Callback] = [LRSchedule(cfg.optim)]
    if cfg.collapse.enabled:
        callbacks.append(CollapseGuard(cfg.collapse))
    evaluate = make_evaluator(data, cfg.data.dataset, cfg.eval, device=device, trial=cfg.data.trial)
    if evaluate is not None:
        callbacks.append(
            Evaluation(evaluate, every=cfg.eval.every, out_dir=run_dir / "eval", is_main=dist_info.is_main)
        )
    callbacks.append(Logging(cfg.logging, tb_dir=run_dir / "tb", is_main=dist_info.is_main))
    callbacks.append(
        Checkpoint(run_dir / CHECKPOINT_DIR, keep_every=cfg.checkpoint.keep_every, is_main=dist_info.is_main)
    )
    callbacks.extend(extra_callbacks)
    extract = make_extractor(
        method.model,
        data.records,
        batch_size=cfg.data.extract_batch_size,
        device=device,
        dist_info=dist_info,
        num_workers=cfg.data.num_workers,
    )
    return Trainer(
        cfg=cfg,
        method=method,
        optimizer=optimizer,
        records=data.records,
        extract=extract,
        device=device,
        dist_info=dist_info,
        input_size=(int(input_size[0]), int(input_size[1])),
        callbacks=callbacks,
    )


def train(
    cfg: TrainConfig,
    *,
    run_dir: str | Path,
    resume: bool = False,
    extra_callbacks: Sequence[Callback] = (),
) -> TrainerState:
    """Train ``cfg`` into ``run_dir`` (config.yaml, checkpoints/, tb/, eval/); returns the final state.

    Args:
        cfg: the validated config.
        run_dir: output folder (created).
        resume: continue from ``<run_dir>/checkpoints/last.pt`` when it exists (logged either way).
        extra_callbacks: appended after the standard callbacks.
    """
    trainer = build_trainer(cfg, run_dir=run_dir, extra_callbacks=extra_callbacks)
    try:
        last = last_checkpoint(run_dir)
        if resume and last.is_file():
            trainer.load_state(load_checkpoint(last, map_location="cpu"))
            logger.info(
                "resuming from %s: %d of %d epochs done", last, trainer.state.epoch, trainer.total_epochs
            )
        elif resume:
            logger.info("no checkpoint at %s: starting from scratch", last)
        return trainer.fit()
    finally:
        cleanup_distributed()
