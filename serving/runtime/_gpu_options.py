"""Accelerator options of the embedders: CUDA device, cuDNN convolution search, TensorRT engine build.

One small frozen config (house-style §8) that :func:`~vireid.serving.runtime.load_embedder` hands to the
backend it picks; the service builds it from its ``VIREID_*`` settings. Every field is accepted on a CPU
host and changes nothing there: the CUDA fields reach only ONNX Runtime's ``CUDAExecutionProvider`` (when a
session gets that provider) and TensorRT, the ``trt_*`` fields only the TensorRT backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CUDNN_CONV_ALGO_SEARCH", "GpuOptions", "cuda_provider_options"]

#: ONNX Runtime's ``cudnn_conv_algo_search`` values (its default is ``EXHAUSTIVE``).
CUDNN_CONV_ALGO_SEARCH: tuple[str, ...] = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


@dataclass(frozen=True, kw_only=True)
class GpuOptions:
    """GPU options for the ONNX Runtime CUDA provider and the TensorRT backend.

    Attributes:
        device_id: CUDA device ordinal, for both the CUDA execution provider and TensorRT.
        cudnn_conv_algo_search: How the CUDA provider picks cuDNN convolution algorithms:
            ``"EXHAUSTIVE"`` (benchmark all once per shape: slowest first call, fastest after; ORT's
            default), ``"HEURISTIC"`` (cuDNN's heuristics: quick start) or ``"DEFAULT"`` (the default
            algorithm, no search). ONNX Runtime only.
        trt_fp16: Let TensorRT use FP16 kernels (faster; embeddings differ slightly from fp32).
        trt_cache_dir: Where TensorRT engines are cached; None → ``<model_dir>/trt-cache``.
        trt_workspace_gib: TensorRT builder workspace limit in GiB.

    Raises:
        ValueError: a negative device id, an unknown search mode or a non-positive workspace.
    """

    device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    trt_fp16: bool = False
    trt_cache_dir: Path | None = None
    trt_workspace_gib: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.device_id, bool) or not isinstance(self.device_id, int) or self.device_id < 0:
            raise ValueError(f"device_id must be an integer >= 0, got {self.device_id!r}")
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCH:
            raise ValueError(
                f"cudnn_conv_algo_search must be one of {list(CUDNN_CONV_ALGO_SEARCH)}, "
                f"got {self.cudnn_conv_algo_search!r}"
            )
        if not isinstance(self.trt_fp16, bool):
            raise ValueError(f"trt_fp16 must be true or false, got {self.trt_fp16!r}")
        workspace = self.trt_workspace_gib
        if (
            isinstance(workspace, bool)
            or not isinstance(workspace, (int, float))
            or not 0 < workspace < math.inf
        ):
            raise ValueError(f"trt_workspace_gib must be a positive number, got {workspace!r}")
        if self.trt_cache_dir is not None:
            object.__setattr__(self, "trt_cache_dir", Path(self.trt_cache_dir))


def cuda_provider_options(options: GpuOptions) -> dict[str, str]:
    """The provider-options dict of ONNX Runtime's ``CUDAExecutionProvider`` for ``options``.

    Values are strings, as ONNX Runtime stores them (``session.get_provider_options()`` gives them back
    so). Only keys that ``options`` sets are present; ORT's own defaults cover the rest.
    """
    return {
        "device_id": str(options.device_id),
        "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
    }
