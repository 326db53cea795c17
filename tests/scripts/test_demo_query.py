"""scripts/demo_query.py: the contact sheet and the closing notes of ``scripts/demo.sh`` (#12 item 5)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def demo_query() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_query.py"
    spec = importlib.util.spec_from_file_location("demo_query", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_query"] = module
    spec.loader.exec_module(module)
    return module


def _crop(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (40, 90), colour).save(path)
    return path


def test_contact_sheet_rows_and_borders(tmp_path: Path, demo_query: ModuleType) -> None:
    query = _crop(tmp_path / "q.jpg", (255, 255, 255))
    same, other = _crop(tmp_path / "a.jpg", (0, 0, 255)), _crop(tmp_path / "b.jpg", (255, 255, 0))
    matches = [
        {"score": 0.9, "source": str(same)},
        {"score": 0.8, "source": str(other)},
        {"score": 0.7, "source": None},  # source not returned: a blank tile, grey border
    ]
    rows = [(query, "7", matches, ["7", "8", None]), (query, None, matches[:1], ["7"])]
    out = tmp_path / "sheet" / "contact-sheet.png"
    demo_query._write_contact_sheet(rows, out)
    sheet = Image.open(out).convert("RGB")
    cell_w = demo_query._CELL[0] + 2 * demo_query._BORDER
    cell_h = demo_query._CELL[1] + 2 * demo_query._BORDER + demo_query._LABEL
    assert sheet.size == (4 * (cell_w + 2) + 12, 2 * (cell_h + 4))

    def border(row: int, tile: int) -> tuple[int, int, int]:
        x = 0 if tile == 0 else tile * (cell_w + 2) + 12
        return sheet.getpixel((x + 1, row * (cell_h + 4) + 1))  # type: ignore[return-value]

    colours = demo_query._COLOURS
    assert [border(0, t) for t in (1, 2, 3)] == [colours[True], colours[False], colours[None]]
    assert border(1, 1) == colours[None]  # the query's identity is unknown: no verdict
    inside = sheet.getpixel((cell_w + 2 + 12 + cell_w // 2, cell_h // 2))
    assert inside[2] > 200 and inside[0] < 60  # the blue crop of the first match is drawn in its tile


def test_next_steps_name_the_model_gallery_and_commands(
    tmp_path: Path, demo_query: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    args = argparse.Namespace(
        model_dir=tmp_path / "model",
        gallery_dir=tmp_path / "gallery",
        contact_sheet=tmp_path / "contact-sheet.png",
        k=10,
    )
    demo_query._print_next_steps(args, tmp_path / "q.jpg")
    out = capsys.readouterr().out
    env = f"VIREID_DATA_DIR={tmp_path / 'gallery'} VIREID_MODEL_DIR={tmp_path / 'model'}"
    assert out.count(env) == 2
    assert f"search {tmp_path / 'q.jpg'} --modality infrared -k 10" in out
    assert "serve" in out and "http://127.0.0.1:8000/" in out
    assert "configs/salcr_sysu.yaml" in out and str(tmp_path / "contact-sheet.png") in out
