"""int8 static quantization of an exported model (serving/export/_quantize.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vireid.serving.export import ExportError, quantize_model  # noqa: E402
from vireid.serving.runtime import Manifest, OnnxEmbedder  # noqa: E402


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    # smooth random crops (blocky colour fields) rather than white noise, closer to real images
    return [
        np.kron(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
        for _ in range(n)
    ]


def test_int8_model_is_written_and_close_to_fp32(tiny_export: tuple[Path, Any], tmp_path: Path) -> None:
    src, _ = tiny_export
    result = quantize_model(
        src, out_dir=tmp_path / "int8", calibration_images=_images(16), min_mean_cosine=0.9
    )
    manifest = Manifest.load(tmp_path / "int8")
    fp32 = Manifest.load(src)
    assert manifest.precision == "int8" and manifest.model_version != fp32.model_version
    assert manifest.embedding_dim == fp32.embedding_dim and manifest.input == fp32.input
    graph = onnx.load(str(result.graph_paths["visible"]))
    assert "QuantizeLinear" in {node.op_type for node in graph.graph.node}
    assert all(0.9 <= result.mean_cosine[m] <= 1.0 for m in ("visible", "infrared"))
    images = _images(5)
    a = OnnxEmbedder(tmp_path / "int8", device="cpu", intra_op_threads=1).embed(images, "visible")
    b = OnnxEmbedder(src, device="cpu", intra_op_threads=1).embed(images, "visible")
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert np.mean(np.sum(a * b, axis=1)) > 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def test_quantize_errors(tiny_export: tuple[Path, Any], tmp_path: Path) -> None:
    src, _ = tiny_export
    with pytest.raises(ValueError, match="at least 8"):
        quantize_model(src, out_dir=tmp_path / "q", calibration_images=_images(3))
    with pytest.raises(ExportError, match="too inaccurate"):
        quantize_model(src, out_dir=tmp_path / "q", calibration_images=_images(8), min_mean_cosine=1.01)
    assert list(tmp_path.iterdir()) == []
    quantize_model(src, out_dir=tmp_path / "q", calibration_images=_images(8), min_mean_cosine=0.0)
    with pytest.raises(ValueError, match="quantize an fp32 export"):
        quantize_model(tmp_path / "q", out_dir=tmp_path / "q2", calibration_images=_images(8))
    with pytest.raises(FileExistsError):
        quantize_model(src, out_dir=tmp_path / "q", calibration_images=_images(8))
