"""GalleryService.ingest: batches, duplicates, failures, atomic batches, persistence across runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from api_testkit import FakeEmbedder, FakeManifest, image_bytes

from vireid.api import Settings
from vireid.api.errors import InvalidInputError, NotFoundError
from vireid.api.services import GalleryService, IngestRecord, SearchService, ServiceContext, open_context


def _records(
    seeds: range | list[int], *, camera: str = "cam1", modality: str = "visible"
) -> list[IngestRecord]:
    return [
        IngestRecord(source=f"{camera}/{s}.jpg", camera=camera, modality=modality, data=image_bytes(s))  # type: ignore[arg-type]
        for s in seeds
    ]


def _manifest_count(settings: Settings, modality: str = "visible", version: str = "fake0001") -> int:
    path = settings.data_dir / "indexes" / version / f"{modality}.json"
    return int(json.loads(path.read_text())["count"])


@pytest.fixture
def context(settings: Settings, embedder: FakeEmbedder) -> Iterator[ServiceContext]:
    ctx = open_context(settings, embedder=embedder)
    yield ctx
    ctx.close()


def test_batches_and_report(context: ServiceContext, embedder: FakeEmbedder) -> None:
    calls = []
    report = GalleryService(context).ingest(_records(range(5)), batch_size=2, progress=calls.append)
    assert report.added == 5 and report.duplicates == 0 and report.failed == []
    assert [n for n, _ in embedder.calls] == [2, 2, 1]
    assert calls == [2, 2, 1]
    assert [o.id for o in report.outcomes] == sorted(o.id for o in report.outcomes)
    assert len(context.index("visible")) == 5


def test_duplicates_are_skipped_with_existing_id(context: ServiceContext) -> None:
    service = GalleryService(context)
    first = service.ingest(_records(range(3)))
    again = service.ingest(_records([0, 1, 2, 7, 7]))
    assert again.added == 1 and again.duplicates == 4
    assert [o.id for o in again.outcomes[:3]] == [o.id for o in first.outcomes]
    assert again.outcomes[3].id == again.outcomes[4].id
    assert [o.status for o in again.outcomes] == ["duplicate"] * 3 + ["added", "duplicate"]
    # same bytes, other modality: a new item
    assert service.ingest(_records([0], modality="infrared")).added == 1


def test_unreadable_files_are_reported_and_skipped(context: ServiceContext, tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(image_bytes(1))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(image_bytes(2)[:150])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "gone.jpg"
    records = [
        IngestRecord(source=str(p), camera="c", modality="visible", path=p)
        for p in (good, bad, text, empty, missing)
    ]
    report = GalleryService(context).ingest(records)
    assert report.added == 1
    reasons = {Path(o.source).name: o.reason for o in report.failed}
    assert set(reasons) == {"bad.jpg", "notes.png", "empty.jpg", "gone.jpg"}
    assert "empty" in reasons["empty.jpg"] and "cannot read" in reasons["gone.jpg"]
    with pytest.raises(InvalidInputError, match=r"bad\.jpg"):
        GalleryService(context).ingest(records[1:2], strict=True)


def test_out_of_bounds_metadata_fails_only_its_record(context: ServiceContext) -> None:
    records = [
        *_records([1]),
        IngestRecord(source="nul.jpg", camera="a\x00b", modality="visible", data=image_bytes(2)),
        IngestRecord(source="t.jpg", camera="c", modality="visible", track_id="x\ny", data=image_bytes(3)),
        IngestRecord(
            source="old.jpg",
            camera="c",
            modality="visible",
            captured_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            data=image_bytes(4),
        ),
    ]
    report = GalleryService(context).ingest(records)
    assert report.added == 1
    reasons = {o.source: o.reason or "" for o in report.failed}
    assert "camera: control character U+0000" in reasons["nul.jpg"]
    assert "track_id: control character U+000A" in reasons["t.jpg"]
    assert "captured_at" in reasons["old.jpg"] and "accepted range" in reasons["old.jpg"]


def test_ids_outside_int64_are_not_found(context: ServiceContext) -> None:
    service = GalleryService(context)
    for item_id in (2**63, -(2**63) - 1):
        with pytest.raises(NotFoundError):
            service.get(item_id)
        with pytest.raises(NotFoundError):
            service.delete(item_id)


def test_failed_batch_is_rolled_back_and_index_file_kept(
    context: ServiceContext, embedder: FakeEmbedder, settings: Settings
) -> None:
    service = GalleryService(context)
    embedder.fail_after = 2  # the third embed call raises
    with pytest.raises(RuntimeError, match="fake embedder failure"):
        service.ingest(_records(range(6)), batch_size=2)
    assert service.stats().total == 4
    assert len(context.index("visible")) == 4
    assert _manifest_count(settings) == 4


def test_storage_failure_after_index_add_rolls_back_both(
    context: ServiceContext, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = GalleryService(context)
    service.ingest(_records(range(2)))
    index_file = settings.data_dir / "indexes" / "fake0001" / "visible.faiss"
    saved = index_file.read_bytes()

    def broken_commit(self: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("sqlalchemy.orm.Session.commit", broken_commit)
    with pytest.raises(RuntimeError, match="disk full"):
        service.ingest(_records(range(2, 5)))
    monkeypatch.undo()
    assert len(context.index("visible")) == 2
    assert index_file.read_bytes() == saved
    assert service.stats().total == 2


def test_camera_a_then_camera_b_in_separate_runs_keeps_both(settings: Settings) -> None:
    first = open_context(settings, embedder=FakeEmbedder())
    a = GalleryService(first).ingest(_records(range(3), camera="camA"))
    first.close()
    second = open_context(settings, embedder=FakeEmbedder())
    GalleryService(second).ingest(_records(range(3, 6), camera="camB"))
    stats = GalleryService(second).stats()
    assert stats.by_camera == [("camA", "visible", 3), ("camB", "visible", 3)]
    hits = SearchService(second).search(image_bytes(0), modality="infrared", k=6)
    assert hits.matches[0].id == a.outcomes[0].id and len(hits.matches) == 6
    second.close()


def test_other_process_ingest_is_picked_up_before_search(settings: Settings) -> None:
    server = open_context(settings, embedder=FakeEmbedder())
    assert SearchService(server).search(image_bytes(1), k=5).matches == []
    cli = open_context(settings, embedder=FakeEmbedder())
    added = GalleryService(cli).ingest(_records(range(3)))
    cli.close()
    matches = SearchService(server).search(image_bytes(1), k=5).matches
    assert sorted(m.id for m in matches) == sorted(o.id for o in added.outcomes)
    server.close()


def test_new_model_version_does_not_see_old_items(settings: Settings) -> None:
    old = open_context(settings, embedder=FakeEmbedder())
    GalleryService(old).ingest(_records(range(3)))
    old.close()
    new = open_context(settings, embedder=FakeEmbedder(FakeManifest(model_version="fake0002")))
    report = GalleryService(new).ingest(_records(range(2)))
    assert report.added == 2  # same bytes, new model: embedded again
    assert GalleryService(new).stats().total == 2
    new.close()


def test_get_and_delete(context: ServiceContext) -> None:
    service = GalleryService(context)
    [outcome] = service.ingest(_records([4], modality="infrared")).outcomes
    assert outcome.id is not None
    item = service.get(outcome.id)
    assert item.modality == "infrared" and item.source == "cam1/4.jpg"
    service.delete(outcome.id)
    with pytest.raises(NotFoundError):
        service.get(outcome.id)
    with pytest.raises(NotFoundError):
        service.delete(outcome.id)
    assert len(context.index("infrared")) == 0
    assert np.asarray(context.index("infrared").ids()).size == 0


def test_searches_keep_working_during_an_ingest(context: ServiceContext) -> None:
    import threading

    GalleryService(context).ingest(_records(range(4)))
    errors: list[BaseException] = []
    counts: list[int] = []
    stop = threading.Event()

    def searcher() -> None:
        service = SearchService(context)
        while not stop.is_set():
            try:
                counts.append(len(service.search(image_bytes(1), k=50).matches))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    report = GalleryService(context).ingest(_records(range(4, 40)), batch_size=3)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and report.added == 36
    assert counts and min(counts) >= 4 and max(counts) <= 40
    assert len(SearchService(context).search(image_bytes(1), k=50).matches) == 40


def test_ivf_gallery_is_trained_in_the_background_while_searches_go_on(
    settings: Settings, embedder: FakeEmbedder
) -> None:
    """VIREID_INDEX_FACTORY=IDMap2,IVF4,Flat: exact until 156 items, trained by a background build,
    searched with k results throughout (camera filter included), deletable, trained after a restart."""
    import threading

    settings = settings.model_copy(update={"index_factory": "IDMap2,IVF4,Flat", "index_nprobe": 1})
    context = open_context(settings, embedder=embedder)
    try:
        service = GalleryService(context)
        service.ingest(_records(range(100)), batch_size=50)
        assert context.index("visible").built_factory == "IDMap2,Flat"
        errors: list[BaseException] = []
        stop = threading.Event()

        def searcher() -> None:
            try:
                while not stop.is_set():
                    result = SearchService(context).search(image_bytes(3), k=10, cameras=["cam2"])
                    assert len(result.matches) in (0, 10)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        thread = threading.Thread(target=searcher)
        thread.start()
        service.ingest(_records(range(100, 200), camera="cam2"), batch_size=50)
        context.store.stop_builds(finish=True)
        stop.set()
        thread.join()
        assert errors == []
        index = context.index("visible")
        assert index.built_factory == "IDMap2,IVF4,Flat" and len(index) == 200
        # nprobe=1 would miss the cam2 items in other lists: the search widens until it has k.
        matches = SearchService(context).search(image_bytes(150), k=10, cameras=["cam2"]).matches
        assert len(matches) == 10 and {m.camera for m in matches} == {"cam2"}
        first = service.ingest(_records([150], camera="cam2")).outcomes[0].id
        assert first is not None
        service.delete(first)
        assert first not in [m.id for m in SearchService(context).search(image_bytes(150), k=10).matches]
    finally:
        context.close()
    reopened = open_context(settings, embedder=embedder)
    try:
        assert reopened.index("visible").built_factory == "IDMap2,IVF4,Flat"
        assert len(reopened.index("visible")) == 199
    finally:
        reopened.close()
