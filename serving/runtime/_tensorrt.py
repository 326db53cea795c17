"""TensorRT backend: builds (once, then cached) an engine per modality from the exported ONNX graph.

``tensorrt`` and ``cuda-python`` (``cuda.bindings``) are optional and imported only here, when a
:class:`TensorRTEmbedder` is created. Written against the TensorRT 10 tensor-name API.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from vireid.serving.runtime._embedder import BackendUnavailableError, BatchedEmbedder
from vireid.serving.runtime._manifest import Manifest

__all__ = ["TensorRTEmbedder"]

logger = logging.getLogger(__name__)

_GIB = 1 << 30


def _import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend='tensorrt' needs the `tensorrt` Python package and an NVIDIA GPU "
            "(pip install tensorrt cuda-python); use backend='onnxruntime' otherwise"
        ) from exc
    module: ModuleType = tensorrt
    return module


def _import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend='tensorrt' needs `cuda-python` for device memory (pip install cuda-python)"
            ) from exc
    return cudart  # type: ignore[no-any-return]


def _cuda_call(cudart: ModuleType, result: Any) -> Any:
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime error {err}: {cudart.cudaGetErrorString(err)[1]!r}")
    return values[0] if len(values) == 1 else values


class _Engine:
    """One deserialised engine with its execution context, stream and device buffers."""

    def __init__(
        self, trt: ModuleType, cudart: ModuleType, serialized: bytes, *, max_rows: int, manifest: Manifest
    ) -> None:
        self._cudart = cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialise the engine (stale cache? delete it and retry)")
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()  # one execution context is not thread-safe
        self._in, self._out = manifest.input_name, manifest.output_name
        spec = manifest.input
        self._row_in = 3 * spec.height * spec.width * 4
        self._row_out = manifest.embedding_dim * 4
        self._max_rows = max_rows
        self._stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        self._d_in = _cuda_call(cudart, cudart.cudaMalloc(max_rows * self._row_in))
        self._d_out = _cuda_call(cudart, cudart.cudaMalloc(max_rows * self._row_out))

    def run(self, batch: np.ndarray, dim: int) -> np.ndarray:
        cudart = self._cudart
        rows = batch.shape[0]
        if rows > self._max_rows:
            raise ValueError(f"batch of {rows} rows exceeds the engine profile maximum {self._max_rows}")
        out = np.empty((rows, dim), dtype=np.float32)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            self._context.set_input_shape(self._in, tuple(batch.shape))
            self._context.set_tensor_address(self._in, int(self._d_in))
            self._context.set_tensor_address(self._out, int(self._d_out))
            _cuda_call(
                cudart, cudart.cudaMemcpyAsync(self._d_in, batch.ctypes.data, batch.nbytes, h2d, self._stream)
            )
            if not self._context.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            _cuda_call(
                cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, d2h, self._stream)
            )
            _cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream))
        return out

    def close(self) -> None:
        for ptr in (self._d_in, self._d_out):
            self._cudart.cudaFree(ptr)
        self._cudart.cudaStreamDestroy(self._stream)


class TensorRTEmbedder(BatchedEmbedder):
    """TensorRT backend (GPU only) with a dynamic-batch optimisation profile.

    The engine for each modality is built from ``<modality>.onnx`` on first use of a model on a GPU
    and cached as ``<cache_dir>/<modality>-<key>.engine``, the key hashing model version, TensorRT
    version, GPU name, precision and profile. Profile: min 1, opt and max = ``batch_size`` rows
    (``2 * batch_size`` when the manifest flip-averages, since both views run in one call).

    Args:
        model_dir: Directory holding ``manifest.json`` and the ONNX graphs.
        batch_size: Images per engine call.
        device_id: CUDA device ordinal.
        fp16: Allow FP16 kernels (faster; embeddings differ slightly from fp32).
        cache_dir: Engine cache directory; None → ``<model_dir>/trt-cache``.
        workspace_gib: Builder workspace limit in GiB.

    Raises:
        BackendUnavailableError: ``tensorrt`` or ``cuda-python`` is not installed.
        RuntimeError: the ONNX graph does not parse or the engine does not build.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        device_id: int = 0,
        fp16: bool = False,
        cache_dir: str | Path | None = None,
        workspace_gib: float = 4.0,
    ) -> None:
        trt = _import_tensorrt()
        cudart = _import_cudart()
        super().__init__(Manifest.load(model_dir), batch_size=batch_size)
        self.model_dir = Path(model_dir)
        self.device = "cuda"
        _cuda_call(cudart, cudart.cudaSetDevice(device_id))
        props = _cuda_call(cudart, cudart.cudaGetDeviceProperties(device_id))
        raw_name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        gpu = raw_name.rstrip("\x00").strip()
        self._fp16, self._workspace = fp16, int(workspace_gib * _GIB)
        self._max_rows = batch_size * (2 if self.manifest.flip_average else 1)
        cache = Path(cache_dir) if cache_dir is not None else self.model_dir / "trt-cache"
        self._engines: dict[str, _Engine] = {}
        for modality in self.manifest.modalities:
            path = self._engine_path(cache, modality, trt_version=trt.__version__, gpu=gpu)
            serialized = self._load_or_build(trt, modality, path)
            self._engines[modality] = _Engine(
                trt, cudart, serialized, max_rows=self._max_rows, manifest=self.manifest
            )

    def _engine_path(self, cache: Path, modality: str, *, trt_version: str, gpu: str) -> Path:
        key = "|".join(
            [
                self.manifest.model_version,
                trt_version,
                gpu,
                "fp16" if self._fp16 else "fp32",
                str(self._max_rows),
            ]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache / f"{modality}-{re.sub(r'[^A-Za-z0-9]+', '_', gpu)}-{digest}.engine"

    def _load_or_build(self, trt: ModuleType, modality: str, path: Path) -> bytes:
        if path.is_file():
            logger.info("loading cached TensorRT engine %s", path)
            return path.read_bytes()
        logger.info("building TensorRT engine for %s (this takes a while); cache %s", modality, path)
        serialized = self._build(trt, self.manifest.graph_path(self.model_dir, modality))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(serialized)
        os.replace(tmp, path)
        return serialized

    def _build(self, trt: ModuleType, onnx_path: Path) -> bytes:
        trt_logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(trt_logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace)
        if self._fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        spec = self.manifest.input
        shape = (3, spec.height, spec.width)
        profile = builder.create_optimization_profile()
        profile.set_shape(
            self.manifest.input_name, (1, *shape), (self._max_rows, *shape), (self._max_rows, *shape)
        )
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
        return bytes(serialized)

    def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
        return self._engines[modality].run(batch, self.manifest.embedding_dim)

    def close(self) -> None:
        """Free the device buffers and streams."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
