"""extract_features: flip averaging, unit norms, order, modes; FeatureStore caching; distances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fakes import write_person

from vireid.training.evaluation import FeatureStore, extract_features, negative_dot_distance
from vireid.training.evaluation._features import RecordLike


class _Rec:
    def __init__(self, path: Path, pid: int = 0, camera: str = "cam1", modality: str = "visible") -> None:
        self.path, self.pid, self.camera, self.modality = path, pid, camera, modality


def _records(tmp_path: Path, n: int) -> list[RecordLike]:
    paths = [write_person(tmp_path / f"img{i}.png", pid=i % 3, noise_seed=i) for i in range(n)]
    return [_Rec(path, pid=i % 3) for i, path in enumerate(paths)]


def test_flip_average_matches_manual_and_rows_are_unit(tmp_path, dummy_model, transform) -> None:
    records = _records(tmp_path, 5)
    feats = extract_features(dummy_model, records, modality="infrared", transform=transform, batch_size=2)
    assert feats.shape == (5, 25) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-6)
    from PIL import Image

    x = torch.stack([transform(Image.open(r.path).convert("RGB")) for r in records])
    with torch.no_grad():
        manual = F.normalize(
            dummy_model.extract(x, "infrared") + dummy_model.extract(x.flip(3), "infrared"), dim=1
        )
        plain = F.normalize(dummy_model.extract(x, "infrared"), dim=1)
    np.testing.assert_allclose(feats, manual.numpy(), atol=1e-6)
    no_flip = extract_features(dummy_model, records, modality="infrared", transform=transform, flip=False)
    np.testing.assert_allclose(no_flip, plain.numpy(), atol=1e-6)
    assert not np.allclose(no_flip, feats, atol=1e-3)  # the flip really changes this model's embedding


def test_batch_size_invariance_and_training_mode_restored(tmp_path, dummy_model, transform) -> None:
    records = _records(tmp_path, 7)
    dummy_model.train()
    a = extract_features(dummy_model, records, modality="visible", transform=transform, batch_size=1)
    b = extract_features(dummy_model, records, modality="visible", transform=transform, batch_size=64)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert dummy_model.training


def test_bad_inputs_raise(tmp_path, dummy_model, transform) -> None:
    records = _records(tmp_path, 1)
    with pytest.raises(ValueError, match="modality"):
        extract_features(dummy_model, records, modality="thermal", transform=transform)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(dummy_model, records, modality="visible", transform=transform, batch_size=0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode"):
        extract_features(dummy_model, [_Rec(broken)], modality="visible", transform=transform)
    with pytest.raises(FileNotFoundError):
        missing = [_Rec(tmp_path / "missing.jpg")]
        extract_features(dummy_model, missing, modality="visible", transform=transform)
    assert extract_features(dummy_model, [], modality="visible", transform=transform).shape == (0, 0)


def test_feature_store_embeds_each_path_once_per_modality(tmp_path, dummy_model, transform) -> None:
    records = _records(tmp_path, 6)
    store = FeatureStore(dummy_model, transform=transform, batch_size=4)
    store.prefetch(records[:4], "visible")
    first = store.get(records[2:], "visible")  # 2 new rows
    again = store.get(list(reversed(records)), "visible")
    assert store.num_embedded == 6
    assert dummy_model.rows_seen == 2 * 6  # flip: two views per image, each image once
    np.testing.assert_allclose(again[::-1][2:], first)
    store.get(records[:1], "infrared")  # another modality is another embedding
    assert store.num_embedded == 7


def test_negative_dot_distance_ranks_like_euclidean() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    g = rng.standard_normal((9, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    dist = negative_dot_distance(q, g)
    euclid = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(euclid, 2 + 2 * dist, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(dist, axis=1), np.argsort(euclid, axis=1))
    with pytest.raises(ValueError):
        negative_dot_distance(q, g[:, :4])


def test_default_transform_comes_from_default_cfg(tmp_path, dummy_model, transform) -> None:
    """transform=None builds the Contract-2 transform from model.default_cfg (here: mean = std = 0.5)."""
    records = _records(tmp_path, 3)
    default = extract_features(dummy_model, records, modality="visible")
    explicit = extract_features(dummy_model, records, modality="visible", transform=transform)
    np.testing.assert_allclose(default, explicit, atol=1e-5)


@pytest.mark.gpu
def test_cuda_extraction_matches_cpu(tmp_path, transform) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from eval_fakes import DummyReID

    records = _records(tmp_path, 5)
    cpu = extract_features(DummyReID(), records, modality="visible", transform=transform, device="cpu")
    model = DummyReID().cuda()
    gpu = extract_features(model, records, modality="visible", transform=transform, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
