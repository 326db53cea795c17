"""`vireid train` (placeholder: to be written)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("train", help="(not yet implemented)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("vireid train is not implemented yet")
