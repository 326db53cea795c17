from __future__ import annotations

from pathlib import Path

import pytest

from vireid.training.data import llcm, llcm_test


def _make_llcm(root: Path) -> Path:
    (root / "idx").mkdir(parents=True)
    rows = {
        "train_vis": ["vis/0001/0001_c01_s100_f10_vis.jpg 0", "vis/0002/0002_c04_s101_f11_vis.jpg 1"],
        "train_nir": ["nir/0001/0001_c06_s100_f20_nir.jpg 0"],
        "test_vis": ["vis/0400/0400_c02_s300_f1_vis.jpg 400"],
        "test_nir": ["nir/0400/0400_c09_s300_f2_nir.jpg 400", "nir/0401/0401_c03_s301_f2_nir.jpg 401"],
    }
    for name, lines in rows.items():
        (root / "idx" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_train_split(tmp_path: Path) -> None:
    records = llcm(_make_llcm(tmp_path), split="train")
    assert [(r.modality, r.camera, r.pid) for r in records] == [
        ("infrared", "cam6", 0),
        ("visible", "cam1", 0),
        ("visible", "cam4", 1),
    ]
    assert records[0].path == tmp_path / "nir/0001/0001_c06_s100_f20_nir.jpg"


def test_test_directions(tmp_path: Path) -> None:
    root = _make_llcm(tmp_path)
    query, gallery = llcm_test(root, direction="infrared_to_visible")
    assert [r.pid for r in query] == [400, 401] and [r.pid for r in gallery] == [400]
    query, gallery = llcm_test(root, direction="visible_to_infrared")
    assert [r.modality for r in query] == ["visible"] and len(gallery) == 2


def test_errors(tmp_path: Path) -> None:
    root = _make_llcm(tmp_path)
    (root / "idx" / "test_vis.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_vis\.txt"):
        llcm(root, split="test")
    (root / "idx" / "train_vis.txt").write_text("vis/0001/no_camera.jpg 0\n")
    with pytest.raises(ValueError, match="camera token"):
        llcm(root, split="train")
