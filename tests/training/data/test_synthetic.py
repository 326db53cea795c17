from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.cli import main as cli_main
from vireid.training.data import camera_folders, generate_synthetic, read_split, synthetic_modality_pairs

SMALL = {
    "num_identities": 6,
    "visible_cameras": 2,
    "infrared_cameras": 1,
    "images_per_camera": 2,
    "size": (64, 32),
}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "a", seed=7, **SMALL)  # type: ignore[arg-type]
    generate_synthetic(tmp_path / "b", seed=7, **SMALL)  # type: ignore[arg-type]
    generate_synthetic(tmp_path / "c", seed=8, **SMALL)  # type: ignore[arg-type]
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_layout_identities_and_split(tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path / "d", seed=1, test_fraction=0.5, **SMALL)  # type: ignore[arg-type]
    assert summary.cameras == {"vis1": "visible", "vis2": "visible", "ir1": "infrared"}
    assert summary.num_images == 6 * 3 * 2
    assert set(summary.train_ids).isdisjoint(summary.test_ids)
    assert sorted(summary.train_ids + summary.test_ids) == list(range(1, 7)) and len(summary.test_ids) == 3
    records = camera_folders(summary.root)
    assert len(records) == summary.num_images
    assert Counter(r.pid for r in records) == dict.fromkeys(range(1, 7), 6)
    assert Counter((r.camera, r.modality) for r in records) == {
        ("vis1", "visible"): 12,
        ("vis2", "visible"): 12,
        ("ir1", "infrared"): 12,
    }
    test_records = camera_folders(summary.root, split="test")
    assert {r.pid for r in test_records} == set(summary.test_ids)
    assert set(read_split(summary.root).values()) == {"train", "test"}
    for record in records[:: len(records) // 6]:
        pixels = np.asarray(Image.open(record.path))
        assert pixels.shape == (64, 32, 3)
        if record.modality == "infrared":
            assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
                pixels[..., 0], pixels[..., 2]
            )
    vis1 = [r for r in records if r.camera == "vis1"]
    assert [r.path.name for r in vis1] == [f"vis1_{n:05d}.jpg" for n in range(12)]
    pids = [r.pid for r in vis1]
    assert pids != sorted(pids)  # file order is shuffled: names reveal no identity


def test_infrared_is_not_a_monotone_remap_of_visible() -> None:
    visible, infrared, person = synthetic_modality_pairs(40, size=(96, 48), seed=0)
    assert person.mean() > 0.15

    def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
        ra = np.argsort(np.argsort(a, kind="stable"), kind="stable")
        rb = np.argsort(np.argsort(b, kind="stable"), kind="stable")
        return float(np.corrcoef(ra, rb)[0, 1])

    ir = infrared[person].astype(np.float64)
    luma = (visible[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[person]
    assert abs(rank_correlation(luma, ir)) < 0.35
    for channel in range(3):
        assert abs(rank_correlation(visible[..., channel][person].astype(np.float64), ir)) < 0.35


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        generate_synthetic(tmp_path / "full", num_identities=2)
    with pytest.raises(ValueError, match="camera"):
        generate_synthetic(tmp_path / "e", infrared_cameras=0)
    with pytest.raises(ValueError, match="test_fraction"):
        generate_synthetic(tmp_path / "e", test_fraction=1.0)


def test_quick(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate_synthetic(
        tmp_path / "q", num_identities=25, visible_cameras=2, infrared_cameras=2, images_per_camera=2
    )
    assert time.perf_counter() - started < 10.0  # ~1 s on one core for these 200 images


@pytest.mark.slow
def test_hundred_identities_in_a_few_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate_synthetic(tmp_path / "h", num_identities=100)
    assert summary.num_images == 800 and time.perf_counter() - started < 30.0  # ~3 s on an idle core


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = cli_main(
        ["synth", str(out), "--identities", "3", "--cameras", "1,2", "--size", "48x24", "--seed", "4"]
    )
    assert code == 0 and "18 images of 3 identities" in capsys.readouterr().out
    assert (out / "ir2").is_dir() and (out / "cameras.yaml").is_file()
    with pytest.raises(SystemExit):
        cli_main(["synth", str(tmp_path / "x"), "--cameras", "two"])
    assert cli_main(["synth", str(out)]) == 2  # existing, non-empty folder: clean error
