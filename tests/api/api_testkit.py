"""Helpers shared by the API tests: fake embedder (house-style §37), generated images, request helpers.

The fake embedder maps the pixels of an image to a deterministic L2-normalised vector, so search
results depend only on image content, never on model quality.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

THUMB = (4, 4)  # (W, H) of the thumbnail the fake embedding is made from
DIM = THUMB[0] * THUMB[1] * 3


@dataclass(frozen=True)
class FakeManifest:
    """The manifest fields the API reads."""

    method: str = "fake"
    model_version: str = "fake0001"
    embedding_dim: int = DIM
    variant: str = "fake"


class FakeEmbedder:
    """Embedder protocol: RGB → 4×4 bilinear thumbnail → centred pixels → L2 norm, ``(N, 48)`` float32.

    The modality is recorded but does not change the vector, so a crop searched in the other modality
    finds itself with score 1.
    """

    def __init__(self, manifest: FakeManifest | None = None) -> None:
        self.manifest = manifest or FakeManifest()
        self.calls: list[tuple[int, str]] = []
        self.fail_after: int | None = None

    def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("fake embedder failure")
        self.calls.append((len(images), modality))
        rows = []
        for image in images:
            pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
            thumb = np.asarray(pil.convert("RGB").resize(THUMB, Image.Resampling.BILINEAR), dtype=np.float32)
            vec = thumb.reshape(-1) / 255.0 - 0.5
            rows.append(vec / max(float(np.linalg.norm(vec)), 1e-6))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, DIM), np.float32)


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    """Encode a Pillow image."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (16, 32)) -> Image.Image:
    """A random RGB image of ``size`` (W, H), blocky so that the fake embedding differs per seed."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(THUMB[1], THUMB[0], 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (16, 32)) -> bytes:
    """Encoded random image for ``seed``."""
    return encode(noise_image(seed, size), fmt)


def upload(
    client: TestClient,
    images: Sequence[bytes],
    *,
    camera: str = "cam1",
    modality: str = "visible",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> list[int]:
    """POST /gallery and return the ids (asserts 201)."""
    files = [("images", (f"img{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    response = client.post(
        "/gallery", files=files, data={"camera": camera, "modality": modality, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    ids: list[int] = response.json()["ids"]
    return ids


def search(client: TestClient, data: bytes, **fields: str | int) -> dict:
    """POST /search and return the JSON body (asserts 200)."""
    response = client.post(
        "/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={k: str(v) for k, v in fields.items()}
    )
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def make_sysu(root: Path) -> None:
    """A tiny SYSU-MM01 tree: ids 1-2 train, 3 val, 4-5 test; every camera has ids 1..5."""
    for cam in range(1, 7):
        for pid in range(1, 6):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True)
            (folder / "0001.jpg").write_bytes(image_bytes(cam * 100 + pid))
    (root / "exp").mkdir()
    (root / "exp" / "train_id.txt").write_text("1,2")
    (root / "exp" / "val_id.txt").write_text("3\n")
    (root / "exp" / "test_id.txt").write_text("4,5,")
