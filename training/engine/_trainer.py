"""One training loop for every method (house-style §15–16): stages as data, callbacks on fixed events.

Events, in order: ``before_train``; per epoch ``before_epoch`` (after the method's ``refresh``, so
``trainer.labels`` holds this epoch's pseudo labels), ``before_step`` / ``after_step`` per step,
``after_epoch`` (``trainer.state.epoch`` already counts the finished epoch); ``after_train``.

Determinism: every epoch starts by re-seeding python / numpy / torch from ``(seed, epoch)``, so a run
resumed from ``last.pt`` (written at the end of an epoch) repeats an interrupted epoch exactly and ends
in the same state as an uninterrupted run.

A callback may raise :class:`RestartEpoch` to roll the run back to the start of a recent epoch (the
collapse guard does); the Trainer keeps in-memory snapshots of the last two epoch starts for that
(when ``keep_snapshots``). A non-finite loss raises :class:`NonFiniteLossError`, which
``trainer.on_nonfinite`` (set by the collapse guard) may turn into a :class:`RestartEpoch`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vireid.training._precision import autocast
from vireid.training.engine._checkpoint import (
    FORMAT_VERSION,
    capture_rng_state,
    epoch_seed,
    restore_rng_state,
    seed_everything,
)
from vireid.training.engine._config import StageConfig, TrainConfig, config_to_dict
from vireid.training.engine._dist import broadcast_flag, broadcast_module
from vireid.training.methods._base import (
    DistInfo,
    ExtractFn,
    PseudoLabels,
    RefreshContext,
    ReIDMethod,
)

__all__ = ["Callback", "NonFiniteLossError", "RestartEpoch", "Trainer", "TrainerState"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN / inf loss (on any rank)."""

    def __init__(self, epoch: int, step: int, losses: Mapping[str, float]) -> None:
        super().__init__(f"non-finite loss at epoch {epoch} step {step}: {dict(losses)}")
        self.epoch = epoch
        self.step = step
        self.losses = dict(losses)


class RestartEpoch(Exception):
    """Raised by a callback: restore the snapshot taken at the start of ``epoch`` and run from there."""

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"restart epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason


@dataclass
class TrainerState:
    """Run-time values (never written back to the config, house-style §9); saved in checkpoints.

    Attributes:
        epoch: epochs completed.
        global_step: optimizer steps taken.
        history: one dict per finished epoch (losses, cluster counts, lr, eval metrics).
        overrides: epoch (as str) → ``{"momentum": m, "lr_scale": s}`` set by the collapse guard.
        retries: epoch (as str) → number of collapse re-runs.
    """

    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def override(self, epoch: int, key: str) -> float | None:
        """The collapse-guard override ``key`` for ``epoch`` (None when not set)."""
        return self.overrides.get(str(epoch), {}).get(key)


class Callback:
    """Base class of trainer callbacks: override the events you need. ``state_dict`` is checkpointed."""

    def before_train(self, trainer: Trainer) -> None:
        """Once, before the first epoch (after a resume too)."""

    def after_train(self, trainer: Trainer) -> None:
        """Once, after the last epoch."""

    def before_epoch(self, trainer: Trainer) -> None:
        """After ``refresh``; ``trainer.labels`` / ``trainer.ctx`` are this epoch's."""

    def after_epoch(self, trainer: Trainer) -> None:
        """After the last step; ``trainer.state.epoch`` counts this epoch."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each optimizer step."""

    def after_step(self, trainer: Trainer, losses: Mapping[str, float]) -> None:
        """After each optimizer step, with the step's losses as floats."""

    def state_dict(self) -> dict[str, Any]:
        """Callback state to checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class _TrainForward(nn.Module):
    """Routes ``forward`` to ``model.forward_train`` so DDP's gradient hooks see the training forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        out: dict[str, Tensor] = self.model.forward_train(*args, **kwargs)  # type: ignore[operator]
        return out


class Trainer:
    """Runs ``cfg.stages`` of ``method`` with ``optimizer``; callbacks do checkpointing, eval, LR, logs.

    Args:
        cfg: the resolved root config.
        method: the method (owns ``method.model``, already on ``device``).
        optimizer: built over ``method.parameter_groups()``; each group must carry ``initial_lr``.
        records: modality → training records, sorted by path (Contract 8).
        extract: the :data:`ExtractFn` the methods use for per-epoch features.
        device: training device.
        dist_info: rank / world size.
        input_size: (H, W) training input size.
        callbacks: run in the given order at every event.
    """

    def __init__(
        self,
        *,
        cfg: TrainConfig,
        method: ReIDMethod,
        optimizer: torch.optim.Optimizer,
        records: Mapping[str, Sequence[Any]],
        extract: ExtractFn,
        device: torch.device,
        dist_info: DistInfo,
        input_size: tuple[int, int],
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = cfg
        self.method = method
        self.model = method.model
        self.optimizer = optimizer
        self.records = records
        self.extract = extract
        self.device = device
        self.dist = dist_info
        self.input_size = input_size
        self.callbacks = list(callbacks)
        self.state = TrainerState()
        self.labels: PseudoLabels | None = None
        self.ctx: RefreshContext | None = None
        self.step_in_epoch = 0
        self._loss_sums: dict[str, float] = {}
        self.keep_snapshots = False
        self.on_nonfinite: Callable[[Trainer, NonFiniteLossError], RestartEpoch] | None = None
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._refreshed = False
        self._forward = self._build_forward()

    # ---------------------------------------------------------------- structure of the run

    def _build_forward(self) -> nn.Module:
        wrapper = _TrainForward(self.model)
        if not self.dist.distributed:
            return wrapper
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(wrapper, device_ids=device_ids, find_unused_parameters=True)

    def stage_at(self, epoch: int) -> tuple[int, StageConfig, int]:
        """``(stage_index, stage, epoch_within_stage)`` of global ``epoch``.

        Raises:
            ValueError: ``epoch`` is past the last stage.
        """
        start = 0
        for index, stage in enumerate(self.cfg.stages):
            if epoch < start + stage.epochs:
                return index, stage, epoch - start
            start += stage.epochs
        raise ValueError(f"epoch {epoch} is past the last stage (total {self.cfg.total_epochs} epochs)")

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return self.cfg.total_epochs

    # ---------------------------------------------------------------- loop

    def fit(self) -> TrainerState:
        """Run from ``state.epoch`` to the end of the last stage; returns the final state."""
        self._emit("before_train")
        while self.state.epoch < self.total_epochs:
            try:
                try:
                    self._run_epoch()
                except NonFiniteLossError as exc:
                    if self.on_nonfinite is None:
                        raise
                    raise self.on_nonfinite(self, exc) from exc
            except RestartEpoch as signal:
                self._restart(signal)
        if self.dist.distributed:
            logger.info(
                "rank %d/%d: final model digest %s",
                self.dist.rank,
                self.dist.world_size,
                state_digest(self.model.state_dict()),
            )
        self._emit("after_train")
        return self.state

    def _run_epoch(self) -> None:
        epoch = self.state.epoch
        seed_everything(epoch_seed(self.cfg.seed, epoch))
        if self.keep_snapshots:
            self._snapshots[epoch] = self.capture_state(clone=True)
            self._snapshots.pop(epoch - 2, None)
        self.ctx = self._context(epoch)
        if self.ctx.stage_epoch == 0:
            if self.ctx.stage.reset_optimizer:
                self.reset_optimizer_state()
            self.method.on_stage_start(self.ctx)
            broadcast_module(self.model)  # a re-initialised / reloaded head is rank 0's on every rank
        self._log_refresh(first=not self._refreshed)
        self.labels = self.method.refresh(self.ctx)
        self._refreshed = True
        if self.dist.distributed:
            logger.info(
                "rank %d/%d epoch %d: pseudo-label digest %s",
                self.dist.rank,
                self.dist.world_size,
                epoch,
                labels_digest(self.labels),
            )
        self.step_in_epoch = 0
        self._emit("before_epoch")
        self.model.train()
        self._loss_sums = {}
        batches = iter(self.method.epoch_batches(self.ctx))
        for _ in range(self.ctx.stage.iters):
            self._train_step(next(batches))
        broadcast_module(self.model)  # BatchNorm statistics of each rank's last forward -> rank 0's
        self.state.history.append(self._epoch_record(epoch))
        self.state.epoch += 1
        self._emit("after_epoch")

    def _log_refresh(self, *, first: bool) -> None:
        """Say what the (silent, minutes-long on CPU) pseudo-label refresh does: INFO at the first one of
        this process and at each stage start, DEBUG otherwise."""
        assert self.ctx is not None
        level = logging.INFO if first or self.ctx.stage_epoch == 0 else logging.DEBUG
        if not self.dist.is_main or not logger.isEnabledFor(level):
            return
        sizes = ", ".join(f"{len(rows)} {modality}" for modality, rows in self.records.items())
        logger.log(
            level,
            "epoch %d/%d (stage %s): pseudo-labels: embedding every training crop (%s) and clustering "
            "each modality (k-reciprocal Jaccard distance + DBSCAN); on CPU this takes a while",
            self.state.epoch + 1,
            self.total_epochs,
            self.ctx.stage.name,
            sizes,
        )

    def reset_optimizer_state(self) -> None:
        """Clear the optimizer's per-parameter state, as if it had just been built (``reset_optimizer``).

        Adam's moments and step counts (so its bias correction restarts) and SGD's momentum buffers go;
        the parameter groups with their hyperparameters and ``initial_lr`` stay, and the LR schedule sets
        ``lr`` per epoch as before. It runs at the start of the stage's first epoch, after the epoch-start
        snapshot and before anything else of that epoch, so a checkpoint taken at the stage boundary holds
        the previous stage's state (resuming there resets exactly as an uninterrupted run does) and one
        taken later holds the new stage's state (resuming mid-stage does not reset again).
        """
        cleared = len(self.optimizer.state)
        self.optimizer.state.clear()
        logger.info(
            "stage %s: optimizer state reset (%d parameter states cleared)",
            self.ctx.stage.name if self.ctx is not None else "?",
            cleared,
        )

    def _epoch_record(self, epoch: int) -> dict[str, Any]:
        assert self.ctx is not None and self.labels is not None
        steps = max(self.step_in_epoch, 1)
        record: dict[str, Any] = {"epoch": epoch, "stage": self.ctx.stage.name}
        record.update(self.labels.summary())
        record.update({f"loss/{name}": total / steps for name, total in self._loss_sums.items()})
        record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return record

    def _context(self, epoch: int) -> RefreshContext:
        index, stage, stage_epoch = self.stage_at(epoch)
        return RefreshContext(
            config=self.cfg,
            model=self.model,
            forward=self._forward,
            extract=self.extract,
            records=self.records,
            stage=stage,
            stage_index=index,
            stage_epoch=stage_epoch,
            epoch=epoch,
            seed=epoch_seed(self.cfg.seed, epoch),
            device=self.device,
            input_size=self.input_size,
            memory_momentum=self.state.override(epoch, "momentum"),
            dist=self.dist,
            num_workers=self.cfg.data.num_workers,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA and CPU for ``precision: bf16`` (``vireid.training._precision``)."""
        return autocast(self.cfg.precision, self.device)

    def _train_step(self, batch: Any) -> None:
        self._emit("before_step")
        assert self.ctx is not None
        with self._autocast():
            losses = self.method.training_step(batch, forward=self.ctx.forward)
        loss = losses["loss"]
        values = {name: float(value.detach()) for name, value in losses.items()}
        if broadcast_flag(not bool(torch.isfinite(loss.detach())), self.device):
            raise NonFiniteLossError(self.state.epoch, self.step_in_epoch, values)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.method.after_backward()
        for name, value in values.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value
        self.state.global_step += 1
        self.step_in_epoch += 1
        self._emit("after_step", values)

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ---------------------------------------------------------------- state

    def capture_state(self, *, clone: bool = False) -> dict[str, Any]:
        """Everything needed to continue the run from here (the body of a checkpoint, Contract 7)."""
        stage = self.stage_at(min(self.state.epoch, self.total_epochs - 1))[1]
        state = {
            "format_version": FORMAT_VERSION,
            "method": self.cfg.model.arch,
            "variant": self.cfg.model.variant,
            "training_method": self.cfg.method,
            "model": self.model.state_dict(),
            "epoch": self.state.epoch,
            "stage": stage.name,
            "config": config_to_dict(self.cfg),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"epoch": self.state.epoch, "overrides": dict(self.state.overrides)},
            "method_state": self.method.state_dict(),
            "rng": capture_rng_state(),
            "trainer_state": asdict(self.state),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
        }
        return _clone_tree(state) if clone else state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`capture_state` (from memory or a checkpoint)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method_state"])
        restore_rng_state(state["rng"])
        self.state = TrainerState(**copy.deepcopy(dict(state["trainer_state"])))
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if type(callback).__name__ in saved:
                callback.load_state_dict(saved[type(callback).__name__])

    def _restart(self, signal: RestartEpoch) -> None:
        if signal.epoch not in self._snapshots:
            raise RuntimeError(f"cannot {signal}: no snapshot of that epoch's start is kept") from signal
        overrides, retries = self.state.overrides, self.state.retries
        self.load_state(self._snapshots[signal.epoch])
        self.state.overrides, self.state.retries = overrides, retries
        for later in [e for e in self._snapshots if e > signal.epoch]:
            del self._snapshots[later]
        logger.warning("%s; rolled back to the start of epoch %d", signal, signal.epoch)

    def iter_snapshots(self) -> Iterator[int]:
        """Epochs whose start state is kept in memory (for a :class:`RestartEpoch`)."""
        return iter(sorted(self._snapshots))


def labels_digest(labels: PseudoLabels) -> str:
    """SHA-1 (16 hex digits) of an epoch's pseudo labels and cross labels, to compare ranks in the logs."""
    sha = hashlib.sha1()
    for kind in (labels.labels, labels.cross_labels):
        for modality in sorted(kind):
            sha.update(modality.encode())
            sha.update(np.ascontiguousarray(np.asarray(kind[modality], dtype=np.int64)).tobytes())
    return sha.hexdigest()[:16]


def state_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-1 (16 hex digits) of a state dict's names and exact tensor bytes."""
    sha = hashlib.sha1()
    for name in sorted(state):
        sha.update(name.encode())
        sha.update(state[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def _clone_tree(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _clone_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_tree(item) for item in value)
    return copy.deepcopy(value)
