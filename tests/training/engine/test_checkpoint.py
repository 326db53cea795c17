"""Checkpoint files: atomic writes, RNG state round trip, Contract-7 model loading, errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vireid.training.engine import (
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    load_model_from_checkpoint,
    restore_rng_state,
)


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch) -> None:
    target = tmp_path / "ck" / "last.pt"
    atomic_torch_save({"v": torch.ones(3)}, target)

    def broken_save(obj, handle):  # type: ignore[no-untyped-def]
        handle.write(b"partial garbage")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"v": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match=r"missing.pt"):
        load_model_from_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a vireid training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_load_model_from_checkpoint(tmp_path) -> None:
    from vireid.training.models import build_model

    model = build_model("salcr", variant="tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ckpt = {
        "format_version": 1,
        "method": "salcr",
        "variant": "tiny",
        "model": model.state_dict(),
        "epoch": 3,
        "stage": "main",
        "config": {"seed": 1},
        "optimizer": {},
    }
    atomic_torch_save(ckpt, tmp_path / "last.pt")
    loaded, rest = load_model_from_checkpoint(tmp_path / "last.pt")
    assert not loaded.training and "model" not in rest and rest["epoch"] == 3
    x = torch.randn(2, 3, *model.default_cfg["input_size"][1:])
    model.eval()
    torch.testing.assert_close(loaded.extract(x, "infrared"), model.extract(x, "infrared"))
