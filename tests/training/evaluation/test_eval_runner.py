"""evaluate_model / evaluate_cross_modality / merge_results on fake layouts with tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_fakes import DummyReID
from PIL import Image

from vireid.training.data import ImageRecord, regdb_test, sysu_mm01_test
from vireid.training.evaluation import (
    SCHEMA_VERSION,
    evaluate_cross_modality,
    evaluate_model,
    evaluate_regdb,
    evaluate_sysu,
    extract_features,
    merge_results,
    negative_dot_distance,
)

METRIC_KEYS = {"r1", "r5", "r10", "r20", "mAP", "mINP", "num_valid_queries", "cmc"}


class MixedReID(DummyReID):
    """Imperfect cross-modality model: a different fixed random mixing per modality."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.mix = {
            m: torch.eye(25) + 0.9 * torch.randn(25, 25, generator=gen) for m in ("visible", "infrared")
        }

    def extract(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return super().extract(x, modality) @ self.mix[modality]


def _check_png(path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 50 and img.size[1] > 50


def test_sysu_end_to_end_json_schema_pictures_and_single_embedding(
    fake_sysu, dummy_model, transform, tmp_path
) -> None:
    out = tmp_path / "eval"
    res = evaluate_model(
        dummy_model,
        dataset="sysu",
        root=fake_sysu,
        mode="both",
        trials=3,
        out_dir=out,
        transform=transform,
        metadata={"checkpoint": "x.pt", "model_version": "abc"},
    )
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == res
    assert set(res) == {"schema_version", "dataset", "config", "results", "timing", "files"}
    assert res["schema_version"] == SCHEMA_VERSION and res["dataset"] == "sysu"
    assert res["config"]["modes"] == ["all", "indoor"] and res["config"]["trials"] == [0, 1, 2]
    assert res["config"]["checkpoint"] == "x.pt" and res["config"]["model"]["method"] == "dummy"
    for mode, valid_per_trial in (("all", 10), ("indoor", 8)):  # see the camera rules in conftest
        entry = res["results"][mode]
        assert set(entry["mean"]) == METRIC_KEYS and [t["trial"] for t in entry["trials"]] == [0, 1, 2]
        assert all(t["num_valid_queries"] == valid_per_trial for t in entry["trials"])
        assert entry["mean"]["r1"] == 1.0 and entry["mean"]["mAP"] == pytest.approx(1.0)
    trial_galleries = [
        sysu_mm01_test(fake_sysu, mode=m, trial=t)[1] for m in ("all", "indoor") for t in range(3)
    ]
    galleries = {str(r.path) for gallery in trial_galleries for r in gallery}
    queries = sysu_mm01_test(fake_sysu, mode="all", trial=0)[0]
    assert res["timing"]["images_embedded"] == len(galleries) + len(queries)
    assert dummy_model.rows_seen == 2 * res["timing"]["images_embedded"]  # each image once (x2 views)
    for key in ("cmc_png", "rank_list_png"):
        _check_png(res["files"][key])


def test_sysu_metrics_match_direct_metric_call(fake_sysu, transform) -> None:
    model = MixedReID()
    res = evaluate_model(model, dataset="sysu", root=fake_sysu, mode="all", trials=[4], transform=transform)
    query, gallery = sysu_mm01_test(fake_sysu, mode="all", trial=4)
    qf = extract_features(model, query, modality="infrared", transform=transform)
    gf = extract_features(model, gallery, modality="visible", transform=transform)
    cams = lambda recs: np.array([int(r.camera[3:]) for r in recs])  # noqa: E731
    direct = evaluate_sysu(
        negative_dot_distance(qf, gf),
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
        cams(query),
        cams(gallery),
    )
    got = res["results"]["all"]["trials"][0]
    assert got["mAP"] == pytest.approx(direct.mAP, abs=1e-9)
    np.testing.assert_allclose(got["cmc"], direct.cmc, atol=1e-9)
    assert direct.mAP < 0.999  # the mixed model is not perfect, so the comparison means something


def test_regdb_both_directions_match_direct_metric(fake_regdb, transform) -> None:
    model = MixedReID()
    res = evaluate_model(model, dataset="regdb", root=fake_regdb, trials=[1, 2], transform=transform)
    assert set(res["results"]) == {"visible_to_thermal", "thermal_to_visible"}
    for name, (q_mod, g_mod) in (
        ("visible_to_thermal", ("visible", "infrared")),
        ("thermal_to_visible", ("infrared", "visible")),
    ):
        trials = res["results"][name]["trials"]
        assert [t["trial"] for t in trials] == [1, 2]
        for t in trials:
            query, gallery = regdb_test(fake_regdb, trial=t["trial"], direction=name)
            qf = extract_features(model, query, modality=q_mod, transform=transform)
            gf = extract_features(model, gallery, modality=g_mod, transform=transform)
            direct = evaluate_regdb(
                negative_dot_distance(qf, gf),
                np.array([r.pid for r in query]),
                np.array([r.pid for r in gallery]),
            )
            assert t["mAP"] == pytest.approx(direct.mAP, abs=1e-9)
            assert t["mINP"] == pytest.approx(direct.mINP, abs=1e-9)
            np.testing.assert_allclose(t["cmc"], direct.cmc, atol=1e-9)
        mean = res["results"][name]["mean"]
        assert mean["mAP"] == pytest.approx(np.mean([t["mAP"] for t in trials]))
    v2t, t2v = res["results"]["visible_to_thermal"]["mean"], res["results"]["thermal_to_visible"]["mean"]
    assert v2t["mAP"] != pytest.approx(t2v["mAP"])  # the two directions are different rankings


def test_llcm_end_to_end_perfect_model(fake_llcm, dummy_model, transform) -> None:
    res = evaluate_model(dummy_model, dataset="llcm", root=fake_llcm, trials=2, transform=transform)
    assert set(res["results"]) == {"visible_to_infrared", "infrared_to_visible"}
    for entry in res["results"].values():
        assert entry["mean"]["r1"] == 1.0 and len(entry["trials"]) == 2
        assert entry["mean"]["num_valid_queries"] == 2 * 16


def test_postprocess_hook_is_reported_separately(fake_regdb, dummy_model, transform) -> None:
    seen = []

    def reverse(q: np.ndarray, g: np.ndarray) -> np.ndarray:
        seen.append((q.shape, g.shape))
        return q @ g.T  # similarity used as distance: the worst possible ranking

    res = evaluate_model(
        dummy_model, dataset="regdb", root=fake_regdb, trials=[1], transform=transform, postprocess=reverse
    )
    assert seen and seen[0] == ((18, 25), (18, 25))
    plain = res["results"]["visible_to_thermal"]["mean"]
    post = res["postprocessed"]["cmfp"]["visible_to_thermal"]["mean"]
    assert plain["r1"] == 1.0 and post["r1"] == 0.0 and post["mAP"] < plain["mAP"]


def test_merge_results_concatenates_splits(fake_regdb, transform) -> None:
    model = MixedReID()
    runs = [
        evaluate_model(model, dataset="regdb", root=fake_regdb, trials=[t], transform=transform)
        for t in (1, 2)
    ]
    merged = merge_results(runs)
    together = evaluate_model(model, dataset="regdb", root=fake_regdb, trials=[1, 2], transform=transform)
    for name in ("visible_to_thermal", "thermal_to_visible"):
        assert merged["results"][name] == together["results"][name]
    assert len(merged["config"]["runs"]) == 2
    with pytest.raises(ValueError):
        merge_results([])


def test_bad_arguments_raise(fake_sysu, dummy_model, transform) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate_model(dummy_model, dataset="market", root=fake_sysu)
    with pytest.raises(ValueError, match="mode"):
        evaluate_model(dummy_model, dataset="sysu", root=fake_sysu, mode="outdoor")
    with pytest.raises(ValueError, match="trials"):
        evaluate_model(dummy_model, dataset="sysu", root=fake_sysu, trials=0)
    with pytest.raises(FileNotFoundError):
        evaluate_model(dummy_model, dataset="sysu", root=fake_sysu / "nope", transform=transform)


def test_cross_modality_on_camera_folder_records(fake_regdb, dummy_model, transform, tmp_path) -> None:
    query, gallery = regdb_test(fake_regdb, trial=1, direction="thermal_to_visible")
    query = [ImageRecord(r.path, r.modality, "ir_cam", r.pid) for r in query]
    gallery = [ImageRecord(r.path, r.modality, "vis_cam", r.pid) for r in gallery]
    out = tmp_path / "xmod"
    result = evaluate_cross_modality(dummy_model, query, gallery, transform=transform, out_dir=out)
    assert result.r1 == 1.0 and result.mAP == pytest.approx(1.0) and result.num_valid_queries == 18
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"]["infrared_to_visible"]["mean"]["mAP"] == pytest.approx(result.mAP)
    _check_png(out / "cmc.png")
    _check_png(out / "rank_list.png")
    # same camera name + same identity is removed: with every image in one camera nothing matches
    same_cam = [ImageRecord(r.path, r.modality, "vis_cam", r.pid) for r in query]
    with pytest.raises(ValueError, match="no query identity"):
        evaluate_cross_modality(dummy_model, same_cam, gallery, transform=transform)
    with pytest.raises(ValueError, match="mix modalities"):
        evaluate_cross_modality(dummy_model, query + gallery[:1], gallery, transform=transform)
    no_pid = [ImageRecord(r.path, r.modality, r.camera, None) for r in query]
    with pytest.raises(ValueError, match="no identity"):
        evaluate_cross_modality(dummy_model, no_pid, gallery, transform=transform)
