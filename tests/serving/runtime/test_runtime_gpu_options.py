"""GPU options (runtime/_gpu_options.py): validation, the ORT providers list, routing by load_embedder.

The CPU tests pin the exact provider options ONNX Runtime receives and the TensorRT arguments; the
``gpu``-marked ones run the CUDA provider and TensorRT with these options on a lent GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vireid.serving.runtime import (
    CUDNN_CONV_ALGO_SEARCH,
    GpuOptions,
    OnnxEmbedder,
    cuda_provider_options,
    load_embedder,
    onnx_providers,
    tensorrt_options,
)
from vireid.serving.runtime import _tensorrt as tensorrt_module

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def test_defaults_and_provider_options() -> None:
    assert GpuOptions() == GpuOptions(
        device_id=0,
        cudnn_conv_algo_search="EXHAUSTIVE",
        trt_fp16=False,
        trt_cache_dir=None,
        trt_workspace_gib=4.0,
    )
    assert CUDNN_CONV_ALGO_SEARCH == ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
    assert cuda_provider_options(GpuOptions()) == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}
    got = cuda_provider_options(GpuOptions(device_id=3, cudnn_conv_algo_search="HEURISTIC"))
    assert got == {"device_id": "3", "cudnn_conv_algo_search": "HEURISTIC"}


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", [CUDA, CPU], [CPU]),  # the options have no effect on a CPU session
        ("auto", [CPU], [CPU]),
        ("auto", [CUDA, CPU], [(CUDA, {"device_id": "1", "cudnn_conv_algo_search": "DEFAULT"}), CPU]),
        ("cuda", [CUDA, CPU], [(CUDA, {"device_id": "1", "cudnn_conv_algo_search": "DEFAULT"}), CPU]),
    ],
)
def test_onnx_providers(device: str, available: list[str], expected: list[Any]) -> None:
    gpu = GpuOptions(device_id=1, cudnn_conv_algo_search="DEFAULT", trt_fp16=True)
    assert onnx_providers(device, available, gpu=gpu) == expected


def test_onnx_providers_default_options_are_fresh_dicts() -> None:
    first = onnx_providers("auto", [CUDA, CPU])
    assert first == [(CUDA, {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}), CPU]
    first[0][1]["device_id"] = "9"  # type: ignore[index]
    assert onnx_providers("auto", [CUDA, CPU])[0][1]["device_id"] == "0"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_id": -1}, "device_id must be an integer >= 0"),
        ({"device_id": True}, "device_id"),
        ({"cudnn_conv_algo_search": "heuristic"}, r"one of \['EXHAUSTIVE', 'HEURISTIC', 'DEFAULT'\]"),
        ({"trt_fp16": "yes"}, "trt_fp16"),
        ({"trt_workspace_gib": 0}, "trt_workspace_gib"),
        ({"trt_workspace_gib": float("nan")}, "trt_workspace_gib"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpuOptions(**kwargs)


def test_load_embedder_gives_tensorrt_its_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TensorRT here: the class is replaced and its arguments recorded."""
    calls: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, model_dir: Path, **kwargs: Any) -> None:
            calls.append({"model_dir": model_dir, **kwargs})

    monkeypatch.setattr(tensorrt_module, "TensorRTEmbedder", Recorder)
    gpu = GpuOptions(device_id=1, trt_fp16=True, trt_cache_dir=str(tmp_path / "c"), trt_workspace_gib=2)  # type: ignore[arg-type]
    load_embedder(tmp_path, backend="tensorrt", gpu=gpu, batch_size=8)
    load_embedder(tmp_path, backend="tensorrt", device="cuda", gpu=gpu, fp16=False)  # explicit wins
    load_embedder(tmp_path, backend="tensorrt")
    base = {
        "model_dir": tmp_path,
        "device_id": 1,
        "fp16": True,
        "cache_dir": tmp_path / "c",
        "workspace_gib": 2,
    }
    assert calls == [
        {**base, "batch_size": 8},
        {**base, "fp16": False},
        {"model_dir": tmp_path, **tensorrt_options(None)},
    ]
    assert tensorrt_options(None) == {"device_id": 0, "fp16": False, "cache_dir": None, "workspace_gib": 4.0}


def test_onnx_runtime_on_cpu_accepts_and_ignores_gpu_options(
    tiny_export: tuple[Path, Any], caplog: pytest.LogCaptureFixture
) -> None:
    out, _ = tiny_export
    gpu = GpuOptions(device_id=5, cudnn_conv_algo_search="HEURISTIC", trt_fp16=True)
    with caplog.at_level(logging.WARNING):
        embedder = load_embedder(out, backend="onnxruntime", device="cpu", gpu=gpu, intra_op_threads=1)
    assert isinstance(embedder, OnnxEmbedder) and embedder.providers == [CPU] and embedder.gpu == gpu
    assert "trt_fp16 applies to backend='tensorrt' only" in caplog.text
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(3)]
    plain = OnnxEmbedder(out, device="cpu", intra_op_threads=1)
    np.testing.assert_array_equal(embedder.embed(images, "visible"), plain.embed(images, "visible"))


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.gpu
@pytest.mark.parametrize("search", CUDNN_CONV_ALGO_SEARCH)
def test_cuda_provider_gets_the_options(tiny_export: tuple[Path, Any], search: str) -> None:
    """On a GPU: the session really runs on CUDA with the requested cuDNN search, and agrees with CPU."""
    out, _ = tiny_export
    embedder = load_embedder(
        out, backend="onnxruntime", device="cuda", gpu=GpuOptions(device_id=0, cudnn_conv_algo_search=search)
    )
    assert isinstance(embedder, OnnxEmbedder) and embedder.device == "cuda"
    session = embedder._sessions["visible"]
    options = session.get_provider_options()[CUDA]
    assert options["device_id"] == "0" and options["cudnn_conv_algo_search"] == search
    reference = OnnxEmbedder(out, device="cpu").embed(_images(7), "visible")
    got = embedder.embed(_images(7), "visible")
    assert np.min(np.sum(got * reference, axis=1)) > 0.9999


@pytest.mark.gpu
def test_tensorrt_fp16_from_options(tiny_export: tuple[Path, Any], tmp_path: Path) -> None:
    """On a GPU with TensorRT: fp16 and fp32 engines are cached apart and both agree with ORT on CPU."""
    pytest.importorskip("tensorrt")
    out, _ = tiny_export
    reference = OnnxEmbedder(out, device="cpu").embed(_images(7), "infrared")
    for fp16, min_cosine in ((False, 0.9999), (True, 0.99)):
        gpu = GpuOptions(trt_fp16=fp16, trt_cache_dir=tmp_path / "engines", trt_workspace_gib=1.0)
        embedder = load_embedder(out, backend="tensorrt", gpu=gpu, batch_size=4)
        try:
            assert embedder._fp16 is fp16  # type: ignore[attr-defined]
            got = embedder.embed(_images(7), "infrared")
        finally:
            embedder.close()  # type: ignore[attr-defined]
        assert np.min(np.sum(got * reference, axis=1)) > min_cosine
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 4  # 2 modalities x {fp32, fp16}
