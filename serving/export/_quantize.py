"""Optional int8 graphs: ONNX Runtime static quantization (QDQ, per-channel weights) of an fp32 export."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.serving.export._export import _publish, model_version_of
from vireid.serving.export._graph import ExportError
from vireid.serving.runtime import MANIFEST_FILENAME, ImageInput, Manifest, l2_normalize, preprocess_batch

__all__ = ["QuantizeResult", "quantize_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_model` wrote and measured.

    Attributes:
        out_dir: The int8 model directory.
        manifest: Its manifest (``precision: "int8"``, new ``model_version``).
        graph_paths: Modality → int8 ONNX file.
        mean_cosine: Modality → mean per-row cosine of int8 vs fp32 embeddings on the calibration set.
        min_cosine: Modality → smallest per-row cosine.
    """

    out_dir: Path
    manifest: Manifest
    graph_paths: Mapping[str, Path]
    mean_cosine: Mapping[str, float]
    min_cosine: Mapping[str, float]


def _reader(input_name: str, batch: np.ndarray, chunk: int):  # type: ignore[no-untyped-def]
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._items: Iterator[dict[str, np.ndarray]] = iter(
                {input_name: batch[i : i + chunk]} for i in range(0, len(batch), chunk)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    return _Reader()


def _embed(path: Path, manifest: Manifest, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run([manifest.output_name], {manifest.input_name: batch})[0]
    return l2_normalize(out)


def _quantize_graph(
    src: Path, dst: Path, *, manifest: Manifest, batch: np.ndarray, op_types: Sequence[str]
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _reader(manifest.input_name, batch, chunk=8),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def quantize_model(
    model_dir: str | Path,
    *,
    out_dir: str | Path,
    calibration_images: Sequence[ImageInput],
    op_types: Sequence[str] = ("Conv", "MatMul", "Gemm"),
    min_mean_cosine: float = 0.98,
    overwrite: bool = False,
) -> QuantizeResult:
    """Write an int8 copy of an fp32 export (static QDQ quantization, per-channel int8 weights).

    Activation ranges come from ``calibration_images`` (and their horizontal flips, which the
    runtime also embeds); use real crops of the deployment cameras. Accuracy is reported as the
    cosine between int8 and fp32 per-view embeddings on the calibration set.

    Args:
        model_dir: An fp32 model directory written by :func:`export_model`.
        out_dir: The int8 model directory to create (written to a temp dir, then renamed).
        calibration_images: Decoded images (PIL or uint8 arrays), at least 8.
        op_types: ONNX operators to quantize.
        min_mean_cosine: Fail when the mean int8-vs-fp32 cosine of any modality is lower.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        :class:`QuantizeResult` with the accuracy numbers.

    Raises:
        ValueError: the source is not fp32, or fewer than 8 calibration images.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        ExportError: int8 accuracy below ``min_mean_cosine``.
    """
    src = Path(model_dir)
    manifest = Manifest.load(src)
    if manifest.precision != "fp32":
        raise ValueError(f"{src} holds a {manifest.precision} model; quantize an fp32 export")
    if len(calibration_images) < 8:
        raise ValueError(f"need at least 8 calibration images, got {len(calibration_images)}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    batch = preprocess_batch(list(calibration_images), manifest.input)
    batch = np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])])
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        means, mins = {}, {}
        for modality in manifest.modalities:
            fp32, int8 = manifest.graph_path(src, modality), work / manifest.graphs[modality]
            _quantize_graph(fp32, int8, manifest=manifest, batch=batch, op_types=op_types)
            cos = np.sum(_embed(int8, manifest, batch) * _embed(fp32, manifest, batch), axis=1)
            means[modality], mins[modality] = float(cos.mean()), float(cos.min())
            logger.info(
                "int8 %s: cosine vs fp32 mean %.4f min %.4f", modality, means[modality], mins[modality]
            )
            if means[modality] < min_mean_cosine:
                raise ExportError(f"int8 {modality} graph too inaccurate: mean cosine {means[modality]:.4f}")
        version = model_version_of([work / manifest.graphs[m] for m in manifest.modalities])
        new = Manifest.from_dict({**manifest.to_dict(), "precision": "int8", "model_version": version})
        (work / MANIFEST_FILENAME).write_text(new.to_json(), encoding="utf-8")
        _publish(work, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    paths = {m: out / name for m, name in new.graphs.items()}
    return QuantizeResult(out_dir=out, manifest=new, graph_paths=paths, mean_cosine=means, min_cosine=mins)
