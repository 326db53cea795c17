"""Plots: valid PNG files, border colours of rank-list tiles, query selection."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import write_person
from PIL import Image

from vireid.training.evaluation import plot_cmc, plot_rank_list, select_queries
from vireid.training.evaluation._plots import BORDER_PX, COLOR_CORRECT, COLOR_WRONG, _thumbnail


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # fully decodable
        return img.size


def test_plot_cmc_writes_png(tmp_path) -> None:
    curves = {"all": np.linspace(0.3, 0.9, 20), "indoor": np.linspace(0.4, 1.0, 20)}
    out = plot_cmc(curves, tmp_path / "sub" / "cmc.png", title="t")
    width, height = _png_size(out)
    assert width > 200 and height > 150
    with pytest.raises(ValueError):
        plot_cmc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="1-D"):
        plot_cmc({"bad": np.ones((2, 2))}, tmp_path / "x.png")


def test_plot_rank_list_writes_png_with_one_row_per_query(tmp_path) -> None:
    gallery = [write_person(tmp_path / f"g{i}.png", pid=i % 4, noise_seed=i) for i in range(8)]
    queries = [write_person(tmp_path / f"q{i}.png", pid=i, noise_seed=100 + i) for i in range(3)]
    ranked = np.array([[0, 1, 2, 3], [1, 5, 0, -1], [2, 6, 3, 7]])
    one = plot_rank_list(
        queries[:1], [0], gallery, [i % 4 for i in range(8)], ranked[:1], tmp_path / "r1.png"
    )
    three = plot_rank_list(
        queries, [0, 1, 2], gallery, [i % 4 for i in range(8)], ranked, tmp_path / "r3.png"
    )
    (w1, h1), (w3, h3) = _png_size(one), _png_size(three)
    assert w1 == w3 and h3 > 2 * h1 * 0.9
    with pytest.raises(ValueError):
        plot_rank_list(queries, [0, 1], gallery, [0] * 8, ranked, tmp_path / "bad.png")


def test_thumbnail_border_colours(tmp_path) -> None:
    path = write_person(tmp_path / "p.png", pid=1, noise_seed=0)
    for colour in (COLOR_CORRECT, COLOR_WRONG):
        tile = _thumbnail(path, colour)
        assert tuple(tile[0, 0]) == colour and tuple(tile[-1, -1]) == colour
        assert tuple(tile[BORDER_PX - 1, tile.shape[1] // 2]) == colour
    blank = _thumbnail(tmp_path / "missing.png", COLOR_WRONG)  # unreadable → grey tile, still bordered
    assert tuple(blank[0, 0]) == COLOR_WRONG


def test_select_queries_spreads_and_clips() -> None:
    np.testing.assert_array_equal(select_queries(100, 5), [0, 25, 50, 74, 99])
    np.testing.assert_array_equal(select_queries(3, 6), [0, 1, 2])
    with pytest.raises(ValueError):
        select_queries(0, 3)
