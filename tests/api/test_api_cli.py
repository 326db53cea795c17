"""`vireid ingest`, `vireid search`, `vireid serve` end to end on generated data (fake embedder)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_testkit import DIM, FakeEmbedder, image_bytes, make_sysu
from PIL import Image

from vireid.cli import main


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the runtime loader: every command gets a fake embedder; the call arguments are kept."""
    calls: list[dict[str, Any]] = []

    def load(model_dir: Path, **kwargs: Any) -> FakeEmbedder:
        calls.append({"model_dir": model_dir, **kwargs})
        return FakeEmbedder()

    monkeypatch.setattr("vireid.serving.runtime.load_embedder", load)
    return calls


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = _run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_ingest_folder_with_duplicate_and_corrupt_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_model: list[dict[str, Any]]
) -> None:
    crops = tmp_path / "crops"
    crops.mkdir()
    for n in range(4):
        (crops / f"{n}.jpg").write_bytes(image_bytes(n))
    (crops / "copy-of-0.jpg").write_bytes(image_bytes(0))
    (crops / "broken.jpg").write_bytes(image_bytes(9)[:120])
    (crops / "anim.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
    data = tmp_path / "data"
    common = ("--data-dir", str(data), "--no-progress", "--batch-size", "2")
    code, report = _json(capsys, "ingest", str(crops), "--camera", "gate", "--modality", "visible", *common)
    assert code == 1  # some files failed
    assert report["added"] == 4 and report["skipped_duplicate"] == 1 and report["failed"] == 2
    assert {Path(f["source"]).name for f in report["failures"]} == {"broken.jpg", "anim.gif"}
    assert fake_model[0]["model_dir"] == data / "model" and fake_model[0]["batch_size"] == 2
    # a second run adds nothing
    code, again = _json(capsys, "ingest", str(crops), "--camera", "gate", "--modality", "visible", *common)
    assert again["added"] == 0 and again["skipped_duplicate"] == 5
    # the text summary
    code, out = _run(capsys, "ingest", str(crops), "--camera", "gate", "--modality", "visible", *common)
    assert out.startswith("added 0, skipped-duplicate 5, failed 2")
    assert "broken.jpg" in out


def test_ingest_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes(1))
    (tmp_path / "b.png").write_bytes(image_bytes(2, fmt="PNG"))
    (tmp_path / "bad.jpg").write_text("not an image")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,camera,modality,captured_at,track_id\n"
        "a.jpg,lobby,visible,2024-06-01T08:00:00Z,7\n"
        "b.png,yard,infrared,,\n"
        "a.jpg,lobby,visible,,\n"
        "bad.jpg,lobby,visible,,\n"
        "nofile.jpg,lobby,visible,,\n"
    )
    data = tmp_path / "data"
    code, report = _json(capsys, "ingest", str(listing), "--data-dir", str(data), "--no-progress")
    assert code == 1
    assert (report["added"], report["skipped_duplicate"], report["failed"]) == (2, 1, 2)
    code, hits = _json(
        capsys, "search", str(tmp_path / "a.jpg"), "--data-dir", str(data), "--modality", "infrared"
    )
    assert code == 0
    assert hits["matches"][0]["camera"] == "lobby" and hits["matches"][0]["track_id"] == "7"
    assert hits["matches"][0]["captured_at"].startswith("2024-06-01T08:00:00")
    code, ir = _json(
        capsys, "search", str(tmp_path / "b.png"), "--data-dir", str(data), "--modality", "visible"
    )
    assert [m["camera"] for m in ir["matches"]] == ["yard"]


def test_ingest_sysu_layout_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "SYSU-MM01"
    make_sysu(root)
    (root / "cam1" / "0004" / "0002.jpg").write_bytes(image_bytes(104))  # duplicate of cam1/0004/0001
    (root / "cam3" / "0005" / "0002.jpg").write_bytes(b"\xff\xd8\xff broken")
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--no-progress")
    code, report = _json(capsys, "ingest", str(root), "--layout", "sysu-mm01", "--split", "test", *args)
    assert code == 1
    assert (report["added"], report["skipped_duplicate"], report["failed"]) == (12, 1, 1)
    code, rgb_only = _json(
        capsys,
        "ingest",
        str(root),
        "--layout",
        "sysu-mm01",
        "--split",
        "train",
        "--cameras",
        "1,2,4,5",
        *args,
    )
    assert code == 0 and rgb_only["added"] == 8
    # infrared query of identity 4 (cam3) → visible gallery; the ids of both ingests are searchable
    query = root / "cam3" / "0004" / "0001.jpg"
    code, out = _run(capsys, "search", str(query), "-k", "3", "--cameras", "cam1,cam2", *args[:2])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("model fake fake0001: infrared -> visible, 3 matches")
    assert lines[1].split() == [
        "rank",
        "score",
        "id",
        "camera",
        "modality",
        "captured_at",
        "track_id",
        "source",
    ]
    assert len(lines) == 5 and all(line.split()[3] in {"cam1", "cam2"} for line in lines[2:])
    code, stats_hits = _json(
        capsys, "search", str(query), "-k", "1000", "--target-modality", "visible", *args[:2]
    )
    assert len(stats_hits["matches"]) == 8 + 8  # test: 2 ids × 4 RGB cams; train: 2 ids × 4 RGB cams


def test_search_with_a_tracklet_grouped_by_track(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "SYSU-MM01"
    make_sysu(root)
    args = ("--data-dir", str(tmp_path / "data"))
    assert (
        main(["ingest", str(root), "--layout", "sysu-mm01", "--split", "test", *args, "--no-progress"]) == 0
    )
    capsys.readouterr()
    tracklet = [str(root / f"cam{cam}" / "0004" / "0001.jpg") for cam in (3, 6)] + [
        str(root / "cam1/0005/0001.jpg")
    ]
    code, body = _json(capsys, "search", *tracklet, "-k", "5", "--group-by", "track", *args)
    assert code == 0 and body["query_images"] == 3 and body["group_by"] == "track"
    assert sorted(m["track_id"] for m in body["matches"]) == ["0004", "0005"]
    # fewer tracks than k: all 8 candidates examined, cams 1, 2, 4, 5 of each identity
    assert [m["track_matches"] for m in body["matches"]] == [4, 4] and body["candidates"] == 8
    code, out = _run(capsys, "search", *tracklet, "-k", "2", "--group-by", "track", "--rerank", "cmfp", *args)
    assert code == 0
    assert "3 images fused, grouped by track, re-ranked by cmfp" in out.splitlines()[0]
    assert out.splitlines()[1].split()[-1] == "track_matches"
    assert len(out.splitlines()) == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["search", tracklet[0], "--group-by", "camera", *args])
    assert exit_info.value.code == 2


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "a.jpg").write_bytes(image_bytes(1))
    assert main(["ingest", str(tmp_path / "crops"), "--data-dir", str(tmp_path / "d")]) == 2  # no camera
    assert main(["search", str(tmp_path / "missing.jpg"), "--data-dir", str(tmp_path / "d")]) == 2
    assert (
        main(["search", str(tmp_path / "crops" / "a.jpg"), "-k", "0", "--data-dir", str(tmp_path / "d")]) == 2
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            [
                "ingest",
                str(empty),
                "--camera",
                "c",
                "--modality",
                "visible",
                "--data-dir",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )


def test_serve_runs_uvicorn_with_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr("uvicorn.run", fake_run)
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123", "--data-dir", str(tmp_path)]) == 0
    assert seen["kwargs"]["host"] == "0.0.0.0" and seen["kwargs"]["port"] == 8123
    assert seen["app"].state.settings.data_dir == tmp_path
    assert main(["serve", "--port", "70000"]) == 2


def test_serve_warns_when_public_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: None)
    caplog.set_level("WARNING")
    assert main(["serve", "--host", "127.0.0.1", "--data-dir", str(tmp_path)]) == 0
    assert "without VIREID_API_KEY" not in caplog.text
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 0
    assert "listening on 0.0.0.0 without VIREID_API_KEY" in caplog.text
    caplog.clear()
    monkeypatch.setenv("VIREID_API_KEY", "k")
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 0
    assert "without VIREID_API_KEY" not in caplog.text


@pytest.mark.parametrize(("level", "shown"), [("warning", False), ("info", True)])
def test_serve_log_level_governs_vireid_loggers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, level: str, shown: bool
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        logging.getLogger("vireid.api.app").info("ready (what the lifespan logs)")

    monkeypatch.setattr("uvicorn.run", fake_run)
    caplog.set_level("DEBUG")
    assert main(["serve", "--log-level", level, "--data-dir", str(tmp_path)]) == 0
    assert seen["log_level"] == level
    infos = [r.getMessage() for r in caplog.records if r.name.startswith("vireid") and r.levelname == "INFO"]
    assert bool(infos) is shown
    if shown:
        assert any(m.startswith("serving data dir") for m in infos) and "ready" in infos[-1]
    assert logging.getLogger("vireid").level == logging.NOTSET  # restored: main() leaves logging as it was


_INGEST_WITH_FAKE_MODEL = """
import sys
sys.path.insert(0, sys.argv[1])
from api_testkit import FakeEmbedder
import vireid.serving.runtime as runtime
runtime.load_embedder = lambda model_dir, **kwargs: FakeEmbedder()
from vireid.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_cli_logs_no_third_party_noise(tmp_path: Path) -> None:
    """A fresh process (FAISS and Alembic load once per process): ``vireid ingest`` logs vireid's own INFO
    lines but not Alembic's ``setup plugin`` records nor the FAISS loader's tries of CPU builds (#12)."""
    crops = tmp_path / "crops"
    crops.mkdir()
    for n in range(3):
        (crops / f"{n}.jpg").write_bytes(image_bytes(n))
    argv = [
        "ingest",
        str(crops),
        "--camera",
        "gate",
        "--modality",
        "visible",
        "--data-dir",
        str(tmp_path / "d"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", _INGEST_WITH_FAKE_MODEL, str(Path(__file__).parent), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "INFO vireid.api.services._gallery: ingest: 3 added" in done.stderr
    assert "ingest: 100%" in done.stderr  # the progress bar
    for noise in ("alembic.runtime.plugins", "setup plugin", "faiss.loader", "swigfaiss", "AVX"):
        assert noise not in done.stderr, done.stderr


def test_reindex_registers_and_embeds_the_stored_crops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api_testkit import FakeManifest

    def load(model_dir: Path, **kwargs: Any) -> FakeEmbedder:
        manifest = Path(model_dir) / "manifest.json"
        version = json.loads(manifest.read_text())["model_version"] if manifest.is_file() else "fake0001"
        return FakeEmbedder(FakeManifest(model_version=version))

    monkeypatch.setattr("vireid.serving.runtime.load_embedder", load)
    crops = tmp_path / "crops"
    crops.mkdir()
    for n in range(5):
        (crops / f"{n}.jpg").write_bytes(image_bytes(n))
    data = tmp_path / "data"
    common = ("--data-dir", str(data), "--no-progress")
    assert _run(capsys, "ingest", str(crops), "--camera", "c", "--modality", "visible", *common)[0] == 0
    new_model = tmp_path / "new-model"
    new_model.mkdir()
    (new_model / "manifest.json").write_text(
        json.dumps({"model_version": "fake0002", "method": "fake", "variant": "tiny", "embedding_dim": 48})
    )
    code, report = _json(capsys, "reindex", "--model", str(new_model), *common)
    assert code == 0 and report == {
        "version": "fake0002",
        "added": 5,
        "no_crop": 0,
        "failed": 0,
        "failures": [],
        "complete": True,
    }
    assert (data / "models" / "fake0002" / "manifest.json").is_file()
    code, out = _run(capsys, "reindex", "--model", str(new_model), *common)
    assert code == 0 and out.startswith("model fake0002: added 0") and "POST /models/fake0002/activate" in out
    code, _ = _run(capsys, "reindex", "--model", str(tmp_path / "missing"), *common)
    assert code == 2


def test_gpu_options_reach_the_embedder_loader(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    fake_model: list[dict[str, Any]],
) -> None:
    """Settings (environment or command-line flags) → open_context → load_embedder(gpu=GpuOptions(...))."""
    from vireid.serving.runtime import GpuOptions

    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "0.jpg").write_bytes(image_bytes(0))
    data = tmp_path / "data"
    common = ("--data-dir", str(data), "--no-progress", "--camera", "gate", "--modality", "visible")
    flags = ("--cuda-device-id", "2", "--cudnn-conv-algo-search", "heuristic", "--trt-fp16", "true")
    code, _ = _json(capsys, "ingest", str(crops), *common, *flags, "--trt-workspace-gib", "2")
    assert code == 0
    assert fake_model[0]["gpu"] == GpuOptions(
        device_id=2,
        cudnn_conv_algo_search="HEURISTIC",
        trt_fp16=True,
        trt_cache_dir=data / "trt-cache",
        trt_workspace_gib=2.0,
    )
    code, _ = _json(capsys, "ingest", str(crops), *common, "--trt-engine-cache-dir", str(tmp_path / "e"))
    assert fake_model[1]["gpu"] == GpuOptions(trt_cache_dir=tmp_path / "e")
    with caplog.at_level(logging.ERROR, logger="vireid"):
        assert main(["ingest", str(crops), *common, "--cudnn-conv-algo-search", "fastest"]) == 2
    assert "cudnn_conv_algo_search" in caplog.text and "'EXHAUSTIVE', 'HEURISTIC' or 'DEFAULT'" in caplog.text


def _embedding_files(tmp_path: Path, vectors: np.ndarray, rows: list[str]) -> tuple[str, str]:
    npy, csv = tmp_path / "emb.npy", tmp_path / "emb.csv"
    np.save(npy, vectors)
    csv.write_text("\n".join(["camera,modality,captured_at,track_id,source", *rows]) + "\n")
    return str(npy), str(csv)


def test_ingest_embeddings_then_search_reimport_and_image_404(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from vireid.api import Settings, create_app

    data = tmp_path / "data"
    common = ("--data-dir", str(data), "--no-progress")
    query = tmp_path / "q.jpg"
    query.write_bytes(image_bytes(5))
    vectors = np.random.default_rng(0).standard_normal((4, DIM)).astype(np.float32)
    vectors[2] = FakeEmbedder().embed([Image.open(query)], "infrared")[0] * 2.0
    npy, csv = _embedding_files(
        tmp_path, vectors, [f"cam{i},visible,2024-06-01T08:0{i}:00Z,t{i},far-{i}.jpg" for i in range(4)]
    )
    flags = ("--embeddings", npy, "--metadata", csv, *common)
    # the version must be registered: the data dir knows only fake0001 (registered by opening it)
    assert main(["ingest", *flags, "--model-version", "nope01"]) == 2
    assert (
        "model version 'nope01' is not registered" in caplog.text and "vireid reindex --model" in caplog.text
    )
    code, report = _json(capsys, "ingest", *flags, "--model-version", "fake0001")
    assert code == 0
    assert (report["added"], report["skipped_duplicate"], report["failed"], report["renormalised"]) == (
        4,
        0,
        0,
        4,
    )
    ids = report["ids"]
    code, hits = _json(capsys, "search", str(query), "-k", "2", *common[:2])
    assert code == 0
    assert hits["matches"][0]["id"] == ids[2] and hits["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits["matches"][0]["camera"] == "cam2" and hits["matches"][0]["track_id"] == "t2"
    code, again = _json(capsys, "ingest", *flags, "--model-version", "fake0001")
    assert (again["added"], again["skipped_duplicate"]) == (0, 4)
    code, out = _run(capsys, "ingest", *flags, "--model-version", "fake0001")
    assert out.startswith("added 0, skipped-duplicate 4, failed 0")
    # a NaN in the last row: exit 2, nothing written
    vectors[3, 0] = np.nan
    (tmp_path / "bad").mkdir()
    bad = _embedding_files(tmp_path / "bad", vectors, [f"c,visible,,,new-{i}" for i in range(4)])
    assert (
        main(["ingest", "--embeddings", bad[0], "--metadata", bad[1], *common, "--model-version", "fake0001"])
        == 2
    )
    assert "vector row 3: NaN" in caplog.text
    client = TestClient(create_app(Settings(data_dir=data), embedder=FakeEmbedder()))
    with client:
        assert client.get("/gallery/stats").json()["total"] == 4
        missing = client.get(f"/gallery/{ids[0]}/image")
        assert missing.status_code == 404 and "no stored crop" in missing.text
        assert client.get(f"/gallery/{ids[0]}").status_code == 200
    # usage errors
    assert main(["ingest", "--embeddings", npy, *common, "--model-version", "fake0001"]) == 2
    assert main(["ingest", str(tmp_path), "--embeddings", npy, "--metadata", csv, *common]) == 2
