"""vireid: unsupervised visible-infrared person re-identification.

The library lives in four subpackages, each installed from its own top-level folder:
``vireid.training`` (methods, data, pseudo-labels, evaluation), ``vireid.serving`` (ONNX export and
embedders), ``vireid.index`` (FAISS gallery + SQL metadata) and ``vireid.api`` (the HTTP service).
This root package only holds the ``vireid`` console command (:mod:`vireid.cli`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vireid")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
