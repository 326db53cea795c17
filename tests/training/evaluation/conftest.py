"""Fixtures for evaluation tests: a tiny model and fake SYSU-MM01 / RegDB / LLCM layouts in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from eval_fakes import (
    SYSU_IMAGES_PER_CAM,
    SYSU_INFRARED,
    SYSU_TEST_IDS,
    SYSU_VISIBLE,
    DummyReID,
    to_tensor,
    write_person,
)
from PIL import Image


@pytest.fixture
def dummy_model() -> DummyReID:
    return DummyReID()


@pytest.fixture
def transform() -> Callable[[Image.Image], torch.Tensor]:
    return to_tensor


@pytest.fixture
def fake_sysu(tmp_path: Path) -> Path:
    root = tmp_path / "sysu"
    seed = 0
    for cams in (SYSU_VISIBLE, SYSU_INFRARED):
        for pid, cam_list in cams.items():
            for cam in cam_list:
                for k in range(SYSU_IMAGES_PER_CAM):
                    seed += 1
                    path = root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg"
                    write_person(path, pid, noise_seed=seed)
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    (root / "exp").mkdir()
    (root / "exp" / "test_id.txt").write_text(",".join(str(p) for p in SYSU_TEST_IDS))
    (root / "exp" / "train_id.txt").write_text("100")
    (root / "exp" / "val_id.txt").write_text("101")
    return root


@pytest.fixture
def fake_regdb(tmp_path: Path) -> Path:
    """RegDB splits 1 and 2 with 6 test ids × 3 images per modality (split 2 has a different id set)."""
    root = tmp_path / "regdb"
    (root / "idx").mkdir(parents=True)
    seed = 0
    for split, ids in ((1, range(6)), (2, range(3, 9))):
        for stem, folder in (("visible", "Visible"), ("thermal", "Thermal")):
            lines = []
            for pid in ids:
                for k in range(3):
                    seed += 1
                    rel = f"{folder}/{pid}/{stem}_{pid}_{k}.bmp"
                    write_person(root / rel, pid, noise_seed=seed)
                    lines.append(f"{rel} {pid}")
            (root / "idx" / f"test_{stem}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def fake_llcm(tmp_path: Path) -> Path:
    """LLCM test lists: 4 ids; visible in cams 1, 2 (2 images each), NIR in cams 1, 4 (2 images each)."""
    root = tmp_path / "llcm"
    (root / "idx").mkdir(parents=True)
    seed = 0
    for stem, cams in (("vis", (1, 2)), ("nir", (1, 4))):
        lines = []
        for pid in range(1, 5):
            for cam in cams:
                for k in range(2):
                    seed += 1
                    rel = f"{stem}/{pid:04d}/{pid:04d}_c{cam:02d}_s{seed}_f{k}_{stem}.jpg"
                    write_person(root / rel, pid, noise_seed=seed)
                    lines.append(f"{rel} {pid}")
        (root / "idx" / f"test_{stem}.txt").write_text("\n".join(lines) + "\n")
    return root
