"""Checkpoints (docs/architecture.md Contract 7), RNG state and seeding.

A checkpoint is one ``torch.save`` dict::

    {"format_version": 1, "method": <model arch, e.g. "salcr">, "variant": "tiny"|"full",
     "training_method": <cfg.method, e.g. "baseline">, "model": state_dict, "epoch": epochs completed,
     "stage": stage name, "config": resolved config dict, "optimizer", "scheduler", "method_state",
     "rng", "trainer_state", "callbacks"}

``"method"`` is the model's ``build_model`` name (what the exporter and manifest call the method); the
training method is recorded separately as ``"training_method"``. Everything inside is tensors or plain
Python values so the file loads with ``torch.load(weights_only=True)`` (no arbitrary unpickling).
Files are written to a temporary name in the same folder and renamed, so a kill mid-write never
leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "atomic_torch_save",
    "capture_rng_state",
    "epoch_seed",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "seed_everything",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "method", "variant", "model", "epoch", "config")


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch`` derived from the run seed (stable across processes and resumes)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint32)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python / numpy / torch (+ CUDA), as tensors and plain values (weights_only safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename over ``path``.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a training checkpoint.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: not a vireid training checkpoint, or an unsupported ``format_version``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in _REQUIRED_KEYS):
        raise ValueError(f"{path} is not a vireid training checkpoint (needs keys {list(_REQUIRED_KEYS)})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format_version {ckpt['format_version']}")
    return ckpt


def load_model_from_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint (Contract 7).

    The model is built with ``build_model(ckpt["method"], variant=ckpt["variant"])`` at the run's
    ``model.input_size`` (no pretrained weights are read: the checkpoint holds all of them), loaded
    strictly and put in eval mode.

    Args:
        path: a checkpoint written by the Trainer (e.g. ``<run_dir>/checkpoints/last.pt``).
        map_location: where tensors are loaded.

    Returns:
        ``(model, rest)`` where ``rest`` is the checkpoint dict without ``"model"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a vireid checkpoint.
    """
    from vireid.training.models import build_model

    ckpt = load_checkpoint(path, map_location=map_location)
    size = (ckpt["config"].get("model") or {}).get("input_size")
    model = build_model(ckpt["method"], variant=ckpt["variant"], input_size=tuple(size) if size else None)
    model.load_state_dict(ckpt["model"])
    model.to(map_location).eval()
    rest = {key: value for key, value in ckpt.items() if key != "model"}
    logger.info(
        "loaded %s model (%s) from %s, epoch %d", ckpt["method"], ckpt["variant"], path, ckpt["epoch"]
    )
    return model, rest


def load_model_weights(model: nn.Module, path: str | Path, *, arch: str, variant: str) -> None:
    """Copy the model weights of a training checkpoint into ``model`` (``model.init_from``).

    Only ``ckpt["model"]`` is used (strict load); optimizer, schedule and method state are ignored.

    Args:
        model: the freshly built model of this run (``arch`` / ``variant``).
        path: a checkpoint written by the Trainer.
        arch / variant: the run's ``model.arch`` / ``model.variant``; the checkpoint must match both.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a vireid checkpoint, or one of another architecture or variant.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    if (ckpt["method"], ckpt["variant"]) != (arch, variant):
        raise ValueError(
            f"model.init_from={path} holds a {ckpt['method']}/{ckpt['variant']} model; this run builds "
            f"{arch}/{variant}"
        )
    model.load_state_dict(ckpt["model"])
    logger.info(
        "model.init_from: weights of %s (%s, epoch %d) loaded",
        path,
        ckpt.get("training_method"),
        ckpt["epoch"],
    )
