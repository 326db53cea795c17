"""Embedder protocol, the shared batching / flip-averaging logic, and the ONNX Runtime backend."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vireid.serving.runtime._gpu_options import GpuOptions, cuda_provider_options
from vireid.serving.runtime._manifest import MODALITIES, Manifest
from vireid.serving.runtime._preprocess import ImageInput, preprocess_batch

__all__ = [
    "DEVICES",
    "BackendUnavailableError",
    "BatchedEmbedder",
    "Embedder",
    "OnnxEmbedder",
    "flip_average",
    "l2_normalize",
    "onnx_providers",
    "resolve_session_device",
    "select_providers",
]

logger = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
_EPS = 1e-12


class BackendUnavailableError(RuntimeError):
    """The requested backend or device cannot run here (package missing, no GPU, provider absent)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns images into L2-normalised embeddings (architecture.md Contract 4, house-style §23)."""

    manifest: Manifest

    def embed(self, images: Sequence[ImageInput], modality: str) -> np.ndarray:
        """Embed decoded images of one modality; returns (N, D) float32 rows of unit L2 norm."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation.

    Args:
        x: (N, D) float array.

    Returns:
        (N, D) float32 rows divided by ``max(||row||, 1e-12)``.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, np.float32(_EPS))).astype(np.float32, copy=False)
    return out


def flip_average(plain: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: mean of the two views (methods.md §A.6, §B.6; Contract 1).

    Args:
        plain: (N, D) float32 embeddings of the images.
        flipped: (N, D) float32 embeddings of their horizontal flips.

    Returns:
        (N, D) float32 ``(plain + flipped) / 2`` (normalise afterwards).

    Raises:
        ValueError: if the shapes differ.
    """
    if plain.shape != flipped.shape:
        raise ValueError(f"flip views disagree in shape: {plain.shape} vs {flipped.shape}")
    out: np.ndarray = ((plain + flipped) * np.float32(0.5)).astype(np.float32, copy=False)
    return out


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """Choose ONNX Runtime execution providers for a requested device.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when the installed build has it).
        available: ``onnxruntime.get_available_providers()``.

    Returns:
        Providers in priority order, always ending with the CPU provider.

    Raises:
        ValueError: unknown ``device``.
        BackendUnavailableError: ``device="cuda"`` with an onnxruntime build lacking CUDA.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise BackendUnavailableError(
            "device='cuda' but this onnxruntime build has no CUDAExecutionProvider "
            f"(available: {list(available)}); install onnxruntime-gpu instead of onnxruntime"
        )
    return [CPU_PROVIDER]


def onnx_providers(
    device: str, available: Sequence[str], *, gpu: GpuOptions | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """The ``providers`` argument of ``onnxruntime.InferenceSession``: :func:`select_providers` with the
    CUDA provider given its options (device id, cuDNN convolution search) from ``gpu``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        available: ``onnxruntime.get_available_providers()``.
        gpu: CUDA provider options; None → ``GpuOptions()`` (device 0, ``EXHAUSTIVE``).

    Returns:
        e.g. ``[("CUDAExecutionProvider", {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}),
        "CPUExecutionProvider"]``, or ``["CPUExecutionProvider"]`` when CUDA is not used (then ``gpu``
        has no effect).

    Raises:
        ValueError: unknown ``device``.
        BackendUnavailableError: ``device="cuda"`` with an onnxruntime build lacking CUDA.
    """
    cuda = cuda_provider_options(gpu if gpu is not None else GpuOptions())
    return [
        (name, dict(cuda)) if name == CUDA_PROVIDER else name for name in select_providers(device, available)
    ]


def resolve_session_device(requested: str, session_providers: Sequence[str]) -> str:
    """Name the device a created session really runs on, from ``session.get_providers()``.

    ONNX Runtime silently falls back to CPU when the CUDA provider cannot start (no GPU, missing
    CUDA/cuDNN libraries), so the session's provider list is the truth, not the requested one.

    Args:
        requested: The device passed to :func:`select_providers`.
        session_providers: ``InferenceSession.get_providers()``.

    Returns:
        ``"cuda"`` or ``"cpu"``.

    Raises:
        BackendUnavailableError: ``requested == "cuda"`` but the session did not get the CUDA provider.
    """
    if CUDA_PROVIDER in session_providers:
        return "cuda"
    if requested == "cuda":
        raise BackendUnavailableError(
            f"device='cuda' but the ONNX Runtime session fell back to {list(session_providers)}; "
            "check the GPU driver and the CUDA/cuDNN libraries onnxruntime-gpu needs"
        )
    return "cpu"


class BatchedEmbedder(abc.ABC):
    """Shared ``embed``: preprocessing, batching, flip averaging and normalisation.

    Subclasses implement :meth:`_forward` for one preprocessed batch. ``embed`` keeps no mutable
    state, so it is thread-safe whenever ``_forward`` is.
    """

    manifest: Manifest

    def __init__(self, manifest: Manifest, *, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.manifest = manifest
        self.batch_size = batch_size

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
        """Run the graph: (B, 3, H, W) float32 → (B, D) float32 per-view embeddings."""

    def _check_modality(self, modality: str) -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if modality not in self.manifest.graphs:
            raise ValueError(f"this model has no {modality!r} graph; it has {list(self.manifest.graphs)}")

    def embed_preprocessed(self, batch: np.ndarray, modality: str) -> np.ndarray:
        """Embed already-preprocessed inputs.

        Args:
            batch: (N, 3, H, W) float32, preprocessed as in Contract 2.
            modality: ``"visible"`` or ``"infrared"``.

        Returns:
            (N, D) float32 embeddings, flip-averaged and L2-normalised as the manifest says.

        Raises:
            ValueError: bad modality or input shape.
            RuntimeError: the graph returned an unexpected shape.
        """
        self._check_modality(modality)
        spec, dim = self.manifest.input, self.manifest.embedding_dim
        expected = (3, spec.height, spec.width)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"expected a (N, {expected[0]}, {expected[1]}, {expected[2]}) batch, got {batch.shape}"
            )
        out = np.empty((batch.shape[0], dim), dtype=np.float32)
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = np.ascontiguousarray(batch[start : start + self.batch_size], dtype=np.float32)
            out[start : start + chunk.shape[0]] = self._embed_chunk(chunk, modality)
        return out

    def _embed_chunk(self, chunk: np.ndarray, modality: str) -> np.ndarray:
        n, dim = chunk.shape[0], self.manifest.embedding_dim
        if self.manifest.flip_average:
            both = np.concatenate([chunk, chunk[..., ::-1]], axis=0)
            feats = self._checked_forward(both, modality, 2 * n, dim)
            feats = flip_average(feats[:n], feats[n:])
        else:
            feats = self._checked_forward(chunk, modality, n, dim)
        return l2_normalize(feats) if self.manifest.normalize_output else feats

    def _checked_forward(self, x: np.ndarray, modality: str, rows: int, dim: int) -> np.ndarray:
        feats = np.asarray(self._forward(np.ascontiguousarray(x), modality), dtype=np.float32)
        if feats.shape != (rows, dim):
            raise RuntimeError(f"{modality} graph returned shape {feats.shape}, expected {(rows, dim)}")
        return feats

    def embed(self, images: Sequence[ImageInput], modality: str) -> np.ndarray:
        """Embed decoded images of one modality (Contract 4).

        Args:
            images: N PIL images or uint8 (H, W[, 3|4]) arrays, any size; preprocessed per Contract 2.
            modality: ``"visible"`` or ``"infrared"`` (picks the graph / stem).

        Returns:
            (N, D) float32, L2-normalised rows (when ``manifest.normalize_output``), flip-averaged when
            ``manifest.flip_average``; (0, D) for an empty list.

        Raises:
            ValueError: unknown modality or a bad image array.
            TypeError: an item is neither a PIL image nor an array.
        """
        self._check_modality(modality)
        dim = self.manifest.embedding_dim
        out = np.empty((len(images), dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = preprocess_batch(images[start : start + self.batch_size], self.manifest.input)
            out[start : start + batch.shape[0]] = self.embed_preprocessed(batch, modality)
        return out


def _default_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS")
    return int(value) if value and value.isdigit() and int(value) > 0 else None


class OnnxEmbedder(BatchedEmbedder):
    """ONNX Runtime backend: one ``InferenceSession`` per modality graph (no torch needed).

    Sessions use graph optimisation level ALL. ``InferenceSession.run`` is thread-safe, so one
    instance may serve concurrent requests.

    Args:
        model_dir: Directory holding ``manifest.json`` and the ONNX graphs.
        device: ``"auto"`` (CUDA when the session really gets it), ``"cpu"`` or ``"cuda"``.
        batch_size: Images per graph call (doubled inside when flip-averaging).
        intra_op_threads: ORT intra-op threads; None → ``$OMP_NUM_THREADS`` or ORT's default.
        inter_op_threads: ORT inter-op threads; None → ORT's default.
        gpu: CUDA provider options (device id, cuDNN convolution search); used only when the
            session gets the CUDA provider. None → ``GpuOptions()``.

    Raises:
        FileNotFoundError: missing manifest or graph file.
        ValueError: invalid manifest or arguments.
        BackendUnavailableError: onnxruntime not installed, or CUDA requested but not obtained.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        batch_size: int = 32,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        gpu: GpuOptions | None = None,
    ) -> None:
        super().__init__(Manifest.load(model_dir), batch_size=batch_size)
        self.gpu = gpu if gpu is not None else GpuOptions()
        self.model_dir = Path(model_dir)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a serve dependency
            raise BackendUnavailableError("the ONNX Runtime backend needs `pip install onnxruntime`") from exc
        providers = onnx_providers(device, ort.get_available_providers(), gpu=self.gpu)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = intra_op_threads if intra_op_threads is not None else _default_threads()
        if threads is not None:
            options.intra_op_num_threads = threads
        if inter_op_threads is not None:
            options.inter_op_num_threads = inter_op_threads
        self._sessions: dict[str, Any] = {}
        for modality in self.manifest.modalities:
            path = self.manifest.graph_path(self.model_dir, modality)
            if not path.is_file():
                raise FileNotFoundError(f"graph for {modality!r} not found: {path}")
            self._sessions[modality] = ort.InferenceSession(str(path), options, providers=providers)
        got = self._sessions[self.manifest.modalities[0]].get_providers()
        self.device = resolve_session_device(device, got)
        wanted_cuda = any(isinstance(p, tuple) and p[0] == CUDA_PROVIDER for p in providers)
        if device == "auto" and wanted_cuda and self.device == "cpu":
            logger.warning("CUDAExecutionProvider is installed but the session fell back to CPU: %s", got)
        logger.info(
            "ONNX Runtime embedder: model %s (%s/%s, %s), device %s, providers %s",
            self.manifest.model_version,
            self.manifest.method,
            self.manifest.variant,
            self.manifest.precision,
            self.device,
            got,
        )

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions really use (``session.get_providers()``)."""
        return list(self._sessions[self.manifest.modalities[0]].get_providers())

    def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
        session = self._sessions[modality]
        (out,) = session.run([self.manifest.output_name], {self.manifest.input_name: batch})
        return np.asarray(out)
