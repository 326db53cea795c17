"""Evaluation pictures: CMC curves and rank lists.

Figures are drawn with matplotlib's object API on the Agg canvas (``matplotlib.figure.Figure``, no pyplot),
so nothing touches the global backend or needs a display, and drawing is safe from worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps

__all__ = ["plot_cmc", "plot_rank_list", "select_queries"]

logger = logging.getLogger(__name__)

#: Thumbnail size (width, height) in pixels for rank lists: the 1:2 person-crop aspect.
THUMB_SIZE = (64, 128)
#: Border width around rank-list thumbnails, gap between columns, and room for a label above a tile (px).
BORDER_PX = 5
GAP_PX = 6
LABEL_PX = 14
COLOR_CORRECT = (0, 170, 0)
COLOR_WRONG = (215, 0, 0)
COLOR_QUERY = (60, 60, 60)
COLOR_MISSING = (200, 200, 200)


def plot_cmc(curves: Mapping[str, np.ndarray], path: str | Path, *, title: str = "CMC") -> Path:
    """Draw one CMC line per setting (rank 1..len) and save it as a PNG.

    Args:
        curves: label → (R,) float CMC in [0, 1] (e.g. ``{"all": cmc, "indoor": cmc}``).
        path: output PNG file; parent folders are created.
        title: figure title.

    Returns:
        The written path.

    Raises:
        ValueError: no curves, or a curve that is not 1-D.
    """
    if not curves:
        raise ValueError("plot_cmc needs at least one curve")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, cmc in curves.items():
        values = 100.0 * np.asarray(cmc, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"CMC {label!r} must be 1-D, got shape {values.shape}")
        ranks = np.arange(1, values.size + 1)
        ax.plot(ranks, values, marker="o", markersize=3, label=f"{label} (R1 {values[0]:.1f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def _thumbnail(path: str | Path | None, color: tuple[int, int, int]) -> np.ndarray:
    if path is None:
        tile = Image.new("RGB", THUMB_SIZE, COLOR_MISSING)
    else:
        try:
            with Image.open(path) as img:
                tile = img.convert("RGB").resize(THUMB_SIZE, Image.Resampling.BILINEAR)
        except (OSError, ValueError) as exc:
            logger.warning("rank list: cannot read %s (%s); drawing a blank tile", path, exc)
            tile = Image.new("RGB", THUMB_SIZE, COLOR_MISSING)
    return np.asarray(ImageOps.expand(tile, border=BORDER_PX, fill=color))


def select_queries(num_queries: int, count: int) -> np.ndarray:
    """Evenly spread, deterministic query indices for a rank list: (min(count, num_queries),) int64."""
    if num_queries < 1 or count < 1:
        raise ValueError(f"need num_queries >= 1 and count >= 1, got {num_queries}, {count}")
    return np.unique(np.linspace(0, num_queries - 1, min(count, num_queries)).round().astype(np.int64))


def plot_rank_list(
    query_paths: Sequence[str | Path],
    query_pids: Sequence[int],
    gallery_paths: Sequence[str | Path],
    gallery_pids: Sequence[int],
    ranked: np.ndarray,
    path: str | Path,
    *,
    title: str = "rank list",
) -> Path:
    """Query thumbnail + its top-k gallery thumbnails per row; green border = same identity, red = wrong.

    Args:
        query_paths: the Q' queries shown (one row each). query_pids: their identities.
        gallery_paths: all G gallery images. gallery_pids: their identities.
        ranked: (Q', k) int gallery indices per shown query, best first; -1 = no item (grey tile).
        path: output PNG file; parent folders are created.
        title: figure title.

    Returns:
        The written path.

    Raises:
        ValueError: inconsistent lengths.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != len(query_paths) or len(query_pids) != len(query_paths):
        raise ValueError(f"ranked must be (len(query_paths), k); got {ranked.shape} for {len(query_paths)}")
    if len(gallery_paths) != len(gallery_pids):
        raise ValueError("gallery_paths and gallery_pids differ in length")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, k = ranked.shape
    tile_w, tile_h = THUMB_SIZE[0] + 2 * BORDER_PX, THUMB_SIZE[1] + 2 * BORDER_PX
    cell_w, cell_h = tile_w + GAP_PX, tile_h + LABEL_PX
    canvas = np.full((rows * cell_h, (k + 1) * cell_w + GAP_PX, 3), 255, dtype=np.uint8)
    labels: list[tuple[float, float, str]] = []
    for i in range(rows):
        cells = [(_thumbnail(query_paths[i], COLOR_QUERY), f"query {query_pids[i]}")]
        for j, g in enumerate(ranked[i]):
            if g < 0:
                cells.append((_thumbnail(None, COLOR_MISSING), ""))
                continue
            ok = gallery_pids[g] == query_pids[i]
            tile = _thumbnail(gallery_paths[g], COLOR_CORRECT if ok else COLOR_WRONG)
            cells.append((tile, f"{j + 1}: {gallery_pids[g]}"))
        for j, (tile, label) in enumerate(cells):
            x0 = j * cell_w + (GAP_PX if j else 0)  # a wider gap after the query column
            y0 = i * cell_h + LABEL_PX
            canvas[y0 : y0 + tile_h, x0 : x0 + tile_w] = tile
            labels.append((x0 + tile_w / 2, y0 - 2, label))
    fig = Figure(figsize=(canvas.shape[1] / 100, canvas.shape[0] / 100 + 0.3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, canvas.shape[0] / (canvas.shape[0] + 30)))
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7)
    ax.axis("off")
    fig.suptitle(title, fontsize=9, y=0.995)
    fig.savefig(out, format="png")
    return out
