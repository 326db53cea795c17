"""`vireid export` (vireid/cli/_export.py) end to end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from vireid.cli import main
from vireid.serving.export import _export
from vireid.serving.runtime import Manifest, load_embedder


def test_cli_export_with_tiny_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_model_factory: Callable[..., Any],
) -> None:
    model = tiny_model_factory()
    seen: list[dict[str, Any]] = []

    def fake_load(method: str, **kwargs: Any) -> Any:
        seen.append({"method": method, **kwargs})
        return model

    monkeypatch.setattr(_export, "_load_model", fake_load)
    out = tmp_path / "model"
    assert main(["export", "--method", "salcr", "--variant", "tiny", "--out", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    manifest = Manifest.load(out)
    assert f"model_version={manifest.model_version}" in printed and "randomly_initialised=true" in printed
    assert seen == [{"method": "salcr", "variant": "tiny", "checkpoint": None, "backbone_weights": None}]
    # existing output → exit 1 without --force; verification failure → exit 1 and nothing written
    assert main(["export", "--method", "salcr", "--variant", "tiny", "--out", str(out)]) == 1
    bad = tmp_path / "bad"
    args = ["export", "--method", "salcr", "--variant", "tiny", "--out", str(bad), "--min-cosine", "2"]
    assert main(args) == 1
    assert not bad.exists()


def test_cli_rejects_both_weight_sources(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "export",
                "--method",
                "salcr",
                "--checkpoint",
                "a.pt",
                "--backbone-weights",
                "b.pth",
                "--out",
                "x",
            ]
        )
    assert info.value.code == 2


def test_cli_missing_checkpoint_exit_code(tmp_path: Path) -> None:
    pytest.importorskip("vireid.training.engine", reason="load_model_from_checkpoint not available")
    code = main(
        [
            "export",
            "--method",
            "salcr",
            "--checkpoint",
            str(tmp_path / "nope.pt"),
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["salcr", "sdcl"])
def test_cli_export_real_tiny_model_end_to_end(tmp_path: Path, method: str) -> None:
    """The real ``build_model(method, variant="tiny")`` through the ``vireid`` CLI, in a subprocess."""
    pytest.importorskip("vireid.training.models", reason="build_model not available")
    out = tmp_path / "model"
    entry = "import sys; from vireid.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", entry, "export", "--method", method, "--variant", "tiny", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOMLY INITIALISED" in result.stderr
    manifest = Manifest.load(out)
    assert manifest.method == method and manifest.randomly_initialised
    embedder = load_embedder(out, device="cpu", intra_op_threads=1)
    rng = np.random.default_rng(0)
    rows = embedder.embed([rng.integers(0, 256, (128, 64, 3), dtype=np.uint8) for _ in range(3)], "infrared")
    assert rows.shape == (3, manifest.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
