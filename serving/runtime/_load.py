"""``load_embedder``: pick a backend for an exported model directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vireid.serving.runtime._embedder import DEVICES, BackendUnavailableError, Embedder, OnnxEmbedder
from vireid.serving.runtime._gpu_options import GpuOptions

__all__ = ["BACKENDS", "load_embedder", "tensorrt_options"]

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")


def load_embedder(
    model_dir: str | Path,
    *,
    backend: str = "auto",
    device: str = "auto",
    gpu: GpuOptions | None = None,
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
        gpu: GPU options. ONNX Runtime: ``device_id`` and ``cudnn_conv_algo_search`` go to the CUDA
            execution provider (no effect on a CPU session). TensorRT: ``device_id``, ``trt_fp16``,
            ``trt_cache_dir`` and ``trt_workspace_gib`` become its ``device_id``, ``fp16``, ``cache_dir``
            and ``workspace_gib``. None → ``GpuOptions()``.
        **options: Passed to the backend class, winning over ``gpu`` (e.g. ``batch_size``,
            ``intra_op_threads`` for :class:`OnnxEmbedder`; ``batch_size``, ``fp16``, ``cache_dir`` for
            ``TensorRTEmbedder``).

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

        return TensorRTEmbedder(model_dir, **{**tensorrt_options(gpu), **options})
    if gpu is not None and gpu.trt_fp16:
        logger.warning("trt_fp16 applies to backend='tensorrt' only; ignored by ONNX Runtime")
    try:
        return OnnxEmbedder(model_dir, device=device, gpu=gpu, **options)
    except BackendUnavailableError:
        logger.error("could not start the ONNX Runtime embedder for %s on device %s", model_dir, device)
        raise


def tensorrt_options(gpu: GpuOptions | None) -> dict[str, Any]:
    """Keyword arguments of ``TensorRTEmbedder`` taken from ``gpu`` (None → ``GpuOptions()``)."""
    gpu = gpu if gpu is not None else GpuOptions()
    return {
        "device_id": gpu.device_id,
        "fp16": gpu.trt_fp16,
        "cache_dir": gpu.trt_cache_dir,
        "workspace_gib": gpu.trt_workspace_gib,
    }
