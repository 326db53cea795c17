from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vireid.training.data import camera_folders, read_cameras_yaml


def _make_folders(root: Path, write_image: Callable[..., Path]) -> Path:
    write_image(root / "lobby" / "2024-01-01" / "a.jpg")
    write_image(root / "lobby" / "b.png")
    write_image(root / "gate_ir" / "x.jpg")
    write_image(root / "other" / "ignored.jpg")
    (root / "lobby" / "notes.txt").write_text("not an image")
    (root / "cameras.yaml").write_text("lobby: rgb\ngate_ir: thermal\n")
    return root


@pytest.fixture
def folders_root(tmp_path: Path, image_writer: Callable[..., Path]) -> Path:
    return _make_folders(tmp_path, image_writer)


def test_reads_declared_cameras_recursively(tmp_path: Path, folders_root: Path) -> None:
    records = camera_folders(folders_root)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.modality, r.camera, r.pid) for r in records] == [
        ("gate_ir/x.jpg", "infrared", "gate_ir", None),
        ("lobby/2024-01-01/a.jpg", "visible", "lobby", None),
        ("lobby/b.png", "visible", "lobby", None),
    ]


def test_mapping_argument_overrides_yaml(tmp_path: Path, folders_root: Path) -> None:
    root = folders_root
    (root / "cameras.yaml").unlink()
    records = camera_folders(root, cameras={"other": "ir"})
    assert [(r.camera, r.modality) for r in records] == [("other", "infrared")]


def test_identities_and_split_are_optional_extras(tmp_path: Path, folders_root: Path) -> None:
    root = folders_root
    (root / "identities.csv").write_text("path,pid\nlobby/b.png,7\ngate_ir/x.jpg,7\n")
    rows = ["path,split", "lobby/b.png,test", "gate_ir/x.jpg,test", "lobby/2024-01-01/a.jpg,train"]
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    records = camera_folders(root)
    assert {r.path.name: r.pid for r in records} == {"a.jpg": None, "b.png": 7, "x.jpg": 7}
    assert [r.path.name for r in camera_folders(root, split="test")] == ["x.jpg", "b.png"]
    assert [r.path.name for r in camera_folders(root, split="train")] == ["a.jpg"]


def test_cameras_yaml_nested_form(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text("cameras:\n  c1: visible\n  c2: infrared\n")
    assert read_cameras_yaml(tmp_path) == {"c1": "visible", "c2": "infrared"}


def test_errors_name_what_is_missing(tmp_path: Path, folders_root: Path) -> None:
    root = folders_root
    with pytest.raises(FileNotFoundError, match=r"split\.csv"):
        camera_folders(root, split="train")
    with pytest.raises(FileNotFoundError, match="camera 'nowhere'"):
        camera_folders(root, cameras={"nowhere": "visible"})
    (root / "cameras.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"cameras\.yaml.*expected layout"):
        camera_folders(root)
    (root / "cameras.yaml").write_text("lobby: ultraviolet\n")
    with pytest.raises(ValueError, match="ultraviolet"):
        camera_folders(root)
    (root / "cameras.yaml").write_text("- lobby\n")
    with pytest.raises(ValueError, match="mapping"):
        camera_folders(root)
    (root / "cameras.yaml").write_text("lobby: visible\n")
    (root / "identities.csv").write_text("file,id\n")
    with pytest.raises(ValueError, match="header"):
        camera_folders(root)
