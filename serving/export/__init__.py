"""Export (torch side): trained models → ONNX graphs + ``manifest.json`` (architecture.md Contract 3)."""

from vireid.serving.export._export import (
    EXPORT_METHODS,
    EXPORT_VARIANTS,
    ExportResult,
    export_model,
    model_version_of,
)
from vireid.serving.export._graph import ExportError, GraphCheck, export_graph, fold_and_check, verify_graph
from vireid.serving.export._quantize import QuantizeResult, quantize_model

__all__ = [
    "EXPORT_METHODS",
    "EXPORT_VARIANTS",
    "ExportError",
    "ExportResult",
    "GraphCheck",
    "QuantizeResult",
    "export_graph",
    "export_model",
    "fold_and_check",
    "model_version_of",
    "quantize_model",
    "verify_graph",
]
