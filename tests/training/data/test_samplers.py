from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vireid.training.data import (
    CameraAwarePKSampler,
    IterLoader,
    PairedSampler,
    camera_aware_pk_indices,
    eligible_anchors,
    stage_one_indices,
    stage_two_indices,
)


def _pk_data() -> tuple[np.ndarray, np.ndarray]:
    # label 0: 3 cameras; label 1: a single camera; label 2: one image; label 3: two cams; -1 outliers
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, -1, -1])
    cameras = np.array(["a", "a", "b", "c", "c", "a", "a", "a", "b", "a", "b", "b", "a", "b"])
    return labels, cameras


def test_pk_composition_and_camera_awareness() -> None:
    labels, cameras = _pk_data()
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = camera_aware_pk_indices(labels, cameras, num_instances=4, rng=rng)
        groups, i = [], 0
        while i < len(out):
            size = 1 if labels[out[i]] == 2 else 4
            groups.append(out[i : i + size])
            i += size
        assert sorted(int(labels[g[0]]) for g in groups) == [0, 1, 2, 3]  # every label once, no outlier
        for group in groups:
            assert len({int(labels[j]) for j in group}) == 1
            anchor, rest = group[0], group[1:]
            if labels[anchor] in (0, 3):  # other cameras exist: all of the rest come from them
                assert all(cameras[j] != cameras[anchor] for j in rest)
            if labels[anchor] == 1:  # single camera: other images of the label, never the anchor
                assert anchor not in rest


def test_pk_without_replacement_when_enough() -> None:
    labels = np.zeros(40, dtype=int)
    cameras = np.array(["a"] * 20 + ["b"] * 20)
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = camera_aware_pk_indices(labels, cameras, num_instances=16, rng=rng)
        assert len(out) == 16 and len(set(out[1:])) == 15
        assert all(cameras[j] != cameras[out[0]] for j in out[1:])
    small = camera_aware_pk_indices(labels[:6], cameras[17:23], num_instances=16, rng=rng)
    assert len(small) == 16  # too few other-camera images: drawn with replacement


def test_pk_sampler_is_deterministic_and_fresh_per_pass() -> None:
    labels, cameras = _pk_data()
    a, b = (
        CameraAwarePKSampler(labels, cameras, num_instances=4, seed=3),
        CameraAwarePKSampler(labels, cameras, num_instances=4, seed=3),
    )
    first = list(a)
    assert first == list(b) and len(a) == 16
    assert any(list(a) != first for _ in range(5))


def test_iter_loader_restarts_forever() -> None:
    loader = DataLoader(list(range(5)), batch_size=2)
    it = IterLoader(loader, length=7)
    batches = [next(it).tolist() for _ in range(7)]
    assert batches[:3] == [[0, 1], [2, 3], [4]] and batches[3:6] == batches[:3] and len(it) == 7
    assert list(itertools.islice(it, 4)) is not None
    with pytest.raises(RuntimeError, match="no batch"):
        next(IterLoader([]))


def test_stage_one_layout() -> None:
    rng = np.random.default_rng(0)
    rgb_labels = np.repeat(np.arange(15), 20)
    rgb_labels[::7] = -1
    ir_labels = np.concatenate([np.repeat(np.arange(14), 5), [-1, -1]])
    rgb, ir = stage_one_indices(rgb_labels, ir_labels, num_iterations=3, rng=rng)
    assert rgb.shape == ir.shape == (3 * 144,)
    for b in range(3):
        rgb_batch = rgb_labels[rgb[b * 144 : (b + 1) * 144]].reshape(12, 12)
        ir_batch = ir_labels[ir[b * 144 : (b + 1) * 144]].reshape(12, 12)
        for block in (rgb_batch, ir_batch):
            assert (block == block[:, :1]).all() and (block >= 0).all()
            assert len(set(block[:, 0].tolist())) == 12  # 12 distinct clusters
        for row in rgb[b * 144 : (b + 1) * 144].reshape(12, 12):
            assert len(set(row.tolist())) == 12  # clusters of > 12 images: no repeats
    again = stage_one_indices(rgb_labels, ir_labels, num_iterations=3, rng=np.random.default_rng(0))
    assert np.array_equal(again[0], rgb) and np.array_equal(again[1], ir)


def _cross_setup() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    rgb_labels = rng.integers(-1, 10, 300)
    ir_labels = rng.integers(-1, 8, 200)
    rgb_cross = rng.integers(-1, 5, 300)  # RGB -> IR: only IR clusters 0..4 are reached
    ir_cross = rng.integers(-1, 7, 200)  # IR -> RGB: only RGB clusters 0..6 are reached
    return rgb_labels, ir_labels, rgb_cross, ir_cross


def test_eligible_anchors() -> None:
    rgb_labels, ir_labels, rgb_cross, ir_cross = _cross_setup()
    assert eligible_anchors(rgb_labels, ir_cross).tolist() == list(range(7))
    assert eligible_anchors(ir_labels, rgb_cross).tolist() == list(range(5))


def test_stage_two_rows_are_cross_modality_triples() -> None:
    rgb_labels, ir_labels, rgb_cross, ir_cross = _cross_setup()
    rgb, ir = stage_two_indices(
        rgb_labels,
        ir_labels,
        rgb_cross=rgb_cross,
        ir_cross=ir_cross,
        num_iterations=4,
        rng=np.random.default_rng(0),
    )
    assert rgb.shape == ir.shape == (4 * 144,)
    for k in range(rgb.size):
        i, j = rgb[k], ir[k]
        block = (k % 144) // 72  # first 72 rows: visible anchors, then infrared anchors
        if block == 0:
            assert rgb_labels[i] == ir_cross[j] >= 0
        else:
            assert ir_labels[j] == rgb_cross[i] >= 0
    per_batch = rgb_labels[rgb[:72]].reshape(6, 12)
    assert (per_batch == per_batch[:, :1]).all()


def test_stage_two_one_sided_and_impossible() -> None:
    rgb_labels, ir_labels, rgb_cross, _ = _cross_setup()
    no_ir_cross = np.full(200, -1)
    rgb, ir = stage_two_indices(
        rgb_labels,
        ir_labels,
        rgb_cross=rgb_cross,
        ir_cross=no_ir_cross,
        num_iterations=1,
        rng=np.random.default_rng(0),
    )
    assert np.array_equal(ir_labels[ir], rgb_cross[rgb])
    with pytest.raises(ValueError, match="cross-modality"):
        stage_two_indices(
            rgb_labels,
            ir_labels,
            rgb_cross=np.full(300, -1),
            ir_cross=no_ir_cross,
            num_iterations=1,
            rng=np.random.default_rng(0),
        )


def test_paired_sampler_feeds_pairs() -> None:
    sampler = PairedSampler([3, 4, 5], [0, 1, 2])
    assert list(sampler) == [(3, 0), (4, 1), (5, 2)] and len(sampler) == 3
    with pytest.raises(ValueError, match="shape"):
        PairedSampler([1], [1, 2])
    assert torch.is_tensor(torch.as_tensor(list(sampler)))
