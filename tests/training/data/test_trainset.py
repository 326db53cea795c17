from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vireid.training.data import (
    AugmentConfig,
    CameraAwarePKSampler,
    PairedSampler,
    TrainSet,
    build_recipe,
    camera_folders,
    collate_views,
    generate_synthetic,
    stage_one_indices,
)

CFG = AugmentConfig(height=32, width=16)


@pytest.fixture(scope="module")
def synthetic(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[Path], list[Path], np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("trainset") / "synth"
    generate_synthetic(
        root, num_identities=4, visible_cameras=1, infrared_cameras=1, images_per_camera=3, size=(48, 24)
    )
    records = camera_folders(root)
    visible = [r for r in records if r.modality == "visible"]
    infrared = [r for r in records if r.modality == "infrared"]
    return (
        [r.path for r in visible],
        [r.path for r in infrared],
        np.array([r.pid for r in visible]),
        np.array([r.pid for r in infrared]),
    )


def test_paired_batches_have_var_layout(synthetic: tuple) -> None:
    visible, infrared, vis_labels, ir_labels = synthetic
    dataset = TrainSet(
        transforms=build_recipe("salcr_stage1", CFG).build(),
        visible=visible,
        infrared=infrared,
        visible_labels=vis_labels,
        infrared_labels=ir_labels,
        seed=0,
    )
    rgb, ir = stage_one_indices(
        vis_labels,
        ir_labels,
        num_iterations=1,
        rng=np.random.default_rng(0),
        clusters_per_batch=2,
        num_instances=3,
    )
    loader = DataLoader(dataset, batch_size=6, sampler=PairedSampler(rgb, ir), collate_fn=collate_views)
    batch = next(iter(loader))
    assert batch["images"].shape == (18, 3, 32, 16) and batch["images"].dtype == torch.float32
    assert torch.equal(batch["images"][:6], batch["rgb"]) and torch.equal(batch["images"][12:], batch["ir"])
    assert batch["labels"].tolist() == [*vis_labels[rgb[:6]], *vis_labels[rgb[:6]], *ir_labels[ir[:6]]]
    assert batch["modality"].tolist() == [0] * 12 + [1] * 6
    assert batch["rgb_index"].tolist() == rgb[:6].tolist()
    assert not torch.equal(batch["rgb"], batch["rgb_aug"])


def test_augmentations_reproducible_from_seed_and_epoch(synthetic: tuple) -> None:
    visible = synthetic[0]

    def draw(seed: int, epoch: int) -> torch.Tensor:
        dataset = TrainSet(
            transforms=build_recipe("sdcl", CFG).build(), visible=visible, views=("rgb",), seed=seed
        )
        dataset.set_epoch(epoch)
        return torch.stack([dataset[i]["rgb"] for i in range(4)])

    assert torch.equal(draw(1, 0), draw(1, 0))
    assert not torch.equal(draw(1, 0), draw(2, 0))
    assert not torch.equal(draw(1, 0), draw(1, 1))


def test_single_modality_with_pk_sampler(synthetic: tuple) -> None:
    _, infrared, _, ir_labels = synthetic
    dataset = TrainSet(
        transforms=build_recipe("baseline", CFG).build(),
        infrared=infrared,
        infrared_labels=ir_labels,
        views=("ir",),
    )
    sampler = CameraAwarePKSampler(ir_labels, ["ir1"] * len(ir_labels), num_instances=3, seed=0)
    batch = next(iter(DataLoader(dataset, batch_size=6, sampler=sampler, collate_fn=collate_views)))
    assert set(batch) == {"ir", "ir_index", "ir_label"} and batch["ir"].shape == (6, 3, 32, 16)
    labels = batch["ir_label"].view(2, 3)
    assert (labels == labels[:, :1]).all()


def test_errors(synthetic: tuple) -> None:
    visible, infrared, _, _ = synthetic
    views = build_recipe("sdcl", CFG).build()
    with pytest.raises(ValueError, match="matching modality"):
        TrainSet(transforms=views, visible=visible)  # "ir" view requested without infrared images
    with pytest.raises(ValueError, match="one label per image"):
        TrainSet(transforms=views, visible=visible, infrared=infrared, visible_labels=[1, 2])
    paired = TrainSet(transforms=views, visible=visible, infrared=infrared)
    with pytest.raises(TypeError, match="rgb_index, ir_index"):
        paired[0]
    assert set(paired[(0, -1)]) == {"rgb", "rgb_aug", "rgb_index", "rgb_label"}
    with pytest.raises(ValueError, match="same keys"):
        collate_views([paired[(0, -1)], paired[(0, 1)]])
