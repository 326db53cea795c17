"""``load_embedder``: pick a backend for an exported model directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vireid.serving.runtime._embedder import DEVICES, BackendUnavailableError, Embedder, OnnxEmbedder

__all__ = ["BACKENDS", "load_embedder"]

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")


def load_embedder(
    model_dir: str | Path,
    *,
    backend: str = "auto",
    device: str = "auto",
    **options: Any,
) -> Embedder:
    """Load the embedder for an exported model (architecture.md Contract 4).

    ``backend="auto"`` means ONNX Runtime (CUDA provider when installed and really obtained, CPU
    otherwise). TensorRT is used only when asked for, because its first start builds an engine
    (minutes) and it needs extra packages.

    Args:
        model_dir: Directory written by ``vireid export`` (``manifest.json`` + ONNX graphs).
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; TensorRT needs ``"auto"`` or ``"cuda"``.
        **options: Passed to the backend class (e.g. ``batch_size``, ``intra_op_threads`` for
            :class:`OnnxEmbedder`; ``batch_size``, ``fp16``, ``cache_dir`` for ``TensorRTEmbedder``).

    Returns:
        An object following the :class:`Embedder` protocol.

    Raises:
        ValueError: unknown backend/device, invalid manifest, or TensorRT asked to run on CPU.
        FileNotFoundError: missing manifest or graph.
        BackendUnavailableError: the backend's packages or the GPU are missing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if backend == "tensorrt":
        if device == "cpu":
            raise ValueError("backend='tensorrt' runs on a GPU only; use device='cuda' or 'auto'")
        from vireid.serving.runtime._tensorrt import TensorRTEmbedder

        return TensorRTEmbedder(model_dir, **options)
    try:
        return OnnxEmbedder(model_dir, device=device, **options)
    except BackendUnavailableError:
        logger.error("could not start the ONNX Runtime embedder for %s on device %s", model_dir, device)
        raise
