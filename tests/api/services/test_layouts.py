"""Layout readers: folder, CSV, SYSU-MM01."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from api_testkit import make_sysu

from vireid.api.errors import InvalidInputError
from vireid.api.services import parse_sysu_cameras, read_csv, read_folder, read_sysu_mm01


def test_read_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.PNG", "sub/c.bmp", "d.gif", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    when = datetime(2024, 1, 1, 12)
    records, failures = read_folder(
        tmp_path, camera="gate", modality="infrared", captured_at=when, track_id="t"
    )
    assert failures == []
    assert [Path(r.source).name for r in records] == ["a.PNG", "b.jpg", "d.gif", "c.bmp"]
    assert {(r.camera, r.modality, r.track_id) for r in records} == {("gate", "infrared", "t")}
    assert records[0].captured_at == when.replace(tzinfo=timezone.utc)
    with pytest.raises(InvalidInputError):
        read_folder(tmp_path, camera="gate", modality="uv")
    with pytest.raises(FileNotFoundError):
        read_folder(tmp_path / "nope", camera="gate", modality="visible")


def test_read_csv(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for n in range(3):
        (tmp_path / "img" / f"{n}.jpg").write_bytes(b"x")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,camera,modality,captured_at,track_id\n"
        "img/0.jpg,c1,visible,2024-03-01T10:00:00+01:00,t1\n"
        f"{tmp_path / 'img' / '1.jpg'},,,,\n"
        "img/2.jpg,c2,uv,,\n"
        "img/missing.jpg,c2,visible,,\n"
        "img/2.jpg,c2,infrared,soon,\n"
    )
    records, failures = read_csv(csv_path, camera="default-cam", modality="infrared")
    assert [(Path(r.source).name, r.camera, r.modality) for r in records] == [
        ("0.jpg", "c1", "visible"),
        ("1.jpg", "default-cam", "infrared"),
    ]
    assert records[0].captured_at == datetime(2024, 3, 1, 9, tzinfo=timezone.utc)
    assert records[0].track_id == "t1" and records[1].track_id is None
    assert [f.source.rsplit(":", 1)[1] for f in failures] == ["4", "5", "6"]
    assert "modality" in failures[0].reason and "not found" in failures[1].reason
    assert "ISO 8601" in failures[2].reason


def test_read_csv_and_folder_refuse_out_of_range_times(tmp_path: Path) -> None:
    (tmp_path / "0.jpg").write_bytes(b"x")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,camera,modality,captured_at\n0.jpg,c1,visible,0001-01-01T00:00:00+01:00\n")
    records, failures = read_csv(csv_path)
    assert records == [] and "accepted range" in failures[0].reason
    with pytest.raises(InvalidInputError, match="captured_at"):
        read_folder(tmp_path, camera="c", modality="visible", captured_at=datetime(9999, 12, 31, 23))


def test_read_csv_needs_path_column_and_defaults(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,camera\na.jpg,c\n")
    with pytest.raises(InvalidInputError, match="path"):
        read_csv(bad)
    (tmp_path / "a.jpg").write_bytes(b"x")
    nodefault = tmp_path / "n.csv"
    nodefault.write_text("path\na.jpg\n")
    records, failures = read_csv(nodefault)
    assert records == [] and "camera" in failures[0].reason


def test_read_sysu_mm01_splits_and_cameras(tmp_path: Path) -> None:
    make_sysu(tmp_path)
    records, _ = read_sysu_mm01(tmp_path, split="test")
    assert len(records) == 12  # 2 ids × 6 cameras
    assert {r.track_id for r in records} == {"0004", "0005"}
    modality = {r.camera: r.modality for r in records}
    assert modality == {
        "cam1": "visible",
        "cam2": "visible",
        "cam3": "infrared",
        "cam4": "visible",
        "cam5": "visible",
        "cam6": "infrared",
    }
    train, _ = read_sysu_mm01(tmp_path, split="train", cameras=["3", "cam6"])
    assert {(r.camera, r.track_id) for r in train} == {
        (c, p) for c in ("cam3", "cam6") for p in ("0001", "0002")
    }
    assert len(read_sysu_mm01(tmp_path, split="all")[0]) == 30
    assert {r.track_id for r in read_sysu_mm01(tmp_path, split="val")[0]} == {"0003"}


def test_read_sysu_mm01_errors(tmp_path: Path) -> None:
    make_sysu(tmp_path)
    with pytest.raises(InvalidInputError):
        read_sysu_mm01(tmp_path, split="dev")
    with pytest.raises(InvalidInputError):
        parse_sysu_cameras(["7"])
    (tmp_path / "exp" / "val_id.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val_id"):
        read_sysu_mm01(tmp_path, split="all")
    (tmp_path / "exp" / "test_id.txt").write_text("4,x")
    with pytest.raises(InvalidInputError):
        read_sysu_mm01(tmp_path, split="test")


def test_every_layout_records_the_absolute_resolved_path_as_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One documented way for folder, CSV and SYSU-MM01 ingests (issue #12, item 7)."""
    make_sysu(tmp_path / "sysu")
    (tmp_path / "list.csv").write_text("path,camera,modality\nsysu/cam1/0001/0001.jpg,c,visible\n")
    monkeypatch.chdir(tmp_path)
    scans = [
        read_folder(Path("sysu/cam1"), camera="c", modality="visible")[0],
        read_csv(Path("list.csv"))[0],
        read_sysu_mm01(Path("sysu/../sysu"), split="test", cameras="1")[0],
    ]
    for records in scans:
        assert records
        for record in records:
            assert Path(record.source).is_absolute() and ".." not in Path(record.source).parts
            assert Path(record.source) == Path(record.source).resolve()
            assert Path(record.source).is_file()
