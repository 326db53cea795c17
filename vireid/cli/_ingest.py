"""`vireid ingest`: embed a folder of crops, a CSV listing or a SYSU-MM01 tree into the gallery, or
import embeddings computed elsewhere (``--embeddings FILE.npy --metadata FILE.csv --model-version V``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vireid.cli._serve import add_settings_arguments, settings_from_args

if TYPE_CHECKING:
    from vireid.api.services import IngestFailure, IngestRecord, IngestReport

LAYOUTS = ("auto", "folder", "csv", "sysu-mm01")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vireid ingest``."""
    parser = subparsers.add_parser(
        "ingest",
        help="add crops to the gallery",
        description="Add crops to the gallery in the data directory (no server needed). Files already "
        "stored for the loaded model are skipped; unreadable files are listed and skipped. Each batch is "
        "committed and the index saved only when the whole batch succeeded. With --embeddings, vectors "
        "computed elsewhere are imported without images (both files are validated completely before "
        "anything is written; rows are L2-normalised; see docs/api.md). Exit code 0 when nothing "
        "failed, 1 when some files failed, 2 on a usage error or an invalid import.",
    )
    parser.add_argument(
        "path",
        type=Path,
        nargs="?",
        help="folder of crops, CSV file, or SYSU-MM01 root (not with --embeddings)",
    )
    parser.add_argument(
        "--embeddings", type=Path, help="import an (N, D) float .npy of embeddings instead of images"
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        help="with --embeddings: CSV, one row per vector: camera, modality[, captured_at, track_id, source, "
        "sha256]",
    )
    parser.add_argument(
        "--model-version", help="with --embeddings: the registered model version that produced the vectors"
    )
    parser.add_argument(
        "--rows-per-commit",
        type=int,
        default=None,
        help="with --embeddings: rows per SQL transaction and index save (default 4096)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="auto (default): csv for a .csv file, folder for a directory",
    )
    parser.add_argument("--camera", help="camera name (folder layout; CSV default)")
    parser.add_argument("--modality", choices=("visible", "infrared"), help="folder layout; CSV default")
    parser.add_argument("--captured-at", type=datetime.fromisoformat, help="ISO 8601 (folder layout)")
    parser.add_argument("--track-id", help="track id for every crop (folder layout)")
    parser.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="all",
        help="SYSU-MM01 identities from exp/<split>_id.txt; all = train+val+test (default)",
    )
    parser.add_argument("--cameras", help="SYSU-MM01 cameras to ingest, comma separated (default 1-6)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser)
    parser.set_defaults(handler=_run)


def _scan(args: argparse.Namespace) -> tuple[list[IngestRecord], list[IngestFailure]]:
    from vireid.api.services import read_csv, read_folder, read_sysu_mm01

    layout = args.layout
    if layout == "auto":
        layout = "csv" if args.path.is_file() and args.path.suffix.lower() == ".csv" else "folder"
    if layout == "sysu-mm01":
        cameras = args.cameras.split(",") if args.cameras else None
        return read_sysu_mm01(args.path, split=args.split, cameras=cameras)
    if layout == "csv":
        return read_csv(args.path, camera=args.camera, modality=args.modality)
    if not args.camera or not args.modality:
        raise ValueError("a folder ingest needs --camera and --modality")
    return read_folder(
        args.path,
        camera=args.camera,
        modality=args.modality,
        captured_at=args.captured_at,
        track_id=args.track_id,
    )


def _summary(report: IngestReport, failures: list[IngestFailure]) -> dict[str, Any]:
    failed: list[dict[str, str | None]] = [{"source": f.source, "reason": f.reason} for f in failures]
    failed += [{"source": o.source, "reason": o.reason} for o in report.failed]
    return {
        "added": report.added,
        "skipped_duplicate": report.duplicates,
        "failed": len(failed),
        "failures": failed,
        "ids": [o.id for o in report.outcomes if o.status == "added"],
    }


def _print(summary: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    lines = [
        f"added {summary['added']}, skipped-duplicate {summary['skipped_duplicate']}, "
        f"failed {summary['failed']}"
    ]
    lines += [f"  failed: {f['source']}: {f['reason']}" for f in summary["failures"]]
    sys.stdout.write("\n".join(lines) + "\n")


def _run(args: argparse.Namespace) -> int:
    if args.embeddings is not None or args.metadata is not None or args.model_version is not None:
        return _run_import(args)
    if args.path is None:
        raise ValueError("give a folder, CSV file or SYSU-MM01 root, or --embeddings with --metadata")
    from tqdm import tqdm

    from vireid.api.services import GalleryService, open_context

    settings = settings_from_args(args)
    records, failures = _scan(args)
    if not records and not failures:
        raise ValueError(f"no image files found in {args.path}")
    context = open_context(settings)
    try:
        with tqdm(total=len(records), unit="img", desc="ingest", disable=args.no_progress) as bar:
            report = GalleryService(context).ingest(records, progress=bar.update)
    finally:
        context.close(finish_builds=True)
    summary = _summary(report, failures)
    _print(summary, as_json=args.json)
    return 1 if summary["failed"] else 0


def _run_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vireid.api.services import GalleryService, open_context, read_embedding_import, registered_dim

    if args.path is not None:
        raise ValueError("--embeddings imports vectors: give no folder or CSV of images with it")
    if args.embeddings is None or args.metadata is None or args.model_version is None:
        raise ValueError(
            "an embeddings import needs --embeddings FILE.npy, --metadata FILE.csv and --model-version V"
        )
    if args.rows_per_commit is not None and args.rows_per_commit < 1:
        raise ValueError(f"--rows-per-commit must be >= 1, got {args.rows_per_commit}")
    context = open_context(settings_from_args(args))
    try:
        dim = registered_dim(context, args.model_version)
        data = read_embedding_import(args.embeddings, args.metadata, dim=dim)
        with tqdm(total=len(data), unit="vec", desc="import", disable=args.no_progress) as bar:
            report = GalleryService(context).import_embeddings(
                data, model_version=args.model_version, batch_size=args.rows_per_commit, progress=bar.update
            )
    finally:
        context.close()
    summary = _summary(report, [])
    summary["model_version"] = args.model_version
    summary["renormalised"] = data.renormalised
    _print(summary, as_json=args.json)
    return 1 if summary["failed"] else 0
