"""The ``vireid`` console command.

Each subcommand lives in its own ``_<name>.py`` module with a ``register(subparsers)`` function and is a
thin layer over library code. Heavy imports (torch, onnxruntime, faiss, fastapi) happen inside the
handlers, so ``vireid --help`` is instant and a serving host without torch can still run ``serve``,
``ingest`` and ``search``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vireid.cli import _evaluate, _export, _ingest, _search, _serve, _synth, _train
from vireid.cli._version import __version__

_SUBCOMMANDS = (_train, _evaluate, _export, _ingest, _search, _serve, _synth)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="vireid",
        description="Unsupervised visible-infrared person re-identification.",
    )
    parser.add_argument("--version", action="version", version=f"vireid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vireid`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, KeyError) as exc:
        logging.getLogger("vireid").error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
