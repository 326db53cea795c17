"""Trainer callbacks: LR schedule, collapse guard, evaluation, logging (TensorBoard + progress bar),
checkpointing (house-style §15). Use them in this order: ``LRSchedule``, ``CollapseGuard``,
``Evaluation``, ``Logging``, ``Checkpoint`` (so the saved history holds the epoch's eval numbers).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer, lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from vireid.training.engine._checkpoint import atomic_torch_save
from vireid.training.engine._config import CollapseConfig, LoggingConfig, OptimConfig
from vireid.training.engine._dist import barrier
from vireid.training.engine._trainer import Callback, NonFiniteLossError, RestartEpoch, Trainer
from vireid.training.methods._base import PseudoLabels

__all__ = [
    "Checkpoint",
    "CollapseGuard",
    "CollapseObservation",
    "EvaluateFn",
    "Evaluation",
    "LRSchedule",
    "Logging",
    "build_lr_scheduler",
    "lr_factor",
]

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[nn.Module, Path], Mapping[str, float]]
"""``evaluate(model, out_dir) -> {"mAP": ..., "R1": ...}`` (fractions); may write files in ``out_dir``."""


def lr_factor(cfg: OptimConfig, epoch: int) -> float:
    """Closed-form multiplier of the base LR at global ``epoch`` (methods.md §A.5 multistep, §B.5 StepLR).

    The reference for :func:`build_lr_scheduler` (which the training uses); the two agree to float
    rounding.
    """
    if cfg.schedule == "multistep":
        factor = cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    elif cfg.schedule == "step":
        factor = cfg.gamma ** (epoch // cfg.step_size)
    else:
        factor = 1.0
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        factor *= (epoch + 1) / cfg.warmup_epochs
    return factor


def build_lr_scheduler(cfg: OptimConfig, optimizer: Optimizer) -> LRScheduler:
    """The per-epoch ``torch.optim.lr_scheduler`` of ``cfg`` (stepped once per epoch).

    ``multistep`` → ``MultiStepLR(milestones, gamma)``, ``step`` → ``StepLR(step_size, gamma)``,
    ``constant`` → ``ConstantLR(factor=1)``; ``warmup_epochs`` W > 1 chains ``LinearLR`` from ``1/W`` to 1
    over the first W epochs (factor ``(epoch + 1) / W``) with it (``ChainedScheduler``). Every group needs
    ``initial_lr`` (:func:`~vireid.training.engine.build_optimizer` sets it); constructing the scheduler
    sets each group's LR to its epoch-0 value.
    """
    main: LRScheduler
    if cfg.schedule == "multistep":
        main = lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.warmup_epochs <= 1:
        return main
    warmup = lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / cfg.warmup_epochs, end_factor=1.0, total_iters=cfg.warmup_epochs - 1
    )
    return lr_scheduler.ChainedScheduler([warmup, main], optimizer=optimizer)


def scheduler_epoch(scheduler: LRScheduler) -> int:
    """The epoch a scheduler from :func:`build_lr_scheduler` is at (``ChainedScheduler``: its parts')."""
    inner = getattr(scheduler, "_schedulers", None)
    epoch: int = inner[-1].last_epoch if inner else scheduler.last_epoch
    return epoch


class LRSchedule(Callback):
    """Per-epoch LR from a ``torch.optim.lr_scheduler`` (:func:`build_lr_scheduler`), state checkpointed.

    The scheduler is built at ``before_train`` over the trainer's optimizer and stepped at the end of every
    epoch (before the checkpoint callback saves it), so its ``last_epoch`` is the epoch about to run. At
    each epoch start every group gets the scheduler's LR × ``lr_scale``, the collapse guard's override for
    that epoch (1 otherwise); the scale is taken off again before the scheduler steps. A resumed or
    rolled-back run restores the scheduler's state with the rest and gets exactly the same LRs. A checkpoint
    without scheduler state (written before this) fast-forwards a fresh scheduler to its epoch.
    """

    def __init__(self, cfg: OptimConfig) -> None:
        self.cfg = cfg
        self.scheduler: LRScheduler | None = None
        self._pending: Mapping[str, Any] | None = None

    def before_train(self, trainer: Trainer) -> None:
        self.scheduler = build_lr_scheduler(self.cfg, trainer.optimizer)
        if self._pending:
            self.scheduler.load_state_dict(dict(self._pending))
        else:
            with warnings.catch_warnings():  # fast-forward before any optimizer.step(): torch warns
                warnings.simplefilter("ignore", UserWarning)
                while scheduler_epoch(self.scheduler) < trainer.state.epoch:
                    self.scheduler.step()
        self._pending = None

    def before_epoch(self, trainer: Trainer) -> None:
        assert self.scheduler is not None
        epoch = trainer.state.epoch
        if scheduler_epoch(self.scheduler) != epoch:
            raise RuntimeError(f"LR scheduler at epoch {scheduler_epoch(self.scheduler)}, trainer at {epoch}")
        scale = trainer.state.override(epoch, "lr_scale") or 1.0
        for group, lr in zip(trainer.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr * scale

    def after_epoch(self, trainer: Trainer) -> None:
        assert self.scheduler is not None
        for group, lr in zip(trainer.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # without the collapse guard's scale: the chained schedulers build on it
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return dict(self._pending or {})
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scheduler is None or not state:
            self._pending = state
            return
        self.scheduler.load_state_dict(dict(state))


@dataclass(frozen=True)
class CollapseObservation:
    """What :class:`CollapseGuard` saw at an epoch start.

    Attributes:
        summary: per modality the cluster count (previous → current, relative change) and outlier share.
        watched: whether the cluster-drop rule applies to this epoch (``collapse.watch_epochs``).
        reason: the first rule that fired, with the observed value and the limit; None when healthy.
        fatal: the rule that fired cannot be waived after ``max_retries`` (too few clusters, outliers).
    """

    summary: str
    watched: bool
    reason: str | None
    fatal: bool


class CollapseGuard(Callback):
    """Detects the known first-epoch collapse and re-runs the epoch that caused it (methods.md §B.3).

    Signs (checked on each epoch's fresh pseudo labels, and on every loss): a non-finite loss; fewer
    than ``min_clusters`` clusters or ≥ ``max_outlier_fraction`` outliers in a modality; a modality's
    cluster count falling by more than ``max_cluster_drop`` since the previous epoch (watched while the
    previous epoch is one of the first ``watch_epochs``). Labels are computed
    from the model the previous epoch produced, so a bad count rolls back to the start of the previous
    epoch; a bad loss rolls back to the start of the current one. The re-run uses memory momentum
    ``momenta[i]`` on attempt i (then also LR × ``lr_factor``). Epoch-0 labels that already fail
    (nothing to roll back) raise ``RuntimeError`` advising on ``cluster.eps``. After ``max_retries``
    a cluster drop is accepted with a warning; a non-finite loss or < ``min_clusters`` raises.

    Every watched epoch logs what the rules saw (:meth:`observe`: cluster counts before → after, the drop,
    outlier shares), and a fired rule names itself, the observed value and its ``collapse.*`` limit. The
    limits are per preset (``collapse:`` in the YAML): small synthetic sets legitimately merge many of the
    first epoch's clusters, so the tiny and mobile presets set a larger ``max_cluster_drop``.
    """

    def __init__(self, cfg: CollapseConfig) -> None:
        self.cfg = cfg

    def before_train(self, trainer: Trainer) -> None:
        trainer.keep_snapshots = True
        trainer.on_nonfinite = self._on_nonfinite

    def before_epoch(self, trainer: Trainer) -> None:
        assert trainer.labels is not None
        epoch = trainer.state.epoch
        previous = trainer.state.history[-1] if trainer.state.history else None
        seen = self.observe(trainer.labels, previous)
        if seen.watched:
            logger.info("collapse guard, epoch %d: %s", epoch, seen.summary)
        reason, fatal = seen.reason, seen.fatal
        if reason is None:
            return
        if epoch == 0 or previous is None or previous.get("epoch") != epoch - 1:
            if fatal:
                raise RuntimeError(
                    f"pseudo labels of epoch {epoch} are unusable ({reason}) and there is no earlier "
                    "epoch to re-run; check cluster.eps / cluster.min_samples for this data"
                )
            return
        if epoch - 1 not in set(trainer.iter_snapshots()):
            logger.warning("collapse sign at epoch %d (%s) but no snapshot to roll back to", epoch, reason)
            return
        signal = self._remedy(trainer, epoch - 1, reason, fatal=fatal)
        if signal is not None:
            raise signal

    def observe(self, labels: PseudoLabels, previous: Mapping[str, Any] | None) -> CollapseObservation:
        """What the rules see in an epoch's fresh ``labels`` against the ``previous`` epoch's record.

        Args:
            labels: this epoch's pseudo labels.
            previous: the history entry of the previous epoch (``clusters/<modality>``), or None.

        Returns:
            A :class:`CollapseObservation`: per modality the cluster count (and the previous one), the
            outlier share, and the first rule that fired (with the values it compared) or None.
        """
        cfg = self.cfg
        watched = previous is not None and previous.get("epoch", 0) < cfg.watch_epochs
        parts, reason, fatal = [], None, False
        for modality in labels.labels:
            count, outliers = labels.num_clusters(modality), labels.outlier_fraction(modality)
            before = (previous or {}).get(f"clusters/{modality}")
            drop = 1.0 - count / before if before else 0.0
            change = f"{int(before)} -> {count} clusters ({-drop:+.0%})" if before else f"{count} clusters"
            parts.append(f"{modality} {change}, {outliers:.0%} outliers")
            if reason is not None:
                continue
            if count < cfg.min_clusters:
                reason, fatal = (
                    f"{modality}: {count} cluster(s), below collapse.min_clusters {cfg.min_clusters}",
                    True,
                )
            elif outliers >= cfg.max_outlier_fraction:
                reason, fatal = (
                    f"{modality}: {outliers:.1%} outliers, at or above collapse.max_outlier_fraction "
                    f"{cfg.max_outlier_fraction:.0%}",
                    True,
                )
            elif watched and before and drop > cfg.max_cluster_drop:
                reason = (
                    f"{modality}: clusters fell from {int(before)} to {count} ({drop:.0%} drop, more than "
                    f"collapse.max_cluster_drop {cfg.max_cluster_drop:.0%} within the first "
                    f"{cfg.watch_epochs} epoch(s))"
                )
        return CollapseObservation("; ".join(parts), watched, reason, fatal)

    def _on_nonfinite(self, trainer: Trainer, exc: NonFiniteLossError) -> RestartEpoch:
        signal = self._remedy(trainer, exc.epoch, str(exc), fatal=True)
        assert signal is not None  # fatal signs raise instead of being accepted
        return signal

    def _remedy(self, trainer: Trainer, epoch: int, reason: str, *, fatal: bool) -> RestartEpoch | None:
        key = str(epoch)
        attempt = trainer.state.retries.get(key, 0) + 1
        if attempt > self.cfg.max_retries:
            if fatal:
                raise RuntimeError(
                    f"training collapsed at epoch {epoch} after {attempt - 1} re-runs: {reason}"
                )
            logger.warning(
                "collapse guard: keeping epoch %d after %d re-runs (%s)", epoch, attempt - 1, reason
            )
            return None
        momenta = self.cfg.momenta or (0.9,)
        momentum = momenta[min(attempt, len(momenta)) - 1]
        lr_scale = self.cfg.lr_factor ** max(0, attempt - len(momenta))
        trainer.state.retries[key] = attempt
        trainer.state.overrides[key] = {"momentum": momentum, "lr_scale": lr_scale}
        logger.warning(
            "collapse guard: %s; re-running epoch %d (attempt %d) with memory momentum %.2f and LR x %g",
            reason,
            epoch,
            attempt,
            momentum,
            lr_scale,
        )
        return RestartEpoch(epoch, reason)


class Evaluation(Callback):
    """Runs ``evaluate(model, out_dir)`` every ``every`` epochs and after the last (rank 0 only).

    Results go into the epoch's history entry (``eval/<name>``) and ``<out_dir>/epoch_XXXX/``; a
    summary of all evaluations is kept in ``<out_dir>/metrics.json``.
    """

    def __init__(self, evaluate: EvaluateFn, *, every: int, out_dir: Path, is_main: bool = True) -> None:
        self.evaluate = evaluate
        self.every = every
        self.out_dir = Path(out_dir)
        self.is_main = is_main

    def due(self, trainer: Trainer) -> bool:
        """Whether the epoch that just finished is evaluated."""
        epoch = trainer.state.epoch
        return self.every > 0 and (epoch % self.every == 0 or epoch == trainer.total_epochs)

    def after_epoch(self, trainer: Trainer) -> None:
        if not self.due(trainer):
            return
        if self.is_main:
            start = time.perf_counter()
            out = self.out_dir / f"epoch_{trainer.state.epoch:04d}"
            out.mkdir(parents=True, exist_ok=True)
            metrics = {f"eval/{k}": float(v) for k, v in self.evaluate(trainer.model, out).items()}
            trainer.state.history[-1].update(metrics)
            logger.info(
                "eval after epoch %d (%.1f s): %s",
                trainer.state.epoch,
                time.perf_counter() - start,
                ", ".join(f"{k[5:]}={v:.4f}" for k, v in metrics.items()),
            )
            self._write_summary(trainer)
        barrier()
        trainer.model.train()

    def _write_summary(self, trainer: Trainer) -> None:
        rows = [row for row in trainer.state.history if any(k.startswith("eval/") for k in row)]
        (self.out_dir / "metrics.json").write_text(json.dumps(rows, indent=2))


class Logging(Callback):
    """Console progress bar (tqdm: losses, clusters, ETA), TensorBoard scalars and per-epoch log lines.

    Only rank 0 writes. TensorBoard files go to ``tb_dir`` (``<run_dir>/tb``).
    """

    def __init__(self, cfg: LoggingConfig, *, tb_dir: Path | None, is_main: bool = True) -> None:
        self.cfg = cfg
        self.tb_dir = tb_dir
        self.is_main = is_main
        self._writer: Any = None
        self._bar: Any = None
        self._epoch_start = 0.0
        self._durations: list[float] = []

    def before_train(self, trainer: Trainer) -> None:
        if self.is_main and self.cfg.tensorboard and self.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tb_dir))

    def before_epoch(self, trainer: Trainer) -> None:
        self._epoch_start = time.perf_counter()
        if not self.is_main:
            return
        assert trainer.labels is not None and trainer.ctx is not None
        clusters = trainer.labels.summary()
        logger.info(
            "epoch %d/%d (stage %s): %s, lr %.2e",
            trainer.state.epoch + 1,
            trainer.total_epochs,
            trainer.ctx.stage.name,
            ", ".join(f"{k}={int(v) if float(v).is_integer() else v}" for k, v in clusters.items()),
            trainer.optimizer.param_groups[0]["lr"],
        )
        self._scalars(clusters, trainer.state.epoch)
        if self.cfg.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=trainer.ctx.stage.iters,
                desc=f"epoch {trainer.state.epoch + 1}/{trainer.total_epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def after_step(self, trainer: Trainer, losses: Mapping[str, float]) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.update(1)
        if trainer.step_in_epoch % self.cfg.log_every == 0 or trainer.step_in_epoch == 1:
            if self._bar is not None:
                self._bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            self._scalars({f"train/{k}": v for k, v in losses.items()}, trainer.state.global_step)
            self._scalars({"train/lr": trainer.optimizer.param_groups[0]["lr"]}, trainer.state.global_step)

    def after_epoch(self, trainer: Trainer) -> None:
        self._durations.append(time.perf_counter() - self._epoch_start)
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        row = trainer.state.history[-1]
        remaining = (trainer.total_epochs - trainer.state.epoch) * sum(self._durations) / len(self._durations)
        logger.info(
            "epoch %d done in %.1f s (ETA %s): %s",
            trainer.state.epoch,
            self._durations[-1],
            _hms(remaining),
            ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("loss", "eval/"))),
        )
        self._scalars({f"epoch/{k}": v for k, v in row.items() if isinstance(v, float)}, trainer.state.epoch)
        if self._writer is not None:
            self._writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            if math.isfinite(value):
                self._writer.add_scalar(name, value, step)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Checkpoint(Callback):
    """Writes ``<directory>/last.pt`` atomically after every epoch (rank 0), plus ``epoch_XXXX.pt``
    every ``keep_every`` epochs (0 = never) and ``<stage name>.pt`` (e.g. ``intra.pt``, ``cross.pt``) after
    the last epoch of each stage. ``last.pt`` is what ``--resume`` continues from.
    """

    def __init__(self, directory: Path, *, keep_every: int = 0, is_main: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_every = keep_every
        self.is_main = is_main

    @property
    def last(self) -> Path:
        """Path of the rolling checkpoint."""
        return self.directory / "last.pt"

    def after_epoch(self, trainer: Trainer) -> None:
        if self.is_main:
            atomic_torch_save(trainer.capture_state(), self.last)
            epoch = trainer.state.epoch
            if self.keep_every > 0 and epoch % self.keep_every == 0:
                shutil.copyfile(self.last, self.directory / f"epoch_{epoch:04d}.pt")
            _, stage, stage_epoch = trainer.stage_at(epoch - 1)
            if stage_epoch == stage.epochs - 1:
                shutil.copyfile(self.last, self.directory / f"{stage.name}.pt")
                logger.info("end of stage %s: %s", stage.name, self.directory / f"{stage.name}.pt")
            logger.debug("checkpoint written: %s (epoch %d)", self.last, epoch)
        barrier()
