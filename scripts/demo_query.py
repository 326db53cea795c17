"""POST every held-out infrared query crop of a dataset to a running vireid service and score the answers.

Used by ``scripts/demo.sh``. For a SYSU-MM01 tree the queries are the infrared test crops (cams 3, 6) and a
match is correct when it shows the same identity folder; for a camera-folder tree (``vireid synth``) they are
the infrared crops of the identities that ``split.csv`` holds out from training (all infrared crops when the
tree has no split), checked against ``identities.csv``.

Each query asks for the whole ranked gallery (``k`` = ``--rank-depth``, 1000 by default, the service's
maximum), so the last line is computed from the service's answers alone::

    summary: top-1 A% top-10 B% mAP C% chance top-1 D% (N queries, M gallery identities)

top-1 / top-10: share of queries whose first / first ten matches include a crop of the query's identity;
mAP: mean average precision over each query's ranked list; chance top-1: what a random ranking scores, the
mean over queries of (gallery crops of the query's identity) / (gallery crops).

``--contact-sheet PNG`` also draws the first queries of different identities (``--sheet-queries``, 8), each
followed by its top-10 matches read from their ``source``: green border = same identity as the query, red =
another one, grey = unknown. ``--model-dir`` / ``--gallery-dir`` add, after the summary line, where the
model and gallery are and the commands that use them.

``--gallery-csv OUT`` instead writes the ingest CSV of the held-out visible crops of a camera-folder tree (the
gallery ``scripts/demo.sh`` ingests) and exits.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageOps

INFRARED = ("infrared", "ir", "thermal", "nir")
VISIBLE = ("visible", "rgb")


def _sysu_queries(root: Path) -> dict[Path, str]:
    test_ids = {int(x) for x in (root / "exp" / "test_id.txt").read_text().replace("\n", ",").split(",") if x}
    return {
        path: path.parent.name
        for cam in ("cam3", "cam6")
        for path in sorted((root / cam).glob("*/*.jpg"))
        if int(path.parent.name) in test_ids
    }


def _read_column(path: Path, column: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["path"]: row[column] for row in csv.DictReader(fh)}


def _held_out(root: Path, wanted: tuple[str, ...]) -> list[tuple[Path, str, str]]:
    """(path, camera, identity) of the crops of cameras whose modality is in ``wanted``, test split only."""
    cameras = yaml.safe_load((root / "cameras.yaml").read_text())
    cameras = cameras.get("cameras", cameras)
    truth = _read_column(root / "identities.csv", "pid")
    split = _read_column(root / "split.csv", "split")
    crops = []
    for cam, modality in cameras.items():
        if str(modality).lower() in wanted:
            for path in sorted((root / cam).rglob("*.jpg")):
                rel = path.relative_to(root).as_posix()
                if split.get(rel, "test") == "test":
                    crops.append((path, cam, truth.get(rel, "")))
    return crops


def _identity(source: str | None, layout: str, root: Path, truth: dict[str, str]) -> str | None:
    if not source:
        return None
    path = Path(source)
    if layout == "sysu":
        return path.parent.name
    try:
        return truth.get(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return None


def _wait_ready(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit("demo: the service did not become ready")


def _average_precision(hits: np.ndarray) -> float:
    """AP of one ranked list of booleans (all true matches are in the list: the whole gallery is ranked)."""
    positions = np.flatnonzero(hits)
    if positions.size == 0:
        return 0.0
    return float(np.mean(np.arange(1, positions.size + 1) / (positions + 1)))


def _print_matches(path: Path, identity: str | None, body: dict, found: list[str | None], k: int) -> None:
    print(
        f"\nquery {path} (identity {identity}) -> top {k} of {len(body['matches'])} ranked "
        f"in {body['took_ms']:.1f} ms, model {body['model']['method']} {body['model']['version']}"
    )
    for rank, (match, ident) in enumerate(zip(body["matches"][:k], found, strict=False), start=1):
        mark = "=" if ident == identity else " "
        print(
            f"  {rank:2d} {mark} score={match['score']:.4f} id={match['id']} "
            f"camera={match['camera']} identity={ident} source={match['source']}"
        )


def _write_gallery_csv(root: Path, out: Path) -> int:
    crops = _held_out(root, VISIBLE)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "camera", "modality"])
        for path, cam, _ in crops:
            writer.writerow([path.resolve().as_posix(), cam, "visible"])
    print(f"gallery: {len(crops)} held-out visible crops listed in {out}")
    return 0


_CELL = (64, 128)  # width, height of one crop on the contact sheet
_BORDER = 4
_LABEL = 14
_COLOURS = {True: (30, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}
SheetRow = tuple[Path, str | None, list[dict], list[str | None]]  # query, identity, matches, identities


def _cell(path: str | Path | None, colour: tuple[int, int, int], label: str) -> Image.Image:
    """One crop fitted into the cell, framed in ``colour``, with ``label`` under it."""
    width, height = _CELL[0] + 2 * _BORDER, _CELL[1] + 2 * _BORDER + _LABEL
    cell = Image.new("RGB", (width, height), "white")
    cell.paste(colour, (0, 0, width, _CELL[1] + 2 * _BORDER))
    try:
        with Image.open(path or "") as crop:
            crop = ImageOps.pad(crop.convert("RGB"), _CELL, color=(235, 235, 235))
    except OSError:  # no source returned, or the file moved: a blank tile keeps the row aligned
        crop = Image.new("RGB", _CELL, (235, 235, 235))
    cell.paste(crop, (_BORDER, _BORDER))
    ImageDraw.Draw(cell).text((_BORDER, _CELL[1] + 2 * _BORDER + 1), label, fill="black")
    return cell


def _write_contact_sheet(rows: list[SheetRow], out: Path) -> None:
    """Rows of (query crop, identity, top matches, their identities) → one PNG."""
    gap = 12
    tiles = 1 + max((len(r[2]) for r in rows), default=0)
    cell_w, cell_h = _CELL[0] + 2 * _BORDER, _CELL[1] + 2 * _BORDER + _LABEL
    sheet = Image.new("RGB", (tiles * (cell_w + 2) + gap, len(rows) * (cell_h + 4)), "white")
    for y, (path, identity, matches, found) in enumerate(rows):
        top = y * (cell_h + 4)
        sheet.paste(_cell(path, (40, 90, 200), f"query {identity or '?'}"), (0, top))
        for x, (match, ident) in enumerate(zip(matches, found, strict=False), start=1):
            verdict = None if identity is None or ident is None else ident == identity
            tile = _cell(match.get("source"), _COLOURS[verdict], f"#{x} {match['score']:.2f}")
            sheet.paste(tile, (x * (cell_w + 2) + gap, top))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def _print_next_steps(args: argparse.Namespace, example: Path | None) -> None:
    """After the summary: where the model and gallery are, and what to run on them."""
    model, gallery = args.model_dir.resolve(), args.gallery_dir.resolve()
    env = f"VIREID_DATA_DIR={gallery} VIREID_MODEL_DIR={model}"
    vireid = Path(sys.executable).with_name("vireid")
    query = example.resolve() if example is not None else Path("CROP.jpg")
    print(
        f"""
What you are looking at
  model          {model}  (ONNX graphs + manifest.json)
  gallery        {gallery}  (SQLite metadata + FAISS index)
  contact sheet  {args.contact_sheet.resolve() if args.contact_sheet else "-"}
                 (each row: an infrared query, then its top-{args.k} visible matches; green = same person)
The scores come from a small model (MobileNetV2, configs/salcr_mobile.yaml) trained for minutes on CPU,
without labels, on a small dataset: they show that the pipeline works end to end, not what the methods can
reach. For real accuracy, train a paper preset on a GPU (configs/salcr_sysu.yaml or configs/sdcl_sysu.yaml,
with the ResNet-50 / TransReID-SSL weights named in docs/salcr.md and docs/sdcl.md), export it with
`vireid export` and ingest your cameras (README).

Next (the service above has stopped):
  {env} \\
      {vireid} search {query} --modality infrared -k 10
  {env} \\
      {vireid} serve            # then open http://127.0.0.1:8000/ (search page) or http://127.0.0.1:8000/docs"""
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--layout", choices=("sysu", "cameras"), required=True)
    parser.add_argument("-k", type=int, default=10, help="matches printed per shown query (default 10)")
    parser.add_argument("--rank-depth", type=int, default=1000, help="matches asked per query (default 1000)")
    parser.add_argument("--show", type=int, default=3, help="queries whose match lists are printed")
    parser.add_argument("--gallery-csv", type=Path, help="write the held-out visible gallery CSV and exit")
    parser.add_argument("--contact-sheet", type=Path, help="PNG of the first queries and matches")
    parser.add_argument("--sheet-queries", type=int, default=8, help="queries (rows) on the contact sheet")
    parser.add_argument("--model-dir", type=Path, help="exported model, for the closing notes")
    parser.add_argument("--gallery-dir", type=Path, help="gallery data dir, for the closing notes")
    args = parser.parse_args()
    if args.gallery_csv is not None:
        return _write_gallery_csv(args.dataset, args.gallery_csv)
    if not args.url:
        parser.error("--url is required")
    if args.layout == "sysu":
        queries: dict[Path, str | None] = dict(_sysu_queries(args.dataset))
        truth: dict[str, str] = {}
    else:
        queries = {path: pid or None for path, _, pid in _held_out(args.dataset, INFRARED)}
        truth = _read_column(args.dataset / "identities.csv", "pid")
    top1, top10, aps, chance = [], [], [], []
    gallery_ids: set[str] = set()
    sheet: list[SheetRow] = []
    with httpx.Client(base_url=args.url, timeout=60.0) as client:
        _wait_ready(client)
        for n, (path, identity) in enumerate(queries.items()):
            with path.open("rb") as fh:
                files = {"image": (path.name, fh, "image/jpeg")}
                data = {"modality": "infrared", "k": args.rank_depth}
                response = client.post("/search", files=files, data=data)
            response.raise_for_status()
            body = response.json()
            found = [_identity(m["source"], args.layout, args.dataset, truth) for m in body["matches"]]
            if n < args.show:
                _print_matches(path, identity, body, found, args.k)
            if len(sheet) < args.sheet_queries and identity not in {row[1] for row in sheet}:
                sheet.append((path, identity, body["matches"][: args.k], found[: args.k]))
            gallery_ids.update(i for i in found if i is not None)
            if identity is None or not found:
                continue
            hits = np.array([i == identity for i in found])
            top1.append(bool(hits[0]))
            top10.append(bool(hits[:10].any()))
            aps.append(_average_precision(hits))
            chance.append(float(hits.mean()))
    print(
        f"\n{len(queries)} infrared queries answered, {args.k} best matches shown for the first {args.show}."
    )
    if args.contact_sheet is not None and sheet:
        _write_contact_sheet(sheet, args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet} ({len(sheet)} queries with their top {args.k})")
    if not top1:
        print("summary: no query with a known identity (no identities.csv): nothing to score")
    else:
        print(
            f"summary: top-1 {100 * np.mean(top1):.1f}% top-10 {100 * np.mean(top10):.1f}% "
            f"mAP {100 * np.mean(aps):.1f}% chance top-1 {100 * np.mean(chance):.1f}% "
            f"({len(top1)} queries, {len(gallery_ids)} gallery identities)"
        )
    if args.model_dir is not None and args.gallery_dir is not None:
        _print_next_steps(args, sheet[0][0] if sheet else next(iter(queries), None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
