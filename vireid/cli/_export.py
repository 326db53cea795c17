"""`vireid export`: a trained model → ONNX graphs (one per modality) + ``manifest.json``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX + manifest.json for serving",
        description=(
            "Export one ONNX graph per modality (visible, infrared) with a dynamic batch axis and a "
            "manifest.json, verified against PyTorch in ONNX Runtime. Without --checkpoint or "
            "--backbone-weights a mobile model is the packaged ImageNet start and a full or tiny model is "
            "randomly initialised (the manifest says which)."
        ),
    )
    parser.add_argument("--method", required=True, choices=("salcr", "sdcl"), help="model family")
    parser.add_argument(
        "--variant",
        default=None,
        choices=("full", "tiny", "mobile"),
        help="model size: full, tiny or mobile (MobileNetV2; default: the checkpoint's, else full)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (vireid train output)")
    source.add_argument(
        "--backbone-weights",
        help="pretrained backbone weights file, or 'imagenet' (packaged MobileNetV2; mobile only)",
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory to create")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default: 18)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=0.9999,
        help="per-row cosine ONNX Runtime vs PyTorch required to pass (default: 0.9999)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="int8: static-quantize the verified fp32 graphs (needs --calibration-dir)",
    )
    parser.add_argument("--calibration-dir", type=Path, help="int8 calibration images (JPEG/PNG/BMP crops)")
    parser.add_argument(
        "--calibration-count", type=int, default=128, help="calibration images used (default 128)"
    )
    parser.set_defaults(handler=_run)


def _calibration_images(directory: Path, limit: int) -> list[Image.Image]:
    """Up to ``limit`` images spread evenly over ``directory`` (recursive), decoded to RGB."""
    from PIL import Image

    if not directory.is_dir():
        raise FileNotFoundError(f"calibration dir not found: {directory}")
    suffixes = {".jpg", ".jpeg", ".png", ".bmp"}
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in suffixes)
    if not paths:
        raise ValueError(f"no JPEG/PNG/BMP images under {directory}")
    step = max(1, len(paths) // limit)
    images = []
    for path in paths[::step][:limit]:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def _quantize(args: argparse.Namespace, fp32_dir: Path) -> float:
    from vireid.serving.export import quantize_model

    result = quantize_model(
        fp32_dir,
        out_dir=args.out,
        calibration_images=_calibration_images(args.calibration_dir, args.calibration_count),
        overwrite=args.force,
    )
    return min(result.mean_cosine.values())


def _run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from vireid.serving.export import ExportError, export_model

    int8 = args.precision == "int8"
    if int8 and args.calibration_dir is None:
        raise ValueError("--precision int8 needs --calibration-dir")
    if int8 and args.out.exists() and not args.force:
        raise ValueError(f"{args.out} already exists; pass --force to replace it")
    scratch = Path(tempfile.mkdtemp(prefix="vireid-export-")) if int8 else None
    try:
        result = export_model(
            args.method,
            out_dir=scratch / "fp32" if scratch is not None else args.out,
            variant=args.variant,
            checkpoint=args.checkpoint,
            backbone_weights=args.backbone_weights,
            opset=args.opset,
            overwrite=args.force,
            min_cosine=args.min_cosine,
        )
        int8_cosine = _quantize(args, result.out_dir) if scratch is not None else None
    except (ExportError, FileExistsError) as exc:
        logger.error("export failed: %s", exc)
        return 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    from vireid.serving.runtime import Manifest

    manifest = Manifest.load(args.out)
    worst = min(check.min_cosine_vs_torch for check in result.checks.values())
    print(  # noqa: T201 - the command's result line on stdout
        f"exported {manifest.method}/{manifest.variant} model_version={manifest.model_version} "
        f"dim={manifest.embedding_dim} input={manifest.input.height}x{manifest.input.width} "
        f"exporter={result.exporter} min_cosine_vs_torch={worst:.6f} "
        f"precision={manifest.precision}"
        + (f" int8_mean_cosine_vs_fp32={int8_cosine:.4f}" if int8_cosine is not None else "")
        + f" randomly_initialised={str(manifest.randomly_initialised).lower()} -> {args.out}"
    )
    return 0
