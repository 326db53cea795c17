"""The installed distribution's version (``vireid`` is a namespace package, so it lives here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vireid")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
