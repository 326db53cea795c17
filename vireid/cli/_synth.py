"""`vireid synth`: write a synthetic visible/infrared dataset in the camera-folder layout."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def _camera_counts(text: str) -> tuple[int, int]:
    """Parse ``"V,I"`` (visible and infrared camera counts)."""
    try:
        visible, infrared = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'VISIBLE,INFRARED' camera counts, e.g. 2,2; got {text!r}"
        ) from None
    return visible, infrared


def _size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` in pixels."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 128x64; got {text!r}") from None
    return height, width


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic visible/infrared person dataset (camera-folder layout)",
        description="Procedurally drawn pedestrians seen by visible and infrared cameras. Writes "
        "OUT/<camera>/*.jpg, OUT/cameras.yaml, OUT/identities.csv (ground truth) and OUT/split.csv.",
    )
    parser.add_argument("out", help="output folder (must be empty or missing)")
    parser.add_argument("--identities", type=int, default=100, help="number of identities (default 100)")
    parser.add_argument(
        "--cameras",
        type=_camera_counts,
        default=(2, 2),
        metavar="V,I",
        help="visible,infrared cameras (default 2,2)",
    )
    parser.add_argument(
        "--images-per-camera", type=int, default=2, help="images per identity and camera (default 2)"
    )
    parser.add_argument(
        "--size", type=_size, default=(128, 64), metavar="HxW", help="image size (default 128x64)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.25, help="held-out identity fraction (default 0.25)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from vireid.training.data import generate_synthetic

    visible, infrared = args.cameras
    try:
        summary = generate_synthetic(
            args.out,
            num_identities=args.identities,
            visible_cameras=visible,
            infrared_cameras=infrared,
            images_per_camera=args.images_per_camera,
            size=args.size,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except FileExistsError as exc:
        logger.error("%s (choose a new folder or remove it)", exc)
        return 2
    print(  # noqa: T201 - command output
        f"{summary.num_images} images of {summary.num_identities} identities "
        f"({len(summary.train_ids)} train / {len(summary.test_ids)} test) from cameras "
        f"{', '.join(f'{name} ({modality})' for name, modality in summary.cameras.items())} -> {summary.root}"
    )
    return 0
