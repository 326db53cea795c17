"""`vireid search`: search the gallery in the data directory with one crop (no server needed)."""

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
        help="search the gallery with one crop",
        description="Embed IMAGE and print the closest gallery crops of the other modality.",
    )
    parser.add_argument("image", type=Path, help="query crop (JPEG, PNG or BMP)")
    parser.add_argument("--modality", choices=("visible", "infrared"), default="infrared", help="of IMAGE")
    parser.add_argument("-k", type=int, default=10, help="number of matches, 1-1000 (default 10)")
    parser.add_argument("--target-modality", choices=("visible", "infrared"), help="default: the other one")
    parser.add_argument("--cameras", help="comma-separated gallery cameras to keep")
    parser.add_argument("--since", type=datetime.fromisoformat, help="ISO 8601, inclusive (naive = UTC)")
    parser.add_argument("--until", type=datetime.fromisoformat, help="ISO 8601, exclusive (naive = UTC)")
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
            }
            for m in result.matches
        ],
        "took_ms": result.took_ms,
    }


def format_table(result: SearchResult) -> str:
    """A plain-text table of the matches, one row per match, best first."""
    head = (
        f"model {result.method} {result.model_version}: {result.query_modality} -> "
        f"{result.target_modality}, {len(result.matches)} matches in {result.took_ms:.1f} ms"
    )
    rows = [list(_COLUMNS)]
    for rank, m in enumerate(result.matches, start=1):
        when = m.captured_at.isoformat() if m.captured_at else "-"
        rows.append(
            [
                str(rank),
                f"{m.score:.4f}",
                str(m.id),
                m.camera,
                m.modality,
                when,
                m.track_id or "-",
                m.source or "-",
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([head, *lines])


def _run(args: argparse.Namespace) -> int:
    from vireid.api.services import SearchService, open_context

    settings = settings_from_args(args)
    if not args.image.is_file():
        raise FileNotFoundError(f"no such image: {args.image}")
    if args.image.stat().st_size > settings.max_upload_bytes:
        raise ValueError(f"{args.image}: larger than the {settings.max_upload_bytes}-byte limit")
    data = args.image.read_bytes()
    context = open_context(settings)
    try:
        result = SearchService(context).search(
            data,
            modality=args.modality,
            k=args.k,
            target_modality=args.target_modality,
            cameras=args.cameras.split(",") if args.cameras else None,
            since=args.since,
            until=args.until,
            source=str(args.image),
        )
    finally:
        context.close()
    if args.json:
        sys.stdout.write(json.dumps(result_to_dict(result), indent=2) + "\n")
    else:
        sys.stdout.write(format_table(result) + "\n")
    return 0
