from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from vireid.training.data import ImageRecord, sysu_mm01, sysu_mm01_test

# pid -> {camera: number of images}
_LAYOUT = {
    1: {1: 2, 2: 1, 3: 2, 4: 1, 6: 1},  # train
    2: {1: 1, 5: 3, 3: 1},  # train
    3: {2: 2, 6: 2},  # val
    4: {1: 3, 2: 2, 3: 2, 4: 2, 5: 1, 6: 1},  # test
    5: {4: 2, 6: 3},  # test: no indoor gallery camera
    7: {1: 1, 3: 1},  # test
    9: {1: 1},  # in no list
}


def _make_sysu(root: Path, write_image: Callable[..., Path]) -> Path:
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    for pid, cams in _LAYOUT.items():
        for cam, count in cams.items():
            for k in range(count):
                write_image(root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg")
    (root / "exp").mkdir()
    (root / "exp" / "train_id.txt").write_text("1,2\n")
    (root / "exp" / "val_id.txt").write_text("3")
    (root / "exp" / "test_id.txt").write_text("7,4,5")
    return root


@pytest.fixture
def sysu_root(tmp_path: Path, image_writer: Callable[..., Path]) -> Path:
    return _make_sysu(tmp_path / "sysu", image_writer)


def test_train_split_is_train_plus_val_with_modalities(tmp_path: Path, sysu_root: Path) -> None:
    records = sysu_mm01(sysu_root, split="train")
    assert {r.pid for r in records} == {1, 2, 3}
    assert len(records) == sum(sum(_LAYOUT[p].values()) for p in (1, 2, 3))
    assert records == sorted(records, key=lambda r: str(r.path))
    for record in records:
        cam = int(record.camera[3:])
        assert record.modality == ("infrared" if cam in (3, 6) else "visible")
        assert record.path.parent.name == f"{record.pid:04d}"
        assert record.path.parent.parent.name == record.camera
    counts = Counter(r.modality for r in records)
    assert counts == {"visible": 2 + 1 + 1 + 1 + 3 + 2, "infrared": 2 + 1 + 1 + 2}


def test_test_split(tmp_path: Path, sysu_root: Path) -> None:
    records = sysu_mm01(sysu_root, split="test")
    assert {r.pid for r in records} == {4, 5, 7}


def test_query_is_all_ir_of_test_ids(tmp_path: Path, sysu_root: Path) -> None:
    query, _ = sysu_mm01_test(sysu_root, mode="all", trial=0)
    assert all(r.modality == "infrared" and r.camera in ("cam3", "cam6") for r in query)
    assert len(query) == (2 + 1) + 3 + 1
    assert [r.pid for r in query] == sorted(r.pid for r in query)


@pytest.mark.parametrize(("mode", "cams"), [("all", (1, 2, 4, 5)), ("indoor", (1, 2))])
def test_gallery_one_image_per_pid_and_camera(sysu_root: Path, mode: str, cams: tuple[int, ...]) -> None:
    root = sysu_root
    _, gallery = sysu_mm01_test(root, mode=mode, trial=3)  # type: ignore[arg-type]
    expected = [(pid, cam) for pid in (4, 5, 7) for cam in cams if cam in _LAYOUT[pid]]
    assert [(r.pid, int(r.camera[3:])) for r in gallery] == expected
    assert all(r.modality == "visible" for r in gallery)


def test_gallery_follows_python_random_protocol(tmp_path: Path, sysu_root: Path) -> None:
    root = sysu_root
    _, gallery = sysu_mm01_test(root, mode="all", trial=5)
    random.seed(5)
    expected = []
    for pid in (4, 5, 7):
        for cam in (1, 2, 4, 5):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if folder.is_dir():
                expected.append(random.choice(sorted(str(p) for p in folder.iterdir())))
    assert [str(r.path) for r in gallery] == expected


def test_gallery_is_deterministic_per_trial_and_keeps_global_random(tmp_path: Path, sysu_root: Path) -> None:
    root = sysu_root
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = sysu_mm01_test(root, trial=2)[1]
    assert random.random() == before
    assert sysu_mm01_test(root, trial=2)[1] == first
    trials = {tuple(r.path for r in sysu_mm01_test(root, trial=t)[1]) for t in range(10)}
    assert len(trials) > 1


def test_missing_files_name_the_layout(tmp_path: Path, sysu_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="SYSU-MM01 root"):
        sysu_mm01(tmp_path / "nope")
    root = sysu_root
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_id\.txt.*expected layout"):
        sysu_mm01(root, split="train")
    with pytest.raises(ValueError, match="split"):
        sysu_mm01(root, split="val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        sysu_mm01_test(root, mode="outdoor")  # type: ignore[arg-type]


def test_bad_id_list(tmp_path: Path, sysu_root: Path) -> None:
    root = sysu_root
    (root / "exp" / "test_id.txt").write_text("4,x")
    with pytest.raises(ValueError, match="integers"):
        sysu_mm01_test(root)


def test_record_is_frozen_and_checked() -> None:
    record = ImageRecord(path=Path("a.jpg"), modality="visible", camera="cam1", pid=None)
    with pytest.raises(AttributeError):
        record.pid = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="modality"):
        ImageRecord(path=Path("a.jpg"), modality="rgb", camera="cam1")  # type: ignore[arg-type]
