"""export_model on a tiny Contract-1 model (serving/export/_export.py, _graph.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vireid.serving.export import ExportError, _export, export_model, model_version_of  # noqa: E402
from vireid.serving.runtime import MANIFEST_FILENAME, Manifest, OnnxEmbedder, preprocess_batch  # noqa: E402


def _use_model(monkeypatch: pytest.MonkeyPatch, model: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_load(method: str, **kwargs: Any) -> Any:
        calls.append({"method": method, **kwargs})
        return model

    monkeypatch.setattr(_export, "_load_model", fake_load)
    return calls


def test_export_writes_verified_graphs_and_manifest(tiny_export: tuple[Path, Any]) -> None:
    out, _model = tiny_export
    assert sorted(p.name for p in out.iterdir()) == ["infrared.onnx", MANIFEST_FILENAME, "visible.onnx"]
    manifest = Manifest.load(out)
    assert manifest.method == "salcr" and manifest.variant == "tiny"
    assert manifest.embedding_dim == 12
    assert (manifest.input.height, manifest.input.width) == (32, 16)
    assert manifest.flip_average and manifest.normalize_output
    assert manifest.randomly_initialised is True
    assert manifest.source_checkpoint is None and manifest.pretrained is None
    assert manifest.precision == "fp32" and manifest.opset == 18
    assert manifest.model_version == model_version_of([out / "visible.onnx", out / "infrared.onnx"])
    no_temp_left = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert no_temp_left == []


def test_graphs_have_dynamic_batch_and_folded_bn(tiny_export: tuple[Path, Any]) -> None:
    out, _model = tiny_export
    for name in ("visible.onnx", "infrared.onnx"):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model)
        dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value")
        assert model.graph.input[0].name == "images" and model.graph.output[0].name == "embeddings"
        producers = {out_name: node.op_type for node in model.graph.node for out_name in node.output}
        bn_after_conv = [
            n.name
            for n in model.graph.node
            if n.op_type == "BatchNormalization" and producers.get(n.input[0]) == "Conv"
        ]
        assert bn_after_conv == []
        assert [n.op_type for n in model.graph.node].count("Conv") == 2


def test_onnx_runtime_matches_torch_test_embedding(tiny_export: tuple[Path, Any]) -> None:
    out, model = tiny_export
    embedder = OnnxEmbedder(out, device="cpu", intra_op_threads=1, batch_size=4)
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (rng.integers(20, 60), rng.integers(10, 30), 3), dtype=np.uint8)
        for _ in range(9)
    ]
    x = torch.from_numpy(preprocess_batch(images, embedder.manifest.input))
    for modality in ("visible", "infrared"):
        with torch.inference_mode():  # Contract 1 test embedding: norm(mean(extract(x), extract(flip(x))))
            ref = (model.extract(x, modality) + model.extract(torch.flip(x, dims=[3]), modality)) / 2
            ref = torch.nn.functional.normalize(ref, dim=1).numpy()
        got = embedder.embed(images, modality)
        assert got.dtype == np.float32 and got.shape == (9, 12)
        assert np.min(np.sum(got * ref, axis=1)) > 0.99999  # both unit rows: dot = cosine
        np.testing.assert_allclose(got, ref, atol=5e-4)
    assert not np.allclose(embedder.embed(images, "visible"), embedder.embed(images, "infrared"), atol=1e-3)


def test_failed_verification_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Any]
) -> None:
    _use_model(monkeypatch, tiny_model_factory())
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_model("salcr", out_dir=out, variant="tiny", min_cosine=1.5)
    assert list(tmp_path.iterdir()) == []


def test_batch1_mismatch_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Any]
) -> None:
    model = tiny_model_factory()

    class BatchDependent(torch.nn.Module):  # output depends on the other rows: batch 1 != batch N
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            f = self.inner(x)
            return f + 5.0 * f.mean(dim=0, keepdim=True).flip(1)

    original = model.export_module
    model.export_module = lambda modality: BatchDependent(original(modality)).eval()
    _use_model(monkeypatch, model)
    with pytest.raises(ExportError, match="batch-1 rows differ"):
        export_model("salcr", out_dir=tmp_path / "model", variant="tiny")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Any]
) -> None:
    _use_model(monkeypatch, tiny_model_factory())
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"):
        export_model("salcr", out_dir=out, variant="tiny")
    result = export_model("salcr", out_dir=out, variant="tiny", overwrite=True, verify_rows=3)
    assert not (out / "old.txt").exists()
    assert result.graph_paths["visible"] == out / "visible.onnx"
    assert result.exporter in {"dynamo", "torchscript"}
    assert min(c.min_cosine_vs_torch for c in result.checks.values()) >= 0.9999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_weights_and_checkpoint_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Any]
) -> None:
    calls = _use_model(monkeypatch, tiny_model_factory())
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"w")
    result = export_model(
        "salcr", out_dir=tmp_path / "m", variant="tiny", backbone_weights=weights, verify_rows=2
    )
    assert calls[-1]["backbone_weights"] == weights and calls[-1]["checkpoint"] is None
    assert result.manifest.pretrained == str(weights)
    assert result.manifest.randomly_initialised is False
    with pytest.raises(ValueError, match="not both"):
        export_model("salcr", out_dir=tmp_path / "x", checkpoint=weights, backbone_weights=weights)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "resnet"}, "method must be one of"),
        ({"variant": "huge"}, "variant must be one of"),
        ({"method": "sdcl", "variant": "tiny"}, "is a 'salcr' model"),
        ({"variant": "full"}, "variant 'tiny'"),
        ({"verify_rows": 1}, "verify_rows"),
    ],
)
def test_argument_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_factory: Callable[..., Any],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    _use_model(monkeypatch, tiny_model_factory())
    args = {"method": "salcr", "variant": "tiny", **kwargs}
    with pytest.raises(ValueError, match=message):
        export_model(args.pop("method"), out_dir=tmp_path / "m", **args)
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_file(tmp_path: Path) -> None:
    pytest.importorskip("vireid.training.models", reason="build_model not available")
    with pytest.raises(FileNotFoundError, match="backbone weights"):
        export_model("salcr", out_dir=tmp_path / "m", variant="tiny", backbone_weights=tmp_path / "nope.pth")


def test_mobile_without_weights_exports_the_packaged_imagenet_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Any]
) -> None:
    model = tiny_model_factory()
    model.default_cfg = {**model.default_cfg, "variant": "mobile"}
    calls = _use_model(monkeypatch, model)
    result = export_model("salcr", out_dir=tmp_path / "model", variant="mobile")
    assert calls[0]["backbone_weights"] == "imagenet" and calls[0]["checkpoint"] is None
    manifest = Manifest.load(result.out_dir)
    assert manifest.pretrained == "imagenet" and manifest.randomly_initialised is False
    assert manifest.variant == "mobile"


def test_export_is_quiet_and_its_filters_are_scoped(
    tmp_path: Path, tiny_model_factory: Callable[..., Any]
) -> None:
    """No torchvision-skip records and no torch-internal ``LeafSpec`` FutureWarning per graph (#12), and
    the filters are gone after the call: a later warning of the same kind still shows."""
    import logging
    import warnings

    from vireid.serving.export import _graph

    registry = logging.getLogger(_graph._REGISTRY_LOGGER)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    registry.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exporter = _graph.export_graph(
                tiny_model_factory().export_module("visible"),
                torch.randn(2, 3, 32, 16),
                tmp_path / "visible.onnx",
                names=("images", "embeddings"),
                opset=18,
            )
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
            registry.warning("torchvision is not installed. Skipping torchvision::nms")
    finally:
        registry.removeHandler(handler)
    assert exporter == "dynamo"
    assert seen == ["torchvision is not installed. Skipping torchvision::nms"]  # only the one after export
    assert [str(w.message) for w in caught if "LeafSpec" in str(w.message)] == [
        "`isinstance(treespec, LeafSpec)` is deprecated"
    ]
    assert not registry.filters
