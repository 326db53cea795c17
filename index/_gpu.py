"""GPU copies of gallery indexes for searching, when ``faiss-gpu`` is installed and a GPU is present.

The CPU index stays the master: adds, removes, saves and filtered searches go through it, so index files
are always CPU indexes. A GPU copy of the part below the id map (``faiss.index_cpu_to_gpu``) answers the
unfiltered searches; its internal labels are mapped to SQL ids through the CPU id map. Two guards: GPU
support is checked with ``faiss.get_num_gpus()`` before anything is cloned, and a clone must hold as
many vectors as its source (``faiss.index_cpu_to_all_gpus`` with zero GPUs returns an empty index
without an error; a clone is refused rather than searched empty).
"""

from __future__ import annotations

import logging
from typing import Any

import faiss

__all__ = ["GpuCopy", "gpu_count", "gpu_supports", "resolve_index_device"]

logger = logging.getLogger(__name__)

_GPU_TYPES = ("IndexFlat", "IndexIVFFlat", "IndexIVFPQ", "IndexIVFScalarQuantizer")


def gpu_count() -> int:
    """GPUs FAISS can use: 0 without ``faiss-gpu`` (the CPU wheel has no ``StandardGpuResources``)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def gpu_supports(inner: Any) -> bool:
    """True when FAISS can clone this index (below the id map) to a GPU: flat, IVF-Flat/PQ/SQ."""
    inner = faiss.downcast_index(inner)
    return any(isinstance(inner, getattr(faiss, name)) for name in _GPU_TYPES if hasattr(faiss, name))


def resolve_index_device(device: str, *, gpu_id: int = 0) -> int | None:
    """The GPU ordinal gallery searches should use, or None for the CPU.

    Args:
        device: ``"auto"`` (a GPU when FAISS has one), ``"cpu"``, or ``"cuda"`` (a GPU or an error).
        gpu_id: the GPU ordinal to use.

    Raises:
        ValueError: an unknown ``device``, or ``"cuda"`` without a GPU FAISS can use (the message says
            how to get one), or ``gpu_id`` beyond the GPUs present.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"index device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return None
    count = gpu_count()
    if count == 0:
        if device == "cuda":
            raise ValueError(
                "VIREID_INDEX_DEVICE=cuda but FAISS sees no GPU: install faiss-gpu (instead of faiss-cpu) "
                "on a machine with an NVIDIA GPU, or use auto/cpu"
            )
        return None
    if not 0 <= gpu_id < count:
        raise ValueError(f"GPU {gpu_id} asked for gallery search, FAISS sees {count} GPU(s)")
    return gpu_id


class GpuCopy:
    """A GPU clone of a CPU index (the part below ``IndexIDMap``), for searching.

    Args:
        inner: the CPU index below the id map.
        device: GPU ordinal.

    Raises:
        RuntimeError: FAISS has no GPU, or the clone does not hold every vector of ``inner``.
        ValueError: FAISS cannot put this kind of index on a GPU (see :func:`gpu_supports`).
    """

    def __init__(self, inner: Any, device: int) -> None:
        if gpu_count() <= device:
            raise RuntimeError(f"FAISS sees {gpu_count()} GPU(s); cannot use GPU {device}")
        if not gpu_supports(inner):
            raise ValueError(f"FAISS cannot search a {type(faiss.downcast_index(inner)).__name__} on a GPU")
        self.device = device
        self._resources = faiss.StandardGpuResources()
        self.index: Any = faiss.index_cpu_to_gpu(self._resources, device, inner)
        if int(self.index.ntotal) != int(inner.ntotal):
            raise RuntimeError(
                f"GPU clone holds {self.index.ntotal} of {inner.ntotal} vectors; refusing to search it"
            )

    def add(self, vectors: Any) -> None:
        """Append ``(N, D)`` float32 vectors, in the CPU index's order (internal labels stay aligned)."""
        self.index.add(vectors)

    def search(self, queries: Any, k: int, *, nprobe: int | None) -> tuple[Any, Any]:
        """``(distances (Q, k), internal labels (Q, k))``; ``nprobe`` applies to GPU IVF indexes."""
        if nprobe is not None and hasattr(self.index, "nprobe"):
            self.index.nprobe = min(int(nprobe), int(self.index.nlist))
        distances, labels = self.index.search(queries, k)
        return distances, labels
