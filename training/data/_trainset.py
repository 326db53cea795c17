"""Training dataset giving the visible plain / visible augmented / infrared views, and their collate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from vireid.training.data._eval import load_image
from vireid.training.data._recipes import ViewTransforms

VIEWS = ("rgb", "rgb_aug", "ir")
_VISIBLE_VIEWS = ("rgb", "rgb_aug")


def _labels(labels: Sequence[int] | np.ndarray | None, count: int, name: str) -> np.ndarray:
    if labels is None:
        return np.full(count, -1, dtype=np.int64)
    array = np.asarray(labels, dtype=np.int64)
    if array.shape != (count,):
        raise ValueError(f"{name} must have one label per image ({count}), got shape {array.shape}")
    return array


class TrainSet(Dataset[dict[str, Any]]):
    """Images of one or both modalities, returned as augmented views with their index and label.

    Keys: with both modalities, ``dataset[(rgb_index, ir_index)]`` (either may be ``-1`` to skip that side);
    with one modality, ``dataset[index]``. The item is a dict with the requested views among ``"rgb"``
    (visible plain view), ``"rgb_aug"`` (visible channel-augmented view, from the same image) and ``"ir"``,
    each a (3, H, W) float32 tensor, plus ``"rgb_index"``/``"rgb_label"`` and/or ``"ir_index"``/``"ir_label"``
    (ints; label ``-1`` when unknown).

    Randomness: each process (main or ``DataLoader`` worker) draws from a ``torch.Generator`` seeded from
    ``(seed, epoch, worker id)``, so a run is reproducible for a fixed seed and worker count. Call
    :meth:`set_epoch` before creating each epoch's loader iterator (non-persistent workers).
    """

    def __init__(
        self,
        *,
        transforms: ViewTransforms,
        visible: Sequence[str | Path] | None = None,
        infrared: Sequence[str | Path] | None = None,
        visible_labels: Sequence[int] | np.ndarray | None = None,
        infrared_labels: Sequence[int] | np.ndarray | None = None,
        views: Sequence[str] = VIEWS,
        seed: int = 0,
        loader: Callable[[str | Path], Image.Image] = load_image,
    ) -> None:
        unknown = set(views) - set(VIEWS)
        if unknown or not views:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(views)}")
        if visible is None and infrared is None:
            raise ValueError("give visible and/or infrared image paths")
        if (visible is None and set(views) & set(_VISIBLE_VIEWS)) or (infrared is None and "ir" in views):
            raise ValueError(f"views {list(views)} need images of the matching modality")
        self.visible = [Path(p) for p in visible] if visible is not None else None
        self.infrared = [Path(p) for p in infrared] if infrared is not None else None
        self.visible_labels = _labels(visible_labels, len(self.visible or []), "visible_labels")
        self.infrared_labels = _labels(infrared_labels, len(self.infrared or []), "infrared_labels")
        self.transforms = transforms
        self.views = tuple(views)
        self.seed, self.epoch = seed, 0
        self.loader = loader
        self._generator: torch.Generator | None = None
        self._generator_key: tuple[int, int] | None = None

    @property
    def paired(self) -> bool:
        """Whether both modalities are present (keys are ``(rgb_index, ir_index)`` tuples)."""
        return self.visible is not None and self.infrared is not None

    def __len__(self) -> int:
        """Number of visible images if present, else infrared images (samplers decide what is drawn)."""
        return len(self.visible) if self.visible is not None else len(self.infrared or [])

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentation stream for ``epoch``."""
        self.epoch = int(epoch)

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        key = (info.id if info is not None else -1, self.epoch)
        if self._generator is None or self._generator_key != key:
            state = np.random.SeedSequence([self.seed, self.epoch, key[0] + 1]).generate_state(
                1, dtype=np.uint64
            )
            self._generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
            self._generator_key = key
        return self._generator

    def _split_key(self, key: int | tuple[int, int]) -> tuple[int, int]:
        if self.paired:
            if not isinstance(key, tuple) or len(key) != 2:
                raise TypeError(f"a two-modality TrainSet is indexed by (rgb_index, ir_index), got {key!r}")
            return int(key[0]), int(key[1])
        if isinstance(key, tuple):
            raise TypeError(f"a one-modality TrainSet is indexed by an int, got {key!r}")
        return (int(key), -1) if self.visible is not None else (-1, int(key))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        rgb_index, ir_index = self._split_key(key)
        generator = self._rng()
        item: dict[str, Any] = {}
        if rgb_index >= 0 and self.visible is not None and set(self.views) & set(_VISIBLE_VIEWS):
            image = self.loader(self.visible[rgb_index])
            for view in _VISIBLE_VIEWS:
                if view in self.views:
                    item[view] = getattr(self.transforms, view)(image, generator)
            item["rgb_index"], item["rgb_label"] = rgb_index, int(self.visible_labels[rgb_index])
        if ir_index >= 0 and self.infrared is not None and "ir" in self.views:
            item["ir"] = self.transforms.ir(self.loader(self.infrared[ir_index]), generator)
            item["ir_index"], item["ir_label"] = ir_index, int(self.infrared_labels[ir_index])
        return item


def collate_views(batch: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack a list of :class:`TrainSet` items.

    Every key is stacked: views to (B, 3, H, W) float32, indices and labels to (B,) int64. When all three
    views are present, also adds the SALCR ``[V; A; R]`` layout: ``"images"`` (3B, 3, H, W) =
    ``cat([rgb, rgb_aug, ir])``, ``"labels"`` (3B,) = ``cat([rgb_label, rgb_label, ir_label])`` and
    ``"modality"`` (3B,) int64 (0 visible, 1 infrared); row k, B + k and 2B + k come from pair k.

    Raises:
        ValueError: Empty batch or items with different keys.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    keys = set(batch[0])
    if any(set(item) != keys for item in batch):
        raise ValueError("all items of a batch must carry the same keys (mixing skipped sides?)")
    out: dict[str, Tensor] = {}
    for key in sorted(keys):
        values = [item[key] for item in batch]
        out[key] = (
            torch.stack(values)
            if isinstance(values[0], Tensor)
            else torch.as_tensor(values, dtype=torch.int64)
        )
    if all(view in out for view in VIEWS):
        size = len(batch)
        out["images"] = torch.cat([out["rgb"], out["rgb_aug"], out["ir"]])
        out["labels"] = torch.cat([out["rgb_label"], out["rgb_label"], out["ir_label"]])
        out["modality"] = torch.cat(
            [torch.zeros(2 * size, dtype=torch.int64), torch.ones(size, dtype=torch.int64)]
        )
    return out
