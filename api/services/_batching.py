"""Dynamic batching of embed calls: concurrent requests of one modality share one embedder call.

:class:`BatchingEmbedder` wraps any :class:`~vireid.serving.runtime.Embedder` and implements the same
protocol, so the services do not know it is there. Each ``embed`` call becomes a request in one queue;
one dispatcher thread takes the oldest request, adds the later requests of the same modality that fit
in ``max_batch_size`` images (in arrival order, stopping at the first one that does not fit), and calls
the wrapped embedder once for all of them. It waits for companions at most ``max_queue_delay_s``
counted from the oldest request's arrival, and not at all once the batch is full, so under light load
a lone request pays at most that delay. While the wrapped embedder is busy, new requests queue up and
form the next batch, so under load batches grow without any extra wait (Triton's dynamic batcher works
the same way: ``max_batch_size``, ``max_queue_delay_microseconds``).

A request with more images than ``max_batch_size`` is never split: it is embedded alone, in one call
(the wrapped embedder chunks it by its own batch size). The rows each caller gets back are exactly the
rows of its own images, in order, as if it had called the wrapped embedder alone.

Errors: when a shared call fails, each of its requests is retried alone, so one request's bad image
fails only that request (the others still get their rows); a lone request gets the error as raised by
the wrapped embedder. The retries cost extra calls only after a failure.

With ``max_queue_delay_s=0`` there is no queue and no thread: ``embed`` calls the wrapped embedder
directly in the caller's thread (batching off), and only the batch-size metric is observed.

The wrapped embedder is only ever called from the dispatcher thread while batching is on, so it need
not be thread-safe then. When it is a :class:`~vireid.serving.runtime.BatchedEmbedder` (the ONNX Runtime
and TensorRT backends), each caller preprocesses its own images in its own thread (resize, normalise:
per image, so the result is the same) and the dispatcher runs only the network on the joined batch; a
crop that cannot be preprocessed then fails its own request before it is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vireid.api.errors import NotReadyError

if TYPE_CHECKING:
    from vireid.api.settings import Settings
    from vireid.serving.runtime import Embedder, ImageInput, Manifest

__all__ = ["BatchMetrics", "BatcherClosedError", "BatchingEmbedder", "batching_embedder"]

logger = logging.getLogger(__name__)

#: Seconds the dispatcher thread waits with an empty queue before it ends (the next call starts a new
#: one), so that an embedder replaced by a model switch and no longer used is freed with its thread.
IDLE_EXIT_S = 30.0


class BatchMetrics(Protocol):
    """Receives what the batcher measures (``vireid.api.metrics`` turns it into Prometheus histograms)."""

    def observe_batch(self, images: int, *, modality: str) -> None:
        """One call of the wrapped embedder with ``images`` images."""
        ...

    def observe_queue(self, seconds: float, *, modality: str) -> None:
        """One request waited ``seconds`` in the queue before its batch started."""
        ...


class BatcherClosedError(NotReadyError):
    """The batcher was closed (service shutting down): the request was not embedded (HTTP 503)."""


@dataclass(eq=False)
class _Request:
    images: Sequence[ImageInput] | np.ndarray  # (N, 3, H, W) float32 when preprocessed by the caller
    modality: str
    arrived: float
    future: Future[np.ndarray] = field(default_factory=Future)


class _Preprocessing(Protocol):
    """What a :class:`~vireid.serving.runtime.BatchedEmbedder` offers to split preprocessing off."""

    manifest: Manifest

    def embed_preprocessed(self, batch: np.ndarray, modality: str) -> np.ndarray: ...


class BatchingEmbedder:
    """An :class:`~vireid.serving.runtime.Embedder` that merges concurrent calls into shared batches.

    Attributes:
        manifest: the wrapped embedder's manifest.

    Args:
        inner: the embedder that does the work.
        max_batch_size: most images in one call of ``inner`` (a larger single request goes alone).
        max_queue_delay_s: most seconds the oldest waiting request waits for companions; 0 turns
            batching off (``embed`` calls ``inner`` directly).
        metrics: optional observer of batch sizes and queue times.

    Raises:
        ValueError: ``max_batch_size < 1`` or a negative delay.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        metrics: BatchMetrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_s must be >= 0, got {max_queue_delay_s}")
        self.inner = inner
        self.manifest: Manifest = inner.manifest
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._metrics = metrics
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None  # started by a queued call, ends when idle
        self._split: _Preprocessing | None = _splittable(inner)

    @property
    def enabled(self) -> bool:
        """Whether calls are queued and merged (False: passed straight through)."""
        return self.max_queue_delay_s > 0

    def embed(self, images: Sequence[ImageInput], modality: str) -> np.ndarray:
        """Embed ``images`` of one modality, possibly in one call with other callers' images.

        Returns:
            (N, D) float32, the wrapped embedder's rows for exactly these images, in order.

        Raises:
            BatcherClosedError: the batcher was closed before these images were embedded.
            Exception: whatever the wrapped embedder raised for these images.
        """
        if not self.enabled or len(images) == 0:
            if self._closed:
                raise BatcherClosedError("the embedder is shut down")
            out = self.inner.embed(images, modality)
            if len(images) and self._metrics is not None:
                self._metrics.observe_batch(len(images), modality=modality)
            return out
        payload: Sequence[ImageInput] | np.ndarray = images
        if self._split is not None:
            from vireid.serving.runtime import preprocess_batch

            payload = preprocess_batch(images, self._split.manifest.input)
        request = _Request(payload, modality, time.monotonic())
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the embedder is shut down")
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="vireid-embed-batcher", daemon=True)
                self._worker.start()
            self._queue.append(request)
            self._cond.notify()
        return request.future.result()

    def close(self) -> None:
        """Stop the dispatcher: the batch being embedded finishes, waiting callers get
        :class:`BatcherClosedError`, later calls raise it. Idempotent; ``inner`` is not closed."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            worker = self._worker
        for request in pending:
            request.future.set_exception(BatcherClosedError("the embedder shut down before this request ran"))
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def _run(self) -> None:
        batch: list[_Request] | None = None
        try:
            while (batch := self._next_batch()) is not None:
                self._dispatch(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.exception("embed batcher stopped")
            with self._cond:
                self._closed = True
                pending = [*(batch or []), *self._queue]
                self._queue.clear()
            for request in pending:
                if not request.future.done():
                    request.future.set_exception(exc)

    def _next_batch(self) -> list[_Request] | None:
        """Wait until the oldest request's batch is full or its delay is over; None once closed or
        after :data:`IDLE_EXIT_S` without a request."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._queue:
                    if not self._cond.wait(IDLE_EXIT_S) and not self._queue:
                        self._worker = None  # idle: end; the next call starts a new thread
                        return None
                    continue
                head = self._queue[0]
                batch, full = self._pick(head.modality)
                remaining = head.arrived + self.max_queue_delay_s - time.monotonic()
                if full or remaining <= 0:
                    for request in batch:
                        self._queue.remove(request)
                    return batch
                self._cond.wait(remaining)

    def _pick(self, modality: str) -> tuple[list[_Request], bool]:
        """The queued requests of ``modality`` that fit in one batch, oldest first, and whether the
        batch is full (no room left, or the next request of that modality does not fit)."""
        batch: list[_Request] = []
        size = 0
        for request in self._queue:
            if request.modality != modality:
                continue
            if batch and size + len(request.images) > self.max_batch_size:
                return batch, True
            batch.append(request)
            size += len(request.images)
        return batch, size >= self.max_batch_size

    def _dispatch(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        modality = batch[0].modality
        if self._metrics is not None:
            for request in batch:
                self._metrics.observe_queue(started - request.arrived, modality=modality)
        try:
            rows = self._call(batch, modality)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            logger.warning(
                "shared embed call of %d requests failed (%s); retrying each alone", len(batch), exc
            )
            for request in batch:
                self._dispatch_alone(request)
            return
        start = 0
        for request in batch:
            stop = start + len(request.images)
            request.future.set_result(rows[start:stop])
            start = stop

    def _dispatch_alone(self, request: _Request) -> None:
        try:
            request.future.set_result(self._call([request], request.modality))
        except Exception as exc:
            request.future.set_exception(exc)

    def _call(self, batch: list[_Request], modality: str) -> np.ndarray:
        count = sum(len(request.images) for request in batch)
        if self._metrics is not None:
            self._metrics.observe_batch(count, modality=modality)
        if self._split is not None:
            arrays = [np.asarray(request.images) for request in batch]
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            rows = np.asarray(self._split.embed_preprocessed(joined, modality))
        else:
            images: list[Any] = [image for request in batch for image in request.images]
            rows = np.asarray(self.inner.embed(images, modality))
        if rows.ndim != 2 or rows.shape[0] != count:
            raise RuntimeError(f"the embedder returned shape {rows.shape} for {count} images")
        return rows


def _splittable(inner: object) -> _Preprocessing | None:
    """``inner`` when its preprocessing can run apart from its network (a ``BatchedEmbedder``)."""
    from vireid.serving.runtime import BatchedEmbedder

    return inner if isinstance(inner, BatchedEmbedder) else None


def batching_embedder(
    embedder: Embedder, settings: Settings, *, metrics: BatchMetrics | None = None
) -> BatchingEmbedder:
    """``embedder`` behind the batcher that ``settings.embed_*`` configure.

    It is a pass-through when ``embed_batching`` is false, or ``"auto"`` and the embedder does not run on
    a GPU (its ``device`` attribute is not ``"cuda"``), or when ``embed_max_queue_delay_ms`` is 0.
    """
    mode = settings.embed_batching
    on = mode is True or (mode == "auto" and getattr(embedder, "device", "cpu") == "cuda")
    delay_s = settings.embed_max_queue_delay_ms / 1000.0 if on else 0.0
    return BatchingEmbedder(
        embedder, max_batch_size=settings.embed_max_batch_size, max_queue_delay_s=delay_s, metrics=metrics
    )
