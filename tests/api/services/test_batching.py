"""BatchingEmbedder: merged concurrent calls, own rows per caller, bounds, errors, close, metrics, the app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from api_testkit import FakeEmbedder, image_bytes, noise_image, search, upload
from fastapi.testclient import TestClient
from PIL import Image

from vireid.api import Settings
from vireid.api.services import open_context
from vireid.api.services._batching import BatcherClosedError, BatchingEmbedder, batching_embedder
from vireid.serving.runtime import BatchedEmbedder, InputSpec, Manifest

BAD = (7, 7)  # size of the image SlowEmbedder refuses


class SlowEmbedder(FakeEmbedder):
    """FakeEmbedder that takes ``delay`` seconds per call, is not thread-safe on purpose (it checks),
    and raises for any image of size ``BAD``."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = delay
        self._busy = False

    def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
        assert not self._busy, "the batcher called the embedder concurrently"
        self._busy = True
        try:
            time.sleep(self.delay)
            if any(isinstance(im, Image.Image) and im.size == BAD for im in images):
                raise ValueError("bad image")
            return super().embed(images, modality)
        finally:
            self._busy = False


class Sleepy(FakeEmbedder):
    """Thread-safe FakeEmbedder that takes ``delay`` seconds per call."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
        time.sleep(self.delay)
        return super().embed(images, modality)


class Recorder:
    """BatchMetrics observer that keeps what it was told."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, str]] = []
        self.waits: list[float] = []

    def observe_batch(self, images: int, *, modality: str) -> None:
        self.batches.append((images, modality))

    def observe_queue(self, seconds: float, *, modality: str) -> None:
        self.waits.append(seconds)


class LinearBatched(BatchedEmbedder):
    """A BatchedEmbedder (preprocessing + flip + norm of the real backends) over a fixed linear map,
    recording the batch sizes its network sees and the threads it runs in."""

    def __init__(self) -> None:
        spec = InputSpec(
            height=16, width=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear"
        )
        manifest = Manifest(
            method="salcr",
            variant="tiny",
            embedding_dim=6,
            input=spec,
            flip_average=True,
            normalize_output=True,
            graphs={"visible": "visible.onnx", "infrared": "infrared.onnx"},
            input_name="images",
            output_name="embeddings",
            model_version="0123456789abcdef",
            source_checkpoint=None,
            pretrained=None,
            randomly_initialised=True,
            created_at="2025-01-01T00:00:00+00:00",
            vireid_version="0.1.0",
            opset=18,
        )
        super().__init__(manifest, batch_size=64)
        self.weights = np.random.default_rng(0).standard_normal((3 * 16 * 8, 6)).astype(np.float32)
        self.forwards: list[int] = []

    def _forward(self, batch: np.ndarray, modality: str) -> np.ndarray:
        time.sleep(0.01)
        self.forwards.append(batch.shape[0])
        out: np.ndarray = batch.reshape(batch.shape[0], -1) @ self.weights
        return out


def _images(seed: int, n: int) -> list[Image.Image]:
    return [noise_image(seed * 100 + i) for i in range(n)]


def _concurrently(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls in as many threads, released together; results (or raised exceptions) in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_calls_share_batches_and_each_caller_gets_its_own_rows() -> None:
    inner, metrics = SlowEmbedder(), Recorder()
    batcher = BatchingEmbedder(inner, max_batch_size=64, max_queue_delay_s=0.05, metrics=metrics)
    requests = [_images(seed, 1 + seed % 3) for seed in range(16)]
    modalities = ["infrared" if seed % 4 == 0 else "visible" for seed in range(16)]
    results = _concurrently(
        [lambda r=r, m=m: batcher.embed(r, m) for r, m in zip(requests, modalities, strict=True)]
    )
    batcher.close()
    reference = FakeEmbedder()
    for images, modality, rows in zip(requests, modalities, results, strict=True):
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows, reference.embed(images, modality))
    sizes = [n for n, _ in inner.calls]
    assert sum(sizes) == sum(len(r) for r in requests)
    assert len(inner.calls) < len(requests)
    assert np.mean(sizes) > 1
    assert metrics.batches == inner.calls  # one observation per call, with its modality
    assert len(metrics.waits) == len(requests)
    # a batch holds one modality
    assert {m for _, m in inner.calls} == {"visible", "infrared"}


def test_a_batched_embedder_gets_preprocessed_batches_with_the_same_rows() -> None:
    inner = LinearBatched()
    batcher = BatchingEmbedder(inner, max_batch_size=64, max_queue_delay_s=0.05)
    requests = [_images(seed, 1 + seed % 2) for seed in range(8)]
    results = _concurrently([lambda r=r: batcher.embed(r, "visible") for r in requests])
    batcher.close()
    assert len(inner.forwards) < len(requests)  # merged (each forward holds both flip views)
    for images, rows in zip(requests, results, strict=True):
        assert isinstance(rows, np.ndarray)
        np.testing.assert_allclose(rows, inner.embed(images, "visible"), rtol=1e-5, atol=1e-6)
    # a crop that cannot be preprocessed fails in its caller, before it is queued
    with pytest.raises(TypeError):
        BatchingEmbedder(inner, max_batch_size=4, max_queue_delay_s=0.01).embed(["not an image"], "visible")  # type: ignore[list-item]


def test_max_batch_size_bounds_each_call_and_a_larger_request_goes_alone() -> None:
    inner = SlowEmbedder()
    batcher = BatchingEmbedder(inner, max_batch_size=4, max_queue_delay_s=0.05)
    calls: list[Callable[[], object]] = [
        lambda s=s: batcher.embed(_images(s, 1), "visible") for s in range(12)
    ]
    calls.append(lambda: batcher.embed(_images(99, 6), "visible"))
    results = _concurrently(calls)
    batcher.close()
    assert all(isinstance(r, np.ndarray) for r in results)
    sizes = [n for n, _ in inner.calls]
    assert sorted(sizes)[-1] == 6  # the 6-image request, alone
    assert all(n <= 4 for n in sizes if n != 6)
    assert sizes.count(6) == 1
    assert sum(sizes) == 18


def test_a_lone_request_waits_at_most_the_delay() -> None:
    inner, metrics = SlowEmbedder(delay=0.0), Recorder()
    batcher = BatchingEmbedder(inner, max_batch_size=32, max_queue_delay_s=0.05, metrics=metrics)
    start = time.monotonic()
    rows = batcher.embed(_images(1, 1), "infrared")
    elapsed = time.monotonic() - start
    batcher.close()
    assert rows.shape == (1, inner.manifest.embedding_dim)
    assert metrics.waits[0] == pytest.approx(0.05, abs=0.04)
    assert elapsed < 1.0


def test_a_full_batch_starts_without_waiting_for_the_delay() -> None:
    inner = SlowEmbedder(delay=0.0)
    batcher = BatchingEmbedder(inner, max_batch_size=2, max_queue_delay_s=30.0)
    start = time.monotonic()
    results = _concurrently([lambda s=s: batcher.embed(_images(s, 1), "visible") for s in range(2)])
    batcher.close()
    assert time.monotonic() - start < 10.0
    assert all(isinstance(r, np.ndarray) for r in results)
    assert [n for n, _ in inner.calls] == [2]


def test_a_bad_image_fails_only_its_own_request() -> None:
    inner = SlowEmbedder()
    batcher = BatchingEmbedder(inner, max_batch_size=64, max_queue_delay_s=0.1)
    bad = [*_images(0, 1), Image.new("RGB", BAD)]
    calls: list[Callable[[], object]] = [
        lambda s=s: batcher.embed(_images(s, 2), "visible") for s in range(1, 6)
    ]
    calls.append(lambda: batcher.embed(bad, "visible"))
    results = _concurrently(calls)
    batcher.close()
    assert isinstance(results[-1], ValueError)
    assert str(results[-1]) == "bad image"
    reference = FakeEmbedder()
    for seed, rows in zip(range(1, 6), results[:-1], strict=True):
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows, reference.embed(_images(seed, 2), "visible"))


def test_a_lone_failing_request_gets_the_embedder_error() -> None:
    inner = FakeEmbedder()
    inner.fail_after = 0
    batcher = BatchingEmbedder(inner, max_batch_size=8, max_queue_delay_s=0.001)
    with pytest.raises(RuntimeError, match="fake embedder failure"):
        batcher.embed(_images(1, 1), "visible")
    inner.fail_after = None
    assert batcher.embed(_images(1, 1), "visible").shape == (1, inner.manifest.embedding_dim)
    batcher.close()


def test_close_fails_waiting_callers_and_lets_the_running_batch_finish() -> None:
    release, entered = threading.Event(), threading.Event()

    class Blocking(FakeEmbedder):
        def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
            entered.set()
            release.wait(10)
            return super().embed(images, modality)

    batcher = BatchingEmbedder(Blocking(), max_batch_size=1, max_queue_delay_s=0.001)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.embed, _images(1, 1), "visible")
        assert entered.wait(10)
        waiting = pool.submit(batcher.embed, _images(2, 1), "visible")
        time.sleep(0.05)  # queued behind the running batch
        closing = pool.submit(batcher.close)
        with pytest.raises(BatcherClosedError):
            waiting.result(timeout=10)
        assert not closing.done()  # close waits for the running batch
        release.set()
        assert running.result(timeout=10).shape == (1, 48)
        closing.result(timeout=10)
    with pytest.raises(BatcherClosedError):
        batcher.embed(_images(3, 1), "visible")
    batcher.close()  # idempotent


def test_a_dispatcher_that_dies_fails_its_batch_and_refuses_later_calls() -> None:
    class Fatal(BaseException):
        pass

    class Dying(FakeEmbedder):
        def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
            raise Fatal("worker killed")

    batcher = BatchingEmbedder(Dying(), max_batch_size=4, max_queue_delay_s=0.001)
    with pytest.raises(Fatal):
        batcher.embed(_images(1, 1), "visible")
    with pytest.raises(BatcherClosedError):
        batcher.embed(_images(2, 1), "visible")
    batcher.close()


def test_an_idle_dispatcher_ends_and_the_next_call_starts_another(monkeypatch: pytest.MonkeyPatch) -> None:
    from vireid.api.services import _batching

    monkeypatch.setattr(_batching, "IDLE_EXIT_S", 0.05)
    batcher = BatchingEmbedder(FakeEmbedder(), max_batch_size=4, max_queue_delay_s=0.001)
    batcher.embed(_images(1, 1), "visible")
    first = batcher._worker
    assert first is not None
    first.join(5)
    assert not first.is_alive() and batcher._worker is None
    assert batcher.embed(_images(2, 1), "visible").shape == (1, 48)
    assert batcher._worker is not None and batcher._worker is not first
    batcher.close()


def test_zero_delay_passes_calls_through_in_the_callers_thread() -> None:
    metrics = Recorder()
    inner = FakeEmbedder()
    batcher = BatchingEmbedder(inner, max_batch_size=4, max_queue_delay_s=0.0, metrics=metrics)
    assert not batcher.enabled
    rows = batcher.embed(_images(1, 6), "visible")
    assert rows.shape == (6, 48)
    assert inner.calls == [(6, "visible")]
    assert metrics.batches == [(6, "visible")]
    assert metrics.waits == []
    assert batcher.embed([], "visible").shape == (0, 48)
    assert batcher._worker is None  # no thread was started


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingEmbedder(FakeEmbedder(), max_batch_size=0, max_queue_delay_s=0.01)
    with pytest.raises(ValueError, match="max_queue_delay_s"):
        BatchingEmbedder(FakeEmbedder(), max_batch_size=1, max_queue_delay_s=-1)


def test_open_context_wraps_the_embedder_and_close_stops_the_batcher(tmp_path: Path) -> None:
    context = open_context(Settings(data_dir=tmp_path / "data", embed_batching=True), embedder=FakeEmbedder())
    assert isinstance(context.embedder, BatchingEmbedder)
    assert context.embedder.enabled
    assert context.model_version == "fake0001"
    assert context.embedder.embed(_images(1, 1), "visible").shape == (1, 48)
    context.close()
    with pytest.raises(BatcherClosedError):
        context.embedder.embed(_images(1, 1), "visible")
    off = open_context(Settings(data_dir=tmp_path / "data", embed_batching=False), embedder=FakeEmbedder())
    assert isinstance(off.embedder, BatchingEmbedder)
    assert not off.embedder.enabled
    off.close()


def test_a_model_switch_wraps_the_new_embedder_and_leaves_the_old_one_working(tmp_path: Path) -> None:
    from api_testkit import FakeManifest

    context = open_context(Settings(data_dir=tmp_path / "data", embed_batching=True), embedder=FakeEmbedder())
    old = context.embedder
    second = FakeEmbedder(FakeManifest(model_version="fake0002"))
    context.register(second)
    context.activate(second)
    assert isinstance(context.embedder, BatchingEmbedder) and context.embedder is not old
    assert context.model_version == "fake0002"
    assert old.embed(_images(1, 1), "visible").shape == (1, 48)  # a request still holding it finishes
    context.close()


@pytest.mark.parametrize(
    ("batching", "device", "delay_ms", "enabled"),
    [
        ("auto", "cuda", 5.0, True),
        ("auto", "cpu", 5.0, False),
        ("auto", None, 5.0, False),
        ("true", "cpu", 5.0, True),
        ("false", "cuda", 5.0, False),
        ("true", "cuda", 0.0, False),
    ],
)
def test_settings_turn_batching_on_and_off(
    monkeypatch: pytest.MonkeyPatch, batching: str, device: str | None, delay_ms: float, enabled: bool
) -> None:
    monkeypatch.setenv("VIREID_EMBED_BATCHING", batching)
    monkeypatch.setenv("VIREID_EMBED_MAX_QUEUE_DELAY_MS", str(delay_ms))
    monkeypatch.setenv("VIREID_EMBED_MAX_BATCH_SIZE", "7")
    inner = FakeEmbedder()
    if device is not None:
        inner.device = device  # type: ignore[attr-defined]
    wrapped = batching_embedder(inner, Settings())
    assert wrapped.enabled is enabled
    assert wrapped.max_batch_size == 7
    wrapped.close()


def _search_all(client: TestClient, queries: list[bytes]) -> list[dict]:
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda q: search(client, q, modality="infrared", k=5), queries))
    for body in bodies:
        body.pop("took_ms")
    return bodies


def test_search_results_are_the_same_with_batching_on_and_off(
    make_client: Callable[..., TestClient], settings: Settings, tmp_path: Path
) -> None:
    gallery = [image_bytes(seed) for seed in range(12)]
    queries = [image_bytes(seed) for seed in range(6, 18)]
    results = {}
    for batching in (True, False):
        fake = Sleepy(delay=0.01)
        config = Settings(data_dir=tmp_path / f"data-{batching}", return_source=True, embed_batching=batching)
        client = make_client(config, fake=fake)
        upload(client, gallery)
        results[batching] = _search_all(client, queries)
        metrics = client.get("/metrics").text
        assert "vireid_embed_batch_size_bucket" in metrics
        assert 'vireid_embed_batch_size_count{modality="infrared"}' in metrics
        if batching:
            assert 'vireid_embed_queue_seconds_count{modality="infrared"} 12.0' in metrics
    assert results[True] == results[False]
