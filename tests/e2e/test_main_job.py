"""The main job end to end (issue #2 "done when"), on generated crops in the official SYSU-MM01 layout.

Export a (tiny, randomly initialised) SALCR model -> ``vireid ingest --layout sysu-mm01 --split test
--cameras ...`` -> ``POST /search`` of every infrared test crop -> k visible matches in score order with
their metadata; a restarted service gives identical results; a camera ingested later joins the same
gallery without touching what was there.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vireid.api import create_app
from vireid.api.settings import Settings
from vireid.cli import main as cli_main
from vireid.serving.export import export_model
from vireid.training.data import generate_synthetic

SYSU_CAMERAS = {"vis1": "cam1", "vis2": "cam2", "vis3": "cam4", "vis4": "cam5", "ir1": "cam3", "ir2": "cam6"}
K = 5


def _sysu_tree(tmp: Path) -> tuple[Path, list[int]]:
    """Write synthetic crops as ``cam{1..6}/{pid:04d}/NNNN.jpg`` + ``exp/*_id.txt``."""
    synth = generate_synthetic(
        tmp / "synthetic",
        num_identities=12,
        visible_cameras=4,
        infrared_cameras=2,
        images_per_camera=2,
        size=(96, 48),
        test_fraction=0.5,
        seed=3,
    )
    root = tmp / "sysu"
    with (synth.root / "identities.csv").open() as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            camera, pid = SYSU_CAMERAS[row["path"].split("/")[0]], int(row["pid"])
            target = root / camera / f"{pid:04d}" / f"{n:04d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(synth.root / row["path"], target)
    (root / "exp").mkdir()
    test_ids = sorted(synth.test_ids)
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test_ids)))
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, sorted(synth.train_ids))))
    (root / "exp" / "val_id.txt").write_text("")
    return root, test_ids


def _search_all(client: TestClient, queries: list[Path]) -> list[list[tuple[int, float]]]:
    results = []
    for path in queries:
        response = client.post(
            "/search",
            files={"image": (path.name, path.read_bytes(), "image/jpeg")},
            data={"modality": "infrared", "k": str(K)},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query_modality"] == "infrared"
        assert body["model"]["method"] == "salcr"
        matches = body["matches"]
        assert len(matches) == K
        scores = [m["score"] for m in matches]
        assert scores == sorted(scores, reverse=True)
        for match in matches:
            assert match["modality"] == "visible"
            assert match["camera"] in {"cam1", "cam2", "cam4", "cam5"}
            assert match["source"] and Path(match["source"]).is_file()
            assert match["track_id"] is not None
        results.append([(m["id"], m["score"]) for m in matches])
    return results


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("main-job")
    root, _ = _sysu_tree(tmp)
    model_dir = tmp / "model"
    export_model("salcr", out_dir=model_dir, variant="tiny")
    return {"root": root, "model": model_dir, "data": tmp / "gallery"}


def _ingest(deployment: dict[str, Path], cameras: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIREID_DATA_DIR", str(deployment["data"]))
    monkeypatch.setenv("VIREID_MODEL_DIR", str(deployment["model"]))
    argv = ["ingest", "--layout", "sysu-mm01", str(deployment["root"]), "--split", "test"]
    assert cli_main([*argv, "--cameras", cameras, "--no-progress"]) == 0


def _settings(deployment: dict[str, Path]) -> Settings:
    # The operator opts in to returning `source` (here the ingested file paths the test follows).
    return Settings(data_dir=deployment["data"], model_dir=deployment["model"], return_source=True)


def test_search_restart_and_later_camera(
    deployment: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = deployment["root"]
    test_ids = {int(x) for x in (root / "exp" / "test_id.txt").read_text().split(",")}
    queries = sorted(
        p for cam in ("cam3", "cam6") for p in (root / cam).glob("*/*.jpg") if int(p.parent.name) in test_ids
    )
    assert queries

    _ingest(deployment, "1,2,4", monkeypatch)
    with TestClient(create_app(_settings(deployment))) as client:
        first = _search_all(client, queries)
        stats_before = client.get("/gallery/stats").json()
        kept = {i: client.get(f"/gallery/{i}").json() for i, _ in first[0]}

    with TestClient(create_app(_settings(deployment))) as client:  # a restart: same data dir
        assert _search_all(client, queries) == first

    _ingest(deployment, "5", monkeypatch)  # camera 5 arrives later
    with TestClient(create_app(_settings(deployment))) as client:
        for item_id, before in kept.items():
            assert client.get(f"/gallery/{item_id}").json() == before
        stats_after = client.get("/gallery/stats").json()
        later = _search_all(client, queries)
    assert stats_after != stats_before
    assert "cam5" in str(stats_after) and "cam5" not in str(stats_before)
    # Old items keep their ids and scores; cam5 items can only push them down the list.
    for old, new in zip(first, later, strict=True):
        old_scores = dict(old)
        for item_id, score in new:
            if item_id in old_scores:
                assert score == pytest.approx(old_scores[item_id], abs=1e-5)
