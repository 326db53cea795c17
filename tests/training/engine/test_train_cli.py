"""``vireid train``: argument wiring, overrides, resume messages and error exit codes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import vireid.training.engine as engine
from vireid.cli import main
from vireid.training.engine import TrainerState

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"


@pytest.fixture
def captured(monkeypatch) -> dict:  # type: ignore[type-arg]
    calls: dict = {}

    def fake_train(cfg, *, run_dir, resume=False):  # type: ignore[no-untyped-def]
        calls.update(cfg=cfg, run_dir=Path(run_dir), resume=resume)
        return TrainerState(epoch=cfg.total_epochs, history=[{"eval/mAP": 0.5}])

    monkeypatch.setattr(engine, "train", fake_train)
    return calls


def test_overrides_run_dir_and_resume(tmp_path, captured, caplog) -> None:
    caplog.set_level(logging.INFO)
    argv = ["train", "--config", str(CONFIG), "cluster.eps=0.45", "optim.lr=1e-3", "--run-dir", str(tmp_path)]
    assert main([*argv, "--resume"]) == 0
    assert captured["cfg"].cluster.eps == 0.45 and captured["cfg"].optim.lr == 1e-3
    assert captured["run_dir"] == tmp_path and captured["resume"] is True
    assert any("no " in r.getMessage() and "last.pt" in r.getMessage() for r in caplog.records)


def test_default_run_dir(captured, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(CONFIG)]) == 0
    assert captured["run_dir"].parent == Path("runs") and captured["run_dir"].name.startswith(
        "baseline_synthetic-"
    )
    assert captured["resume"] is False


def test_errors_exit_with_code_2(tmp_path, captured, caplog) -> None:
    assert main(["train", "--config", str(CONFIG), "--resume"]) == 2  # --resume needs --run-dir
    assert main(["train", "--config", str(CONFIG), "cluster.nope=1"]) == 2
    assert "valid keys" in caplog.text
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert captured == {}
