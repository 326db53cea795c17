"""Supervised method (ground-truth identities, one memory for both modalities) and ``model.init_from``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vireid.training.engine import build_trainer, load_config, prepare_data, train
from vireid.training.methods import DistInfo, SupervisedMethod
from vireid.training.methods._supervised import identity_labels

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"
SMALL = [
    "data.synthetic.num_identities=8",
    "data.synthetic.images_per_camera=2",
    "method_options.clusters_per_batch=2",
    "method_options.num_instances=2",
    "method_options.recipe=tiny",
    "stages.0.epochs=1",
    "stages.0.iters=2",
    "eval.every=0",
    "logging.progress=false",
    "logging.tensorboard=false",
    "collapse.enabled=false",
]


def _records(pids_v: list[int | None], pids_r: list[int | None]) -> dict[str, list[SimpleNamespace]]:
    return {
        "visible": [SimpleNamespace(path=f"v{i}.jpg", pid=p) for i, p in enumerate(pids_v)],
        "infrared": [SimpleNamespace(path=f"r{i}.jpg", pid=p) for i, p in enumerate(pids_r)],
    }


def test_identity_labels_share_one_label_space_ordered_by_pid() -> None:
    labels = identity_labels(_records([7, 3, 7], [3, 12]))  # type: ignore[arg-type]
    np.testing.assert_array_equal(labels["visible"], [1, 0, 1])
    np.testing.assert_array_equal(labels["infrared"], [0, 2])
    assert labels["visible"].dtype == np.int64


def test_identity_labels_refuse_unlabelled_records() -> None:
    with pytest.raises(ValueError, match=r"needs identities.*1 infrared"):
        identity_labels(_records([1], [None]))  # type: ignore[arg-type]


def test_prepare_data_strips_identities_unless_asked(tmp_path) -> None:
    cfg = load_config(CONFIG, SMALL)
    hidden = prepare_data(cfg.data, run_dir=tmp_path, dist_info=DistInfo())
    kept = prepare_data(cfg.data, run_dir=tmp_path, dist_info=DistInfo(), keep_identities=True)
    for modality in ("visible", "infrared"):
        assert all(r.pid is None for r in hidden.records[modality])
        assert all(r.pid is not None for r in kept.records[modality])
        assert [r.path for r in hidden.records[modality]] == [r.path for r in kept.records[modality]]


def test_supervised_trains_one_memory_on_ground_truth_and_resumes_it(tmp_path) -> None:
    cfg = load_config(CONFIG, [*SMALL, "method=supervised"])
    trainer = build_trainer(cfg, run_dir=tmp_path)
    trainer.fit()
    method = trainer.method
    assert isinstance(method, SupervisedMethod)
    assert method.memories["visible"] is method.memories["infrared"]
    truth = identity_labels(trainer.records)
    assert method.labels is not None
    for modality in ("visible", "infrared"):
        np.testing.assert_array_equal(method.labels.labels[modality], truth[modality])
    assert method.memories["visible"].features.shape[0] == 6  # 8 identities, 25 % held out

    restored = SupervisedMethod(cfg, method.model)
    restored.load_state_dict(method.state_dict())
    assert restored.memories["visible"] is restored.memories["infrared"]
    torch.testing.assert_close(restored.memories["visible"].features, method.memories["visible"].features)


def test_supervised_refuses_unlabelled_camera_folders(tmp_path) -> None:
    from vireid.training.data import generate_synthetic

    root = tmp_path / "site"
    generate_synthetic(root, num_identities=4, images_per_camera=2, seed=0)
    (root / "identities.csv").unlink()  # camera folders without identities: unlabeled data
    cfg = load_config(
        CONFIG, [*SMALL, "method=supervised", "data.dataset=camera_folders", f"data.root={root}"]
    )
    with pytest.raises(ValueError, match="needs identities"):
        build_trainer(cfg, run_dir=tmp_path / "run").fit()


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    run_dir = tmp_path_factory.mktemp("source")
    train(load_config(CONFIG, SMALL), run_dir=run_dir)
    return run_dir / "checkpoints" / "last.pt"


def test_init_from_starts_from_the_checkpoint_weights(source_checkpoint, tmp_path) -> None:
    cfg = load_config(CONFIG, [*SMALL, f"model.init_from={source_checkpoint}"])
    trainer = build_trainer(cfg, run_dir=tmp_path)
    saved = torch.load(source_checkpoint, weights_only=True)["model"]
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    assert trainer.state.epoch == 0  # weights only: a fresh run


def test_init_from_refuses_another_variant_and_conflicting_options(source_checkpoint, tmp_path) -> None:
    with pytest.raises(ValueError, match="holds a salcr/tiny model; this run builds sdcl/tiny"):
        build_trainer(
            load_config(CONFIG, [*SMALL, "model.arch=sdcl", f"model.init_from={source_checkpoint}"]),
            run_dir=tmp_path / "a",
        )
    with pytest.raises(ValueError, match="share_stem_init"):
        build_trainer(
            load_config(
                CONFIG,
                [*SMALL, "method_options.share_stem_init=true", f"model.init_from={source_checkpoint}"],
            ),
            run_dir=tmp_path / "b",
        )
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_config(CONFIG, [*SMALL, "model.pretrained=x.pth", f"model.init_from={source_checkpoint}"])
