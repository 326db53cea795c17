"""Embedders: batching, flip averaging, L2 norm, providers, threads, no torch (runtime/_embedder.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vireid.serving.runtime import (
    BackendUnavailableError,
    BatchedEmbedder,
    Embedder,
    Manifest,
    OnnxEmbedder,
    flip_average,
    l2_normalize,
    load_embedder,
    preprocess_batch,
    resolve_session_device,
    select_providers,
)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class LinearEmbedder(BatchedEmbedder):
    """Fake backend: a fixed random linear map of the flattened input; records batch sizes."""

    def __init__(self, manifest: Manifest, *, batch_size: int) -> None:
        super().__init__(manifest, batch_size=batch_size)
        spec = manifest.input
        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal(
            (3 * spec.height * spec.width, manifest.embedding_dim), dtype=np.float32
        )
        self.calls: list[int] = []

    def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
        self.calls.append(batch.shape[0])
        sign = 1.0 if modality == "visible" else -1.0
        return sign * batch.reshape(batch.shape[0], -1) @ self.weights


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + i, 20 + i, 3), dtype=np.uint8)) for i in range(n)]


def test_l2_normalize_and_flip_average_by_hand() -> None:
    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])
    avg = flip_average(np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32))
    np.testing.assert_allclose(l2_normalize(avg), [[2**-0.5, 2**-0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        flip_average(np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32))


def test_flip_average_and_normalisation(manifest_factory: Callable[..., Manifest]) -> None:
    manifest = manifest_factory()
    embedder = LinearEmbedder(manifest, batch_size=8)
    images = _images(5)
    x = preprocess_batch(images, manifest.input)
    plain = x.reshape(5, -1) @ embedder.weights
    flipped = x[..., ::-1].reshape(5, -1) @ embedder.weights
    expected = (plain + flipped) / 2
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = embedder.embed(images, "visible")
    assert got.dtype == np.float32 and got.shape == (5, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert embedder.calls == [10]  # both views in one call

    no_flip = LinearEmbedder(manifest_factory(flip_average=False), batch_size=8)
    np.testing.assert_allclose(
        no_flip.embed(images, "visible"),
        plain / np.linalg.norm(plain, axis=1, keepdims=True),
        rtol=1e-4,
        atol=1e-5,
    )
    raw = LinearEmbedder(manifest_factory(flip_average=False, normalize_output=False), batch_size=8)
    np.testing.assert_allclose(raw.embed(images, "visible"), plain, rtol=1e-4, atol=1e-3)


def test_batch_splitting_gives_identical_rows(manifest_factory: Callable[..., Manifest]) -> None:
    images = _images(7)
    whole = LinearEmbedder(manifest_factory(), batch_size=32)
    split = LinearEmbedder(manifest_factory(), batch_size=3)
    a, b = whole.embed(images, "infrared"), split.embed(images, "infrared")
    assert split.calls == [6, 6, 2]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert whole.embed([], "visible").shape == (0, 12)


def test_bad_modality_and_batch_size(manifest_factory: Callable[..., Manifest]) -> None:
    embedder = LinearEmbedder(manifest_factory(graphs={"visible": "v.onnx"}), batch_size=2)
    with pytest.raises(ValueError, match="modality must be one of"):
        embedder.embed(_images(1), "thermal")
    with pytest.raises(ValueError, match="no 'infrared' graph"):
        embedder.embed(_images(1), "infrared")
    with pytest.raises(ValueError, match="batch"):
        embedder.embed_preprocessed(np.zeros((1, 3, 8, 8), np.float32), "visible")
    with pytest.raises(ValueError, match="batch_size"):
        LinearEmbedder(manifest_factory(), batch_size=0)
    assert isinstance(embedder, Embedder)


def test_wrong_graph_output_shape_is_an_error(manifest_factory: Callable[..., Manifest]) -> None:
    class Broken(LinearEmbedder):
        def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
            return np.zeros((batch.shape[0], 5), np.float32)

    with pytest.raises(RuntimeError, match="returned shape"):
        Broken(manifest_factory(), batch_size=2).embed(_images(2), "visible")


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", [CUDA, CPU], [CPU]),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", ["AzureExecutionProvider", CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_select_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert select_providers(device, available) == expected


def test_select_providers_errors() -> None:
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        select_providers("cuda", [CPU])
    with pytest.raises(ValueError, match="device"):
        select_providers("tpu", [CPU])


def test_resolve_session_device() -> None:
    assert resolve_session_device("auto", [CUDA, CPU]) == "cuda"
    assert resolve_session_device("auto", [CPU]) == "cpu"  # CUDA EP failed to start: fell back
    assert resolve_session_device("cpu", [CPU]) == "cpu"
    with pytest.raises(BackendUnavailableError, match="fell back"):
        resolve_session_device("cuda", [CPU])


def test_cuda_build_without_gpu_falls_back_to_cpu(
    tiny_export: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The GPU build is 'installed' (mocked list) but the session only gets the CPU provider."""
    ort = pytest.importorskip("onnxruntime")
    out, _ = tiny_export
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    created: list[list[Any]] = []
    real_session = ort.InferenceSession

    def session(path: str, options: Any, providers: list[Any]) -> Any:
        created.append(list(providers))
        return real_session(path, options, providers=[CPU])  # what ORT does when CUDA cannot start

    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.WARNING):
        embedder = OnnxEmbedder(out, device="auto", intra_op_threads=1)
    cuda = (CUDA, {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"})  # GpuOptions() defaults
    assert created == [[cuda, CPU], [cuda, CPU]]
    assert embedder.device == "cpu" and embedder.providers == [CPU]
    assert "fell back to CPU" in caplog.text
    with pytest.raises(BackendUnavailableError, match="fell back"):
        OnnxEmbedder(out, device="cuda")


def test_onnx_embedder_batches_and_threads(tiny_export: tuple[Path, Any]) -> None:
    out, _ = tiny_export
    images = _images(11, seed=3)
    one = OnnxEmbedder(out, device="cpu", batch_size=1, intra_op_threads=1)
    many = load_embedder(out, backend="onnxruntime", device="cpu", batch_size=4, intra_op_threads=1)
    assert isinstance(many, Embedder) and many.device == "cpu"  # type: ignore[attr-defined]
    a, b = one.embed(images, "visible"), many.embed(images, "visible")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: many.embed(images[i : i + 5], "visible"), range(6)))
    for i, rows in enumerate(results):
        np.testing.assert_allclose(rows, b[i : i + 5], rtol=1e-5, atol=1e-6)


def test_load_embedder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        load_embedder(tmp_path, backend="openvino")
    with pytest.raises(ValueError, match="device"):
        load_embedder(tmp_path, device="gpu")
    with pytest.raises(ValueError, match="GPU only"):
        load_embedder(tmp_path, backend="tensorrt", device="cpu")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_embedder(tmp_path)


def test_missing_graph_file(tmp_path: Path, manifest_factory: Callable[..., Manifest]) -> None:
    (tmp_path / "manifest.json").write_text(manifest_factory().to_json())
    with pytest.raises(FileNotFoundError, match="visible"):
        OnnxEmbedder(tmp_path, device="cpu")


def test_runtime_path_never_imports_torch(tiny_export: tuple[Path, Any]) -> None:
    out, _ = tiny_export
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from PIL import Image
        import vireid.serving.runtime as rt
        assert "torch" not in sys.modules, "importing vireid.serving.runtime pulled in torch"
        embedder = rt.load_embedder({str(out)!r}, device="cpu", intra_op_threads=1)
        rows = embedder.embed([Image.new("RGB", (20, 40), (10, 200, 30))], "infrared")
        assert rows.shape == (1, 12), rows.shape
        assert "torch" not in sys.modules, "embedding pulled in torch"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
