"""``precision``: bf16 autocast on CPU as on CUDA, fp32 untouched, other devices refused (issue 11 item 3)."""

from __future__ import annotations

import pytest
import torch

from vireid.training._precision import autocast
from vireid.training.memory import ClusterMemory
from vireid.training.models import build_model


def test_bf16_on_cpu_runs_cpu_autocast() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("precision, device", [("bf16", "meta"), ("fp16", "cpu")])
def test_unsupported_settings_are_refused(precision: str, device: str) -> None:
    with pytest.raises(ValueError, match="precision"):
        autocast(precision, torch.device(device))


def test_tiny_salcr_step_trains_in_bf16_on_cpu() -> None:
    """The conv trunk runs in bf16 under CPU autocast; the memory loss stays fp32; gradients are finite."""
    torch.manual_seed(0)
    model = build_model("salcr", variant="tiny").train()
    memory = ClusterMemory(torch.randn(3, model.default_cfg["embed_dim"]))
    x = torch.randn(4, 3, *model.default_cfg["input_size"][1:])
    with autocast("bf16", torch.device("cpu")):
        out = model.forward_train(x, x, with_parts=False)
        loss = memory.loss(out["f_g"], torch.tensor([0, 1, 2, 0] * 2))  # visible + infrared rows
    assert out["f_g"].dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
