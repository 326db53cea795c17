"""`vireid reindex`: register an exported model and embed the stored gallery crops with it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vireid.cli._serve import add_settings_arguments, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vireid reindex``."""
    parser = subparsers.add_parser(
        "reindex",
        help="register a model version and embed the gallery with it",
        description="Register an exported model (vireid export --out DIR) in the data directory and embed "
        "every stored gallery crop it does not hold yet into its own indexes, in batches with a progress "
        "bar. Safe while `vireid serve` runs on the same data directory (the service keeps its active "
        "model); a killed run resumes where it stopped; running it again only adds what is new. When "
        "it reports the version complete, switch the service with POST /models/<version>/activate. Exit "
        "code 0 when the version is complete, 1 when images are missing (no stored crop, or undecodable), "
        "2 on a usage error.",
    )
    parser.add_argument("--model", type=Path, required=True, help="exported model folder (manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vireid.api.services import ModelService, open_context

    if not (args.model / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no exported model in {args.model} (manifest.json missing; run vireid export)"
        )
    context = open_context(settings_from_args(args))
    try:
        service = ModelService(context)
        version = service.register(args.model)
        with tqdm(
            total=service.remaining(version),
            unit="img",
            desc=f"reindex {version[:12]}",
            disable=args.no_progress,
        ) as bar:
            report = service.reindex(version, progress=bar.update)
    finally:
        context.close(finish_builds=True)
    summary = {
        "version": report.version,
        "added": report.added,
        "no_crop": report.no_crop,
        "failed": len(report.failed),
        "failures": report.failed,
        "complete": report.complete,
    }
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"model {report.version}: added {report.added}, without a stored crop {report.no_crop}, "
            f"failed {len(report.failed)}; "
            + (
                f"complete: activate it with POST /models/{report.version}/activate\n"
                if report.complete
                else "incomplete: ingest the missing images again (their crops were not stored)\n"
            )
        )
    return 0 if report.complete else 1
