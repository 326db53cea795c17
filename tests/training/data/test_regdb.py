from __future__ import annotations

from pathlib import Path

import pytest

from vireid.training.data import regdb, regdb_test


def _make_regdb(root: Path, trial: int = 1) -> Path:
    (root / "idx").mkdir(parents=True)
    for split, offset in (("train", 0), ("test", 10)):
        for stem, folder in (("visible", "Visible"), ("thermal", "Thermal")):
            lines = [f"{folder}/{offset + pid}/img_{k}.bmp {pid}" for pid in (0, 1) for k in range(2)]
            (root / "idx" / f"{split}_{stem}_{trial}.txt").write_text("\n".join(lines) + "\n\n")
    return root


def test_train_split_reads_both_lists(tmp_path: Path) -> None:
    records = regdb(_make_regdb(tmp_path), trial=1, split="train")
    assert len(records) == 8
    assert records == sorted(records, key=lambda r: str(r.path))
    visible = [r for r in records if r.modality == "visible"]
    assert {r.camera for r in visible} == {"cam1"}
    assert {r.camera for r in records if r.modality == "infrared"} == {"cam2"}
    assert sorted(r.pid for r in visible) == [0, 0, 1, 1]
    assert visible[0].path == tmp_path / "Visible/0/img_0.bmp"


@pytest.mark.parametrize(
    ("direction", "query_modality"), [("visible_to_thermal", "visible"), ("thermal_to_visible", "infrared")]
)
def test_test_split_both_directions(tmp_path: Path, direction: str, query_modality: str) -> None:
    query, gallery = regdb_test(_make_regdb(tmp_path), trial=1, direction=direction)  # type: ignore[arg-type]
    assert {r.modality for r in query} == {query_modality}
    assert {r.modality for r in gallery} == {"visible", "infrared"} - {query_modality}
    assert len(query) == len(gallery) == 4
    assert all("/1" in str(r.path.parent) for r in query)  # test ids 10, 11


def test_missing_list_and_bad_trial(tmp_path: Path) -> None:
    root = _make_regdb(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train_visible_2\.txt.*expected layout"):
        regdb(root, trial=2)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        regdb(root, trial=0)
    with pytest.raises(FileNotFoundError, match="RegDB root"):
        regdb(tmp_path / "missing", trial=1)


def test_malformed_line(tmp_path: Path) -> None:
    root = _make_regdb(tmp_path)
    (root / "idx" / "train_thermal_1.txt").write_text("Thermal/0/a.bmp zero\n")
    with pytest.raises(ValueError, match=r"train_thermal_1\.txt:1"):
        regdb(root, trial=1)
