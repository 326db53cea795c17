"""Synthetic visible/infrared person dataset written in the camera-folder layout (Contract 8).

Used by tests and the demo: deterministic from a seed, no download. See ``_synth_render`` for how people
are drawn and why colour alone cannot match across modalities.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.training.data import _synth_render as render
from vireid.training.data._camera_folders import IDENTITIES_FILE, SPLIT_FILE, write_cameras_yaml
from vireid.training.data._records import Modality

logger = logging.getLogger(__name__)

# Stream tags mixed into the seed so identities, cameras and images draw from independent streams.
_IDENTITY_STREAM, _CAMERA_STREAM, _IMAGE_STREAM, _SPLIT_STREAM, _ORDER_STREAM = range(5)
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SyntheticDataset:
    """Summary of a generated dataset.

    Attributes:
        root: Output folder (camera-folder layout).
        cameras: Camera name -> modality, in generation order (visible cameras first).
        num_identities: Number of identities (pids are ``1..num_identities``).
        num_images: Images written in total.
        train_ids: Sorted pids of the training split.
        test_ids: Sorted held-out pids (evaluation only).
        size: Image size (height, width) in pixels.
        seed: Seed the dataset was generated from.
    """

    root: Path
    cameras: dict[str, Modality]
    num_identities: int
    num_images: int
    train_ids: tuple[int, ...]
    test_ids: tuple[int, ...]
    size: tuple[int, int]
    seed: int


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _camera_names(visible_cameras: int, infrared_cameras: int) -> dict[str, Modality]:
    if visible_cameras < 1 or infrared_cameras < 1:
        raise ValueError("at least one visible and one infrared camera are needed")
    names: dict[str, Modality] = {f"vis{i}": "visible" for i in range(1, visible_cameras + 1)}
    names.update({f"ir{i}": "infrared" for i in range(1, infrared_cameras + 1)})
    return names


def _validate(
    num_identities: int, images_per_camera: int, size: tuple[int, int], test_fraction: float
) -> None:
    if num_identities < 1:
        raise ValueError(f"num_identities must be >= 1, got {num_identities}")
    if images_per_camera < 1:
        raise ValueError(f"images_per_camera must be >= 1, got {images_per_camera}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16 pixels, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")


def _split_ids(
    num_identities: int, test_fraction: float, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pids = np.arange(1, num_identities + 1)
    num_test = round(test_fraction * num_identities)
    test = (
        set(_rng(seed, _SPLIT_STREAM).choice(pids, size=num_test, replace=False).tolist())
        if num_test
        else set()
    )
    return tuple(int(p) for p in pids if p not in test), tuple(sorted(int(p) for p in test))


def generate_synthetic(
    out_dir: str | Path,
    *,
    num_identities: int = 100,
    visible_cameras: int = 2,
    infrared_cameras: int = 2,
    images_per_camera: int = 2,
    size: tuple[int, int] = (128, 64),
    test_fraction: float = 0.25,
    seed: int = 0,
) -> SyntheticDataset:
    """Write a synthetic visible/infrared dataset in the camera-folder layout.

    Every identity appears ``images_per_camera`` times in every camera (cameras ``vis1..`` and ``ir1..``).
    Writes ``OUT/<camera>/<camera>_<n:05d>.jpg`` (file numbers shuffled, so names and order reveal no
    identity), ``OUT/cameras.yaml``, ``OUT/identities.csv`` (path,pid: ground truth for evaluation only) and
    ``OUT/split.csv`` (path,split with split ``train``/``test`` by identity). The same arguments give
    byte-identical files.

    Args:
        out_dir: Output folder; created if missing, must be empty if it exists.
        num_identities: Number of identities (pids ``1..num_identities``).
        visible_cameras: Number of visible cameras.
        infrared_cameras: Number of infrared cameras.
        images_per_camera: Images of each identity per camera.
        size: (height, width) of the images in pixels.
        test_fraction: Fraction of identities held out for evaluation.
        seed: Seed of every random draw.

    Returns:
        A summary of what was written.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ValueError: Invalid counts, size or fraction.
    """
    size = (int(size[0]), int(size[1]))
    _validate(num_identities, images_per_camera, size, test_fraction)
    cameras = _camera_names(visible_cameras, infrared_cameras)
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"output folder is not empty: {root}")
    started = time.perf_counter()
    identities = [
        render.sample_identity(pid, _rng(seed, _IDENTITY_STREAM, pid)) for pid in range(1, num_identities + 1)
    ]
    train_ids, test_ids = _split_ids(num_identities, test_fraction, seed)
    test_set = set(test_ids)
    rows: list[tuple[str, int]] = []
    for cam_index, (camera, modality) in enumerate(cameras.items()):
        rows += _write_camera(root, camera, modality, cam_index, identities, images_per_camera, size, seed)
    rows.sort()
    _write_csv(root / IDENTITIES_FILE, ("path", "pid"), rows)
    _write_csv(
        root / SPLIT_FILE, ("path", "split"), [(p, "test" if pid in test_set else "train") for p, pid in rows]
    )
    write_cameras_yaml(root, cameras)
    logger.info("wrote %d synthetic images to %s in %.1f s", len(rows), root, time.perf_counter() - started)
    return SyntheticDataset(root, dict(cameras), num_identities, len(rows), train_ids, test_ids, size, seed)


def _write_camera(
    root: Path,
    camera: str,
    modality: str,
    cam_index: int,
    identities: Sequence[render.Identity],
    images_per_camera: int,
    size: tuple[int, int],
    seed: int,
) -> list[tuple[str, int]]:
    """Render and save every image of one camera; returns (relative path, pid) rows."""
    style = render.sample_camera(camera, modality, rng=_rng(seed, _CAMERA_STREAM, cam_index), size=size)
    (root / camera).mkdir(parents=True, exist_ok=True)
    jobs = [(identity, k) for identity in identities for k in range(images_per_camera)]
    numbers = _rng(seed, _ORDER_STREAM, cam_index).permutation(len(jobs))
    rows = []
    for (identity, k), number in zip(jobs, numbers, strict=True):
        image = render.render(
            identity, style, rng=_rng(seed, _IMAGE_STREAM, cam_index, identity.pid, k), size=size
        )
        relative = f"{camera}/{camera}_{int(number):05d}.jpg"
        image.save(root / relative, format="JPEG", quality=JPEG_QUALITY)
        rows.append((relative, identity.pid))
    return rows


def _write_csv(path: Path, header: tuple[str, str], rows: Sequence[tuple[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def synthetic_modality_pairs(
    num_identities: int, *, size: tuple[int, int] = (128, 64), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render each identity once in the same pose for a visible and an infrared camera (diagnostics).

    Lets tests measure how a visible pixel relates to the infrared pixel of the same body point: the
    generator intends no monotone mapping between them.

    Returns:
        ``(visible, infrared, person)``: (N, H, W, 3) uint8, (N, H, W) uint8 (one of the three identical
        channels) and the (N, H, W) bool person mask.
    """
    size = (int(size[0]), int(size[1]))
    _validate(num_identities, 1, size, 0.0)
    visible_style = render.sample_camera("vis", "visible", rng=_rng(seed, _CAMERA_STREAM, 0), size=size)
    infrared_style = render.sample_camera("ir", "infrared", rng=_rng(seed, _CAMERA_STREAM, 1), size=size)
    visible, infrared, masks = [], [], []
    for pid in range(1, num_identities + 1):
        identity = render.sample_identity(pid, _rng(seed, _IDENTITY_STREAM, pid))
        rng = _rng(seed, _IMAGE_STREAM, 0, pid, 0)
        labels = render.draw_labels(identity, render.sample_pose(rng, size=size), size=size)
        visible.append(np.asarray(render.colorize(labels, identity, camera=visible_style, rng=rng)))
        infrared.append(np.asarray(render.colorize(labels, identity, camera=infrared_style, rng=rng))[..., 0])
        masks.append(labels > 0)
    return np.stack(visible), np.stack(infrared), np.stack(masks)
