"""TensorRT backend (serving/runtime/_tensorrt.py): clear error without tensorrt; GPU parity with ORT."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vireid.serving.runtime import BackendUnavailableError, OnnxEmbedder, TensorRTEmbedder, load_embedder


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_clear_error_without_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        TensorRTEmbedder(tmp_path)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        load_embedder(tmp_path, backend="tensorrt")


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime(tiny_export: tuple[Path, Any], tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    out, _ = tiny_export
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(7)]
    reference = OnnxEmbedder(out, device="cpu").embed(images, "infrared")
    trt = TensorRTEmbedder(out, batch_size=4, cache_dir=tmp_path)
    try:
        got = trt.embed(images, "infrared")
    finally:
        trt.close()
    assert np.min(np.sum(got * reference, axis=1)) > 0.9999
    assert len(list(tmp_path.glob("*.engine"))) == 2
    cached = TensorRTEmbedder(out, batch_size=4, cache_dir=tmp_path)  # second start loads the cache
    try:
        np.testing.assert_allclose(cached.embed(images, "infrared"), got, atol=1e-5)
    finally:
        cached.close()
