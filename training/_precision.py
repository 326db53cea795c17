"""Mixed precision: what ``precision`` in the config turns on (no setting is silently ignored).

``fp32``: no autocast. ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` on CUDA **and on CPU** (CPU
autocast runs convolutions, linear layers and matmuls in bfloat16; recent x86 CPUs with AVX-512 BF16 /
AMX do this natively, older ones emulate it, correctly but slower than fp32). Memories, neighbour logits
and losses stay float32 inside it (``vireid.training.memory``). Other device types are refused.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["PRECISIONS", "autocast"]

PRECISIONS = ("fp32", "bf16")
_AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device`` (a no-op context for ``fp32``).

    Args:
        precision: ``"fp32"`` or ``"bf16"`` (``TrainConfig.precision``).
        device: the device the forward runs on.

    Returns:
        A context manager.

    Raises:
        ValueError: an unknown ``precision``, or ``bf16`` on a device type other than CUDA and CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in _AUTOCAST_DEVICES:
        raise ValueError(
            f"precision bf16 runs bf16 autocast on cuda or cpu; device {device.type!r} is not supported "
            "(set precision: fp32)"
        )
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
