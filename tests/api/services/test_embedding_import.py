"""Bulk import of embeddings computed elsewhere (GalleryService.import_embeddings, issue #14 item 4)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from api_testkit import DIM, FakeEmbedder, FakeManifest, image_bytes

from vireid.api import Settings
from vireid.api.errors import InvalidInputError, NotFoundError
from vireid.api.services import (
    GalleryService,
    ModelService,
    SearchService,
    ServiceContext,
    open_context,
    read_embedding_import,
)
from vireid.api.services._embedding_import import derived_sha256

HEADER = "camera,modality,captured_at,track_id,source,sha256"


@pytest.fixture
def context(db_settings: Settings, embedder: FakeEmbedder) -> Iterator[ServiceContext]:
    ctx = open_context(db_settings, embedder=embedder, loader=_loader)
    yield ctx
    ctx.close()


def _loader(folder: Path) -> FakeEmbedder:
    data = json.loads((folder / "manifest.json").read_text())
    return FakeEmbedder(FakeManifest(model_version=data["model_version"]))


def _files(
    tmp_path: Path, vectors: np.ndarray, rows: list[str], *, header: str = HEADER, name: str = "emb"
) -> tuple[Path, Path]:
    npy, csv = tmp_path / f"{name}.npy", tmp_path / f"{name}.csv"
    np.save(npy, vectors)
    csv.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return npy, csv


def _gallery_vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32) * 3.0


def _state(ctx: ServiceContext) -> tuple[int, int, bytes]:
    """(SQL rows, visible index size, visible index file bytes) of the active version."""
    with ctx.session() as session:
        rows = sum(
            ctx.repository.count(session=session, model_version=ctx.model_version, modality=m)
            for m in ("visible", "infrared")
        )
    index_file = ctx.settings.data_dir / "indexes" / ctx.model_version / "visible.faiss"
    return rows, len(ctx.index("visible")), index_file.read_bytes() if index_file.exists() else b""


def test_import_is_searchable_with_the_right_ids_and_scores(context: ServiceContext, tmp_path: Path) -> None:
    vectors = _gallery_vectors(5)
    query = FakeEmbedder().embed([np.asarray(_image(7))], "visible")[0]
    vectors[3] = query * 0.5  # a vector computed elsewhere for the query's own image (not unit norm)
    rows = [
        "gate,visible,2024-06-01T08:00:00Z,t1,a.jpg,",
        "gate,visible,,t1,b.jpg,",
        "yard,infrared,2024-06-01T09:00:00+02:00,,c.jpg," + "ab" * 32,
        "yard,Visible,,,d.jpg,",
        "lobby,visible,,,,",
    ]
    data = read_embedding_import(*_files(tmp_path, vectors, rows), dim=DIM)
    assert data.renormalised == 5
    steps: list[int] = []
    report = GalleryService(context).import_embeddings(
        data, model_version="fake0001", batch_size=2, progress=steps.append
    )
    assert (report.added, report.duplicates, report.failed) == (5, 0, [])
    assert steps == [2, 2, 1]
    ids = [o.id for o in report.outcomes]
    assert [o.source for o in report.outcomes] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "row 4"]
    assert len(context.index("visible")) == 4 and len(context.index("infrared")) == 1
    # An image query whose embedding equals row 3 finds it first with cosine 1; the others follow with
    # the cosine of the normalised rows.
    hits = SearchService(context).search(image_bytes(7), modality="infrared", target_modality="visible", k=4)
    assert hits.matches[0].id == ids[3] and hits.matches[0].score == pytest.approx(1.0, abs=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = {ids[i]: float(unit[i] @ query) for i in (0, 1, 3, 4)}
    assert {m.id: m.score for m in hits.matches} == pytest.approx(expected, abs=1e-5)
    item = GalleryService(context).get(ids[2])
    assert (item.camera, item.modality, item.sha256, item.track_id) == ("yard", "infrared", "ab" * 32, None)
    assert item.captured_at.isoformat() == "2024-06-01T07:00:00+00:00"
    assert GalleryService(context).get(ids[0]).sha256 == derived_sha256("a.jpg", data.rows(0, 1)[0])
    # No crop is stored for imported items: the image is a clean 404.
    with pytest.raises(NotFoundError, match="no stored crop"):
        GalleryService(context).crop(ids[0])


def _image(seed: int):  # type: ignore[no-untyped-def]
    import io

    from PIL import Image

    return Image.open(io.BytesIO(image_bytes(seed)))


def test_reimport_and_repeated_rows_are_duplicates(context: ServiceContext, tmp_path: Path) -> None:
    vectors = _gallery_vectors(4, seed=1)
    key = "cd" * 32
    rows = [f"c1,visible,,,x{i}.jpg," for i in range(3)] + [f"c1,visible,,,x9.jpg,{key}"]
    data = read_embedding_import(*_files(tmp_path, vectors, rows), dim=DIM)
    service = GalleryService(context)
    first = service.import_embeddings(data, model_version="fake0001")
    assert first.added == 4
    before = _state(context)
    again = service.import_embeddings(data, model_version="fake0001", batch_size=3)
    assert (again.added, again.duplicates) == (0, 4)
    assert [o.id for o in again.outcomes] == [o.id for o in first.outcomes]
    assert _state(context) == before
    # A row repeating a digest of the same file (and batch) and one already stored: both duplicates.
    more = read_embedding_import(
        *_files(
            tmp_path,
            _gallery_vectors(3, seed=2),
            [
                f"c2,visible,,,y.jpg,{'ef' * 32}",
                f"c2,visible,,,z.jpg,{'ef' * 32}",
                f"c2,visible,,,k.jpg,{key}",
            ],
            name="more",
        ),
        dim=DIM,
    )
    report = service.import_embeddings(more, model_version="fake0001")
    assert [o.status for o in report.outcomes] == ["added", "duplicate", "duplicate"]
    assert report.outcomes[1].id == report.outcomes[0].id and report.outcomes[2].id == first.outcomes[3].id
    # The same digest in the other modality is another item, as for images.
    other = read_embedding_import(
        *_files(tmp_path, _gallery_vectors(1), [f"c2,infrared,,,k.jpg,{key}"], name="ir"), dim=DIM
    )
    assert service.import_embeddings(other, model_version="fake0001").added == 1


@pytest.mark.parametrize(
    ("vectors", "rows", "header", "message"),
    [
        (_gallery_vectors(2), ["c,visible,,,,"], HEADER, "has 1 data rows but .* has 2 vectors"),
        (_gallery_vectors(2), ["c,visible,,,,", "c,thermal,,,,"], HEADER, "line 3: modality must be one of"),
        (
            _gallery_vectors(2),
            ["c,visible,yesterday,,,", "c,visible,,,,"],
            HEADER,
            "line 2: captured_at is not",
        ),
        (_gallery_vectors(1), ["c,visible,,,,xyz"], HEADER, "sha256 must be 64 hex digits"),
        (_gallery_vectors(1), [",visible,,,,"], HEADER, "camera: must not be empty"),
        (_gallery_vectors(1), ["c,visible,,,,"], "camera,captured_at", "lacks the column.s. modality"),
        (np.zeros((2, DIM + 1), np.float32), ["c,visible,,,,"] * 2, HEADER, f"D={DIM + 1}, .* D={DIM}"),
        (np.full((2, DIM), np.nan, np.float32), ["c,visible,,,,"] * 2, HEADER, "vector row 0: NaN"),
        (np.zeros((1, DIM), np.float32), ["c,visible,,,,"], HEADER, "vector row 0: norm 0"),
        (np.zeros((1, DIM), np.int32), ["c,visible,,,,"], HEADER, "dtype int32"),
        (np.zeros(DIM, np.float32), ["c,visible,,,,"], HEADER, r"not \(N, D\)"),
    ],
)
def test_invalid_files_write_nothing(
    context: ServiceContext,
    tmp_path: Path,
    vectors: np.ndarray,
    rows: list[str],
    header: str,
    message: str,
) -> None:
    GalleryService(context).import_embeddings(
        read_embedding_import(
            *_files(tmp_path, _gallery_vectors(2), ["a,visible,,,,"] * 2, name="ok"), dim=DIM
        ),
        model_version="fake0001",
    )
    before = _state(context)
    with pytest.raises(InvalidInputError, match=message):
        data = read_embedding_import(*_files(tmp_path, vectors, rows, header=header), dim=DIM)
        GalleryService(context).import_embeddings(data, model_version="fake0001")
    assert _state(context) == before


def test_float64_is_converted_and_a_bad_row_late_in_the_file_stops_everything(
    context: ServiceContext, tmp_path: Path
) -> None:
    vectors = _gallery_vectors(9000).astype(np.float64)  # more than one validation chunk
    vectors[8500, 3] = np.inf
    with pytest.raises(InvalidInputError, match="vector row 8500"):
        read_embedding_import(*_files(tmp_path, vectors, ["c,visible,,,,"] * 9000), dim=DIM)
    assert _state(context)[0] == 0
    vectors[8500, 3] = 1.0
    data = read_embedding_import(*_files(tmp_path, vectors[:3], ["c,visible,,,,"] * 3), dim=DIM)
    assert data.rows(0, 3).dtype == np.float32
    assert GalleryService(context).import_embeddings(data, model_version="fake0001").added == 3


def test_unregistered_version_is_refused_with_how_to_register(
    context: ServiceContext, tmp_path: Path
) -> None:
    data = read_embedding_import(*_files(tmp_path, _gallery_vectors(1), ["c,visible,,,,"]), dim=DIM)
    with pytest.raises(NotFoundError, match=r"not registered .*vireid reindex --model DIR"):
        GalleryService(context).import_embeddings(data, model_version="other01")
    assert _state(context)[0] == 0


def test_failed_batch_is_rolled_back_and_index_matches_sql(
    context: ServiceContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = read_embedding_import(
        *_files(tmp_path, _gallery_vectors(6), [f"c,visible,,,r{i}.jpg," for i in range(6)]), dim=DIM
    )
    index = context.index("visible")
    real_add, calls = index.add, []

    def add(ids: np.ndarray, vectors: np.ndarray) -> None:
        real_add(ids, vectors)  # the vectors are in memory when the batch fails
        calls.append(len(ids))
        if len(calls) == 2:
            raise RuntimeError("disk full")

    monkeypatch.setattr(index, "add", add)
    with pytest.raises(RuntimeError, match="disk full"):
        GalleryService(context).import_embeddings(data, model_version="fake0001", batch_size=4)
    monkeypatch.undo()
    rows, size, _ = _state(context)
    assert (rows, size) == (4, 4)  # the first batch committed, the second rolled back and removed
    manifest = context.settings.data_dir / "indexes" / "fake0001" / "visible.json"
    assert json.loads(manifest.read_text())["count"] == 4
    # Run again: the committed rows are duplicates, the rest is added.
    report = GalleryService(context).import_embeddings(data, model_version="fake0001", batch_size=4)
    assert (report.added, report.duplicates) == (2, 4) and _state(context)[:2] == (6, 6)


def test_reindex_reports_imported_items_as_without_crop(context: ServiceContext, tmp_path: Path) -> None:
    data = read_embedding_import(
        *_files(tmp_path, _gallery_vectors(3), ["c,visible,,,,", "c,visible,,,,", "c,infrared,,,,"]), dim=DIM
    )
    GalleryService(context).import_embeddings(data, model_version="fake0001")
    export = tmp_path / "export-fake0002"
    export.mkdir()
    (export / "manifest.json").write_text(
        json.dumps({"model_version": "fake0002", "method": "fake", "variant": "tiny", "embedding_dim": DIM})
    )
    service = ModelService(context)
    service.register(export)
    report = service.reindex("fake0002")
    assert (report.added, report.no_crop, report.failed, report.complete) == (0, 3, [], False)
    # Importing the new version's embeddings completes it.
    again = GalleryService(context).import_embeddings(data, model_version="fake0002")
    assert again.added == 3 and service.get("fake0002").complete


def test_batches_grow_with_the_index(context: ServiceContext, tmp_path: Path) -> None:
    first = read_embedding_import(
        *_files(tmp_path, _gallery_vectors(20), [f"c,visible,,,a{i}," for i in range(20)], name="a"), dim=DIM
    )
    GalleryService(context).import_embeddings(first, model_version="fake0001", batch_size=20)
    more = read_embedding_import(
        *_files(tmp_path, _gallery_vectors(20, seed=5), [f"c,visible,,,b{i}," for i in range(20)], name="b"),
        dim=DIM,
    )
    steps: list[int] = []
    report = GalleryService(context).import_embeddings(
        more, model_version="fake0001", batch_size=2, progress=steps.append
    )
    # each batch is at least a quarter of what the index holds: 20 -> 5, 25 -> 6, 31 -> 7, then the rest
    assert steps == [5, 6, 7, 2] and report.added == 20 and _state(context)[:2] == (40, 40)
