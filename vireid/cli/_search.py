"""`vireid search`: search the gallery in the data directory with a crop or a tracklet (no server needed)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vireid.cli._serve import add_settings_arguments, settings_from_args

if TYPE_CHECKING:
    from vireid.api.services import SearchResult

_COLUMNS = ("rank", "score", "id", "camera", "modality", "captured_at", "track_id", "source")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vireid search``."""
    parser = subparsers.add_parser(
        "search",
        help="search the gallery with a crop or the crops of one tracklet",
        description="Embed IMAGE (several: the crops of one person's tracklet, fused into one query by the "
        "mean of their normalised embeddings) and print the closest gallery crops of the other modality.",
    )
    parser.add_argument(
        "image", type=Path, nargs="+", help="query crop(s) (JPEG, PNG or BMP); several = one tracklet"
    )
    parser.add_argument("--modality", choices=("visible", "infrared"), default="infrared", help="of IMAGE")
    parser.add_argument(
        "-k",
        type=int,
        default=10,
        help="number of matches (tracks with --group-by track), 1-1000 (default 10)",
    )
    parser.add_argument("--target-modality", choices=("visible", "infrared"), help="default: the other one")
    parser.add_argument("--cameras", help="comma-separated gallery cameras to keep")
    parser.add_argument("--since", type=datetime.fromisoformat, help="ISO 8601, inclusive (naive = UTC)")
    parser.add_argument("--until", type=datetime.fromisoformat, help="ISO 8601, exclusive (naive = UTC)")
    parser.add_argument(
        "--group-by", choices=("none", "track"), default="none", help="track: best match per gallery track_id"
    )
    parser.add_argument(
        "--rerank", choices=("none", "cmfp"), default="none", help="cmfp: re-rank by test-time CMFP"
    )
    parser.add_argument("--nprobe", type=int, help="IVF lists probed (default VIREID_INDEX_NPROBE)")
    parser.add_argument("--ef-search", type=int, help="HNSW search beam (default VIREID_INDEX_EF_SEARCH)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_settings_arguments(parser)
    parser.set_defaults(handler=_run)


def result_to_dict(result: SearchResult) -> dict[str, Any]:
    """The result in the JSON shape of ``POST /search``."""
    return {
        "model": {"method": result.method, "version": result.model_version},
        "query_modality": result.query_modality,
        "target_modality": result.target_modality,
        "matches": [
            {
                "id": m.id,
                "score": m.score,
                "camera": m.camera,
                "modality": m.modality,
                "captured_at": m.captured_at.isoformat() if m.captured_at else None,
                "track_id": m.track_id,
                "source": m.source,
                "track_matches": m.track_matches,
            }
            for m in result.matches
        ],
        "took_ms": result.took_ms,
        "query_images": result.query_images,
        "group_by": result.group_by,
        "rerank": result.rerank,
        "candidates": result.candidates,
    }


def format_table(result: SearchResult) -> str:
    """A plain-text table of the matches, one row per match, best first."""
    options = [f"{result.query_images} images fused"] if result.query_images > 1 else []
    options += ["grouped by track"] if result.group_by == "track" else []
    options += [f"re-ranked by {result.rerank}"] if result.rerank != "none" else []
    head = (
        f"model {result.method} {result.model_version}: {result.query_modality} -> "
        f"{result.target_modality}, {len(result.matches)} matches in {result.took_ms:.1f} ms"
        + "".join(f", {option}" for option in options)
    )
    grouped = result.group_by == "track"
    columns = [*_COLUMNS, "track_matches"] if grouped else list(_COLUMNS)
    rows = [columns]
    for rank, m in enumerate(result.matches, start=1):
        when = m.captured_at.isoformat() if m.captured_at else "-"
        row = [
            str(rank),
            f"{m.score:.4f}",
            str(m.id),
            m.camera,
            m.modality,
            when,
            m.track_id or "-",
            m.source or "-",
        ]
        rows.append([*row, str(m.track_matches)] if grouped else row)
    widths = [max(len(row[c]) for row in rows) for c in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([head, *lines])


def _run(args: argparse.Namespace) -> int:
    from vireid.api.services import SearchService, open_context

    settings = settings_from_args(args)
    images = []
    for path in args.image:
        if not path.is_file():
            raise FileNotFoundError(f"no such image: {path}")
        if path.stat().st_size > settings.max_upload_bytes:
            raise ValueError(f"{path}: larger than the {settings.max_upload_bytes}-byte limit")
        images.append((str(path), path.read_bytes()))
    context = open_context(settings)
    try:
        result = SearchService(context).search_tracklet(
            images,
            modality=args.modality,
            k=args.k,
            target_modality=args.target_modality,
            cameras=args.cameras.split(",") if args.cameras else None,
            since=args.since,
            until=args.until,
            group_by=args.group_by,
            rerank=args.rerank,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
        )
    finally:
        context.close()
    if args.json:
        sys.stdout.write(json.dumps(result_to_dict(result), indent=2) + "\n")
    else:
        sys.stdout.write(format_table(result) + "\n")
    return 0
