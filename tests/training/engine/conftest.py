"""Fixtures of the engine tests: a tiny in-memory method that exercises every Trainer path in milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from vireid.training.engine import (
    Callback,
    Checkpoint,
    CollapseGuard,
    LRSchedule,
    StageConfig,
    TrainConfig,
    Trainer,
    build_optimizer,
)
from vireid.training.methods import PseudoLabels, RefreshContext, TrainForward


class TinyNet(nn.Module):
    """A linear embedder with BatchNorm (so running stats are part of the state)."""

    def __init__(self, dim: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, classes))
        self.default_cfg = {"input_size": (3, 8, 4)}

    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.body(x)}


class FakeMethod:
    """Random batches from the global torch RNG, a momentum 'memory' updated after backward.

    ``clusters(epoch, momentum)`` decides the per-epoch cluster count (to inject collapses);
    ``nan_when(epoch, step, momentum)`` makes a step's loss NaN.
    """

    name = "fake"

    def __init__(
        self,
        *,
        clusters: Callable[[int, float | None], int] = lambda epoch, momentum: 4,
        nan_when: Callable[[int, int, float | None], bool] = lambda epoch, step, momentum: False,
    ) -> None:
        torch.manual_seed(0)
        self.model = TinyNet()
        self.data = torch.randn(64, 6)
        self.targets = torch.randint(0, 4, (64,))
        self.memory = torch.zeros(4, 8)
        self.clusters, self.nan_when = clusters, nan_when
        self.momentum = 0.1
        self.seen_momenta: list[tuple[int, float | None]] = []
        self.stage_starts: list[int] = []
        self._step = 0
        self._epoch = 0
        self._ctx_momentum: float | None = None
        self._pending: Tensor | None = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    def on_stage_start(self, ctx: RefreshContext) -> None:
        self.stage_starts.append(ctx.epoch)

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        self._epoch, self._ctx_momentum, self._step = ctx.epoch, ctx.memory_momentum, 0
        self.momentum = ctx.momentum(0.1)
        self.seen_momenta.append((ctx.epoch, ctx.memory_momentum))
        k = self.clusters(ctx.epoch, ctx.memory_momentum)
        labels = np.arange(20) % max(k, 1) if k > 0 else -np.ones(20, dtype=np.int64)
        return PseudoLabels({"visible": labels.astype(np.int64), "infrared": labels.astype(np.int64)})

    def epoch_batches(self, ctx: RefreshContext) -> Iterator[Tensor]:
        while True:
            yield torch.randint(0, self.data.shape[0], (8,))

    def training_step(self, batch: Tensor, *, forward: TrainForward) -> dict[str, Tensor]:
        out = forward(self.data[batch])["logits"]
        loss = nn.functional.cross_entropy(out, self.targets[batch]) + 1e-3 * self.memory.sum()
        if self.nan_when(self._epoch, self._step, self._ctx_momentum):
            loss = loss * float("nan")
        self._step += 1
        self._pending = out.detach()
        return {"loss": loss, "ce": loss.detach()}

    def after_backward(self) -> None:
        assert self._pending is not None
        update = self._pending.mean(0).repeat(2)[:8]
        self.memory = self.momentum * self.memory + (1 - self.momentum) * update

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory = state["memory"].clone()


def make_trainer(
    method: FakeMethod,
    *,
    run_dir: Any,
    epochs: tuple[int, ...] = (2, 2),
    iters: int = 5,
    callbacks: tuple[Callback, ...] = (),
    guard: bool = True,
    reset_optimizer: tuple[int, ...] = (),
    **cfg_kwargs: Any,
) -> Trainer:
    """A Trainer over ``method`` with stages of ``epochs`` and the standard LR/guard/checkpoint callbacks.

    ``reset_optimizer`` lists the indices of the stages with ``reset_optimizer=True``.
    """
    stages = tuple(
        StageConfig(name=f"s{i}", epochs=e, iters=iters, reset_optimizer=i in reset_optimizer)
        for i, e in enumerate(epochs)
    )
    cfg = TrainConfig(method="fake", stages=stages, **cfg_kwargs)
    optimizer = build_optimizer(cfg.optim, method.parameter_groups())
    standard: list[Callback] = [LRSchedule(cfg.optim)]
    if guard:
        standard.append(CollapseGuard(cfg.collapse))
    standard.append(Checkpoint(run_dir / "checkpoints"))
    from vireid.training.methods import DistInfo

    return Trainer(
        cfg=cfg,
        method=method,  # type: ignore[arg-type]
        optimizer=optimizer,
        records={"visible": [], "infrared": []},
        extract=lambda modality, *, flip=False: torch.zeros(0, 1),
        device=torch.device("cpu"),
        dist_info=DistInfo(),
        input_size=(8, 4),
        callbacks=[*standard, *callbacks],
    )


@pytest.fixture
def fake_method() -> type[FakeMethod]:
    return FakeMethod


@pytest.fixture
def trainer_factory() -> Callable[..., Trainer]:
    return make_trainer


class StopAt(Callback):
    """Simulates a kill: raises KeyboardInterrupt before step ``step`` of global epoch ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def before_step(self, trainer: Trainer) -> None:
        if trainer.state.epoch == self.epoch and trainer.step_in_epoch == self.step:
            raise KeyboardInterrupt


@pytest.fixture
def stop_at() -> type[StopAt]:
    return StopAt
