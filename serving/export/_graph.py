"""Torch → ONNX for one modality graph, BN folding, checking and ONNX Runtime verification."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["ExportError", "GraphCheck", "export_graph", "fold_and_check", "verify_graph"]

logger = logging.getLogger(__name__)

# The dynamo exporter's graph passes log every step at INFO; keep export output readable.
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript")
# The dynamo exporter's op registry warns once per torchvision op (nms, roi_align, roi_pool,
# deform_conv2d) when torchvision is absent, on every export. Our models use none of them, and the
# train extra deliberately has no torchvision (house style 18), so those four records are dropped.
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"
_TORCHVISION_SKIP = "torchvision is not installed. Skipping"
# torch.export's pytree pickling still calls ``isinstance(treespec, LeafSpec)`` inside torch itself
# (reported from copyreg.py, so it names no line of ours); nothing we can change.
_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def _drop_torchvision_skips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_TORCHVISION_SKIP)


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """For one export call: exporter INFO chatter off, the torchvision-skip records and the torch-internal
    ``LeafSpec`` FutureWarning dropped; every other warning still shows."""
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(saved[name], logging.WARNING))
    registry = logging.getLogger(_REGISTRY_LOGGER)
    registry.addFilter(_drop_torchvision_skips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LEAFSPEC_WARNING, category=FutureWarning)
            yield
    finally:
        registry.removeFilter(_drop_torchvision_skips)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class ExportError(RuntimeError):
    """Export failed: the exporter crashed, ``onnx.checker`` refused the graph, or ONNX Runtime
    disagrees with PyTorch beyond tolerance."""


@dataclass(frozen=True)
class GraphCheck:
    """Verification numbers of one exported graph.

    Attributes:
        modality: ``"visible"`` or ``"infrared"``.
        rows: Rows of the random verification batch.
        min_cosine_vs_torch: Smallest per-row cosine between ONNX Runtime and PyTorch outputs.
        min_cosine_batch1: Smallest per-row cosine between batch-1 runs and the full-batch run.
        max_abs_diff_vs_torch: Largest absolute element difference to PyTorch.
    """

    modality: str
    rows: int
    min_cosine_vs_torch: float
    min_cosine_batch1: float
    max_abs_diff_vs_torch: float


def _export_dynamo(
    module: nn.Module, example: torch.Tensor, path: Path, *, names: tuple[str, str], opset: int
) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )


def _export_legacy(
    module: nn.Module, example: torch.Tensor, path: Path, *, names: tuple[str, str], opset: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[names[0]],
            output_names=[names[1]],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
            do_constant_folding=True,
        )


def export_graph(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    names: tuple[str, str],
    opset: int,
) -> str:
    """Export ``module`` to ONNX with a dynamic batch axis.

    Tries the ``torch.export``-based exporter (``dynamo=True``) first and falls back to the legacy
    TorchScript exporter when it fails.

    Args:
        module: Eval-mode module, ``forward(x)`` with x (B, 3, H, W) float32 → (B, D) float32.
        example: (B, 3, H, W) float32 example input, B >= 2 so the batch axis is not specialised.
        path: Output ``.onnx`` file (may get a sibling ``.data`` file for external weights).
        names: (input name, output name).
        opset: ONNX opset version.

    Returns:
        ``"dynamo"`` or ``"torchscript"``: the exporter that succeeded.

    Raises:
        ExportError: both exporters failed.
    """
    errors: list[str] = []
    for name, fn in (("dynamo", _export_dynamo), ("torchscript", _export_legacy)):
        try:
            with torch.inference_mode(False), torch.no_grad(), _quiet_exporter_logs():
                fn(module, example, path, names=names, opset=opset)
        except Exception as exc:  # exporter failures come in many types; we fall back, then report all
            logger.warning("ONNX export with the %s exporter failed: %s", name, exc)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        logger.info("exported %s with the %s exporter (opset %d)", path.name, name, opset)
        return name
    raise ExportError("ONNX export failed with every exporter: " + " | ".join(errors))


def fold_and_check(raw_path: Path, final_path: Path) -> None:
    """Apply ONNX Runtime's portable (BASIC) graph optimisations and run ``onnx.checker``.

    BASIC level folds eval-mode BatchNorm into the preceding convolutions, folds constants and
    removes redundant nodes, using only standard ONNX operators, so the result runs on any backend.
    The result is written as one self-contained file (weights inline).

    Args:
        raw_path: Exporter output.
        final_path: Where to write the optimised graph.

    Raises:
        ExportError: ``onnx.checker`` rejects the graph.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(final_path)
    ort.InferenceSession(str(raw_path), options, providers=["CPUExecutionProvider"])
    try:
        onnx.checker.check_model(str(final_path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {final_path.name}: {exc}") from exc
    model = onnx.load(str(final_path), load_external_data=False)
    kinds = [node.op_type for node in model.graph.node]
    logger.info(
        "%s: %d nodes after BN folding (%d Conv, %d BatchNormalization left)",
        final_path.name,
        len(kinds),
        kinds.count("Conv"),
        kinds.count("BatchNormalization"),
    )


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1, dtype=np.float64)
    den = np.linalg.norm(a, axis=1).astype(np.float64) * np.linalg.norm(b, axis=1).astype(np.float64)
    cosine: np.ndarray = num / np.maximum(den, 1e-12)
    return cosine


def verify_graph(
    module: nn.Module,
    path: Path,
    *,
    modality: str,
    inputs: np.ndarray,
    names: tuple[str, str],
    min_cosine: float,
) -> GraphCheck:
    """Check an ONNX graph against its PyTorch module on random inputs.

    Two checks, each per row: ONNX Runtime (batch N) vs PyTorch, and ONNX Runtime batch 1 vs batch N.

    Args:
        module: The eval-mode module that was exported.
        path: ONNX file to check.
        modality: For messages and the report.
        inputs: (N, 3, H, W) float32 verification batch.
        names: (input name, output name) of the graph.
        min_cosine: Smallest acceptable per-row cosine similarity.

    Returns:
        The measured :class:`GraphCheck`.

    Raises:
        ExportError: non-finite outputs, wrong shapes, or a row below ``min_cosine``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(torch.from_numpy(inputs)).float().numpy()
    (got,) = session.run([names[1]], {names[0]: inputs})
    single = np.concatenate(
        [session.run([names[1]], {names[0]: inputs[i : i + 1]})[0] for i in range(len(inputs))]
    )
    if got.shape != expected.shape or single.shape != expected.shape:
        raise ExportError(
            f"{modality}: ONNX output shapes {got.shape}/{single.shape} != torch {expected.shape}"
        )
    if not (np.isfinite(got).all() and np.isfinite(single).all() and np.isfinite(expected).all()):
        raise ExportError(f"{modality}: non-finite values in the verification outputs")
    check = GraphCheck(
        modality=modality,
        rows=len(inputs),
        min_cosine_vs_torch=float(_row_cosine(got, expected).min()),
        min_cosine_batch1=float(_row_cosine(single, got).min()),
        max_abs_diff_vs_torch=float(np.abs(got - expected).max()),
    )
    if check.min_cosine_vs_torch < min_cosine:
        raise ExportError(
            f"{modality}: ONNX Runtime disagrees with PyTorch: min row cosine "
            f"{check.min_cosine_vs_torch:.6f} < {min_cosine} (max abs diff {check.max_abs_diff_vs_torch:.3g})"
        )
    if check.min_cosine_batch1 < min_cosine:
        raise ExportError(
            f"{modality}: batch-1 rows differ from batch-{len(inputs)} rows: min cosine "
            f"{check.min_cosine_batch1:.6f} < {min_cosine}"
        )
    return check
