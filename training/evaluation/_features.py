"""Test-time feature extraction (the evaluator loop), kept apart from the metric maths (house-style §20).

The test embedding of an image is ``norm(mean(extract(x), extract(flip(x))))`` (docs/architecture.md
Contract 1; methods.md §A.6, §B.6), where ``model.extract(x, modality)`` is the model's per-view embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "FeatureStore",
    "RecordLike",
    "default_eval_transform",
    "extract_features",
    "negative_dot_distance",
    "resolve_device",
]

logger = logging.getLogger(__name__)

MODALITIES = ("visible", "infrared")
#: Images per forward pass when the caller does not say.
DEFAULT_BATCH_SIZE = 64

Transform = Callable[[Image.Image], torch.Tensor]


class RecordLike(Protocol):
    """What evaluation needs from an image record (``vireid.training.data.ImageRecord``, Contract 8)."""

    @property
    def path(self) -> Path: ...

    @property
    def modality(self) -> str: ...

    @property
    def camera(self) -> str: ...

    @property
    def pid(self) -> int | None: ...


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_eval_transform(model: nn.Module) -> Transform:
    """Contract-2 eval transform for ``model`` built from its ``default_cfg`` (input size, mean/std, interp).

    Raises:
        AttributeError: the model has no ``default_cfg`` (Contract 1).
    """
    from vireid.training.data import eval_transform  # the data layer owns Contract 2

    cfg = cast(dict[str, Any], model.default_cfg)
    _, height, width = cfg["input_size"]
    return eval_transform(
        height=height, width=width, mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"]
    )


def _load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from exc


class _ImageDataset(Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[Path], transform: Transform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(_load_rgb(self.paths[index]))


def _embed_batch(model: nn.Module, x: torch.Tensor, modality: str, *, flip: bool) -> torch.Tensor:
    extract = cast(Callable[[torch.Tensor, str], torch.Tensor], model.extract)
    out = extract(x, modality).float()
    if flip:
        out = (out + extract(torch.flip(x, dims=(3,)), modality).float()) / 2
    return F.normalize(out, dim=1)


def extract_features(
    model: nn.Module,
    records: Sequence[RecordLike],
    *,
    modality: str,
    transform: Transform | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "cpu",
    flip: bool = True,
    num_workers: int = 0,
) -> np.ndarray:
    """Embed images with the test embedding ``norm(mean(extract(x), extract(flip(x))))`` (Contract 1).

    Args:
        model: an ``nn.Module`` with ``extract(x, modality) -> (B, D)`` for (B, 3, H, W) float32 input.
            It is run in eval mode under ``torch.inference_mode()``; its previous train/eval mode is restored.
        records: images to embed (anything with a ``path``); the order of the output rows follows it.
        modality: ``"visible"`` or ``"infrared"`` — which stem/branch of the model is used.
        transform: PIL RGB image → (3, H, W) float32 tensor; default: Contract-2 transform from
            ``model.default_cfg`` (:func:`default_eval_transform`).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        flip: average with the horizontally flipped view (the standard test protocol); False embeds the
            plain view only (still L2-normalised).
        num_workers: DataLoader worker processes for image decoding.

    Returns:
        (N, D) float32, L2-normalised rows. (0, 0) when ``records`` is empty.

    Raises:
        ValueError: unknown modality, non-positive batch size, or an undecodable image.
        FileNotFoundError: an image path does not exist.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not records:
        return np.zeros((0, 0), dtype=np.float32)
    dev = resolve_device(device)
    dataset = _ImageDataset([Path(r.path) for r in records], transform or default_eval_transform(model))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    was_training = model.training
    model.eval()
    chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for x in loader:
                emb = _embed_batch(model, x.to(dev, non_blocking=True), modality, flip=flip)
                chunks.append(emb.cpu().numpy().astype(np.float32, copy=False))
    finally:
        model.train(was_training)
    return np.concatenate(chunks, axis=0)


def negative_dot_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Distance matrix ``-(q · gᵀ)`` on unit vectors (methods.md §B.6; ranks as Euclidean does, §A.6).

    Args:
        query: (Q, D) float32 L2-normalised rows. gallery: (G, D) float32 L2-normalised rows.

    Returns:
        (Q, G) float32 distances, smaller = more similar.

    Raises:
        ValueError: feature dimensions differ or inputs are not 2-D.
    """
    q = np.asarray(query, dtype=np.float32)
    g = np.asarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"need (Q, D) and (G, D) features, got {q.shape} and {g.shape}")
    return -(q @ g.T)


class FeatureStore:
    """Embeds each (path, modality) once and serves features for any list of records (a per-path cache).

    SYSU trials resample the gallery from the same pool, so :meth:`prefetch` the union of all trial
    galleries once, then :meth:`get` each trial's rows without touching the model again.

    Args:
        model: model with ``extract`` (Contract 1).
        extract_kwargs: forwarded to :func:`extract_features` (``transform``, ``batch_size``, ``device``,
            ``flip``, ``num_workers``).
    """

    def __init__(self, model: nn.Module, **extract_kwargs: Any) -> None:
        self.model = model
        self.extract_kwargs = extract_kwargs
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self.num_embedded = 0

    def prefetch(self, records: Iterable[RecordLike], modality: str) -> None:
        """Embed every record of ``records`` not yet cached for ``modality`` (one batched pass)."""
        missing: dict[str, RecordLike] = {}
        for record in records:
            key = str(record.path)
            if (key, modality) not in self._cache and key not in missing:
                missing[key] = record
        if not missing:
            return
        feats = extract_features(self.model, list(missing.values()), modality=modality, **self.extract_kwargs)
        for key, row in zip(missing, feats, strict=True):
            self._cache[(key, modality)] = row
        self.num_embedded += len(missing)
        logger.debug("embedded %d %s images (%d cached)", len(missing), modality, len(self._cache))

    def get(self, records: Sequence[RecordLike], modality: str) -> np.ndarray:
        """(N, D) float32 features of ``records`` in order, embedding any that are missing."""
        self.prefetch(records, modality)
        if not records:
            raise ValueError("no records given")
        return np.stack([self._cache[(str(r.path), modality)] for r in records])
