"""The ``vireid`` console command.

Each subcommand lives in its own ``_<name>.py`` module with a ``register(subparsers)`` function and is a
thin layer over library code. Heavy imports (torch, onnxruntime, faiss, fastapi) happen inside the
handlers, so ``vireid --help`` is instant and a serving host without torch can still run ``serve``,
``ingest`` and ``search``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

from vireid.cli import _evaluate, _export, _ingest, _reindex, _search, _serve, _synth, _train
from vireid.cli._version import __version__

_SUBCOMMANDS = (_train, _evaluate, _export, _ingest, _reindex, _search, _serve, _synth)

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


def _log_level(args: argparse.Namespace) -> int:
    """``-v`` → DEBUG; else the subcommand's ``--log-level`` (``serve``); else INFO."""
    if args.verbose:
        return logging.DEBUG
    return int(logging.getLevelName(str(getattr(args, "log_level", None) or "info").upper()))


@contextlib.contextmanager
def _logging(level: int) -> Iterator[None]:
    """Log vireid's own records at ``level`` and other libraries' at WARNING and above (all at DEBUG).

    Third-party INFO records (alembic's plugin setup, the FAISS loader trying CPU builds in turn, ...)
    say nothing an operator acts on. The levels are restored on exit, so calling :func:`main` in-process
    (tests) leaves logging as it found it.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root, ours = logging.getLogger(), logging.getLogger("vireid")
    saved = root.level, ours.level
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    ours.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vireid`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _logging(_log_level(args)):
        try:
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            return 130
        except (FileNotFoundError, ValueError, KeyError) as exc:
            logging.getLogger("vireid").error("%s", exc)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
