"""Accuracy and latency of ``/search`` re-ranking (``rerank=cmfp``) and tracklet queries on SYSU-MM01.

Through the service code only (``open_context``, ``GalleryService``, ``SearchService``), as ``POST /search``
runs them:

1. ingest the **visible test** crops (cams 1, 2, 4, 5 of ``exp/test_id.txt``) of a SYSU-MM01 tree into a
   temporary data directory (exact ``IDMap2,Flat`` index);
2. query with every **infrared test** crop (cams 3, 6), the SYSU all-search protocol: a cam-3 query does not
   see cam 2 (the service's ``cameras`` filter, inside the index search);
3. per case, the full ranking of each query: plain search with ``k`` = gallery size; with ``rerank=cmfp`` the
   re-ranked top ``R`` followed by the rest of the plain ranking. Rank-1, Rank-10 (identity-deduplicated
   CMC, as SYSU's code) and mAP come from ``vireid.training.evaluation.evaluate_rank`` on these rankings;
4. latency: ``SearchResult.took_ms`` (decode + embed + search [+ re-rank]) of a ``k=10`` search per query,
   p50 / p95 over the queries.

Tracklet cases fuse the infrared crops of one identity in one camera (1 to 3 crops in the sample) into one
query (``search_tracklet``); their metrics are per tracklet.

With ``--folders ROOT`` instead of ``--sysu``, the same cases run on a camera-folder dataset with
``identities.csv`` and ``split.csv`` (what ``vireid synth`` writes): its held-out (``test``) visible crops
are the gallery, its held-out infrared crops the queries, with no camera filter. This is how a model that
does find people (the demo's, trained on the synthetic set's train identities) is measured.

Also times where re-ranking reads its candidates' vectors: SQL (``GalleryRepository.embeddings_of``, what
the service uses) against FAISS ``reconstruct`` of the same ids.

Prints one line per case, e.g. ``rerank model=salcr-mobile query=single rerank=cmfp R=100 k=8 queries=70
rank1=… rank10=… mAP=… p50_ms=… p95_ms=…``.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/rerank.py --model /tmp/rerank-model \\
        --sysu /work/shared/data/sysu-mm01-sample [--candidates 100] [--ks 8,30]
    OMP_NUM_THREADS=1 python benchmarks/rerank.py --model vireid-data/demo/synthetic/model \\
        --folders vireid-data/demo/synthetic/data --label salcr-mobile-synthetic-trained
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vireid.api import Settings
from vireid.api.services import GalleryService, IngestRecord, SearchService, open_context, read_sysu_mm01

VISIBLE, INFRARED = ("1", "2", "4", "5"), ("3", "6")


@dataclass(frozen=True)
class Query:
    """One query: its crops (one, or a tracklet), identity, camera name and gallery camera filter."""

    images: list[tuple[str, bytes]]
    pid: int
    camera: str
    cameras: list[str] | None


def _grouped(
    crops: Iterable[tuple[int, str, Path, str]],
    *,
    tracklets: bool,
    cameras_of: Callable[[str], list[str] | None],
) -> list[Query]:
    """Queries from ``(pid, camera, path, source)`` crops: one per crop, or one per identity and camera."""
    groups: dict[tuple[Any, ...], list[tuple[str, bytes]]] = defaultdict(list)
    for n, (pid, camera, path, source) in enumerate(crops):
        key = (pid, camera)
        groups[key if tracklets else (*key, n)].append((source, path.read_bytes()))
    ordered = sorted(groups.items())
    return [Query(images, pid=key[0], camera=key[1], cameras=cameras_of(key[1])) for key, images in ordered]


def _held_out(root: Path, modality: str) -> list[Any]:
    """The ``test``-split records of one modality of a camera-folder dataset (identity labels required)."""
    from vireid.training.data import camera_folders

    records = [r for r in camera_folders(root, split="test") if r.modality == modality]
    if not records or any(r.pid is None for r in records):
        raise SystemExit(f"{root}: needs {modality} test crops with identities (identities.csv, split.csv)")
    return records


def _queries(root: Path, *, tracklets: bool) -> list[Query]:
    """SYSU-MM01 infrared test crops, with the all-search camera filter (a cam-3 query skips cam 2, §C.1)."""
    records, failures = read_sysu_mm01(root, split="test", cameras=INFRARED)
    if failures:
        raise SystemExit(f"unreadable query files: {failures[:3]}")
    crops = []
    for record in records:
        assert record.path is not None and record.track_id is not None
        crops.append((int(record.track_id), record.camera, record.path, record.source))
    return _grouped(
        crops,
        tracklets=tracklets,
        cameras_of=lambda cam: [f"cam{c}" for c in VISIBLE if not (cam == "cam3" and c == "2")],
    )


def _folder_queries(root: Path, *, tracklets: bool) -> list[Query]:
    """A camera-folder dataset's held-out infrared crops; every visible camera is searched."""
    crops = [
        (int(r.pid), r.camera, Path(r.path), Path(r.path).as_posix()) for r in _held_out(root, "infrared")
    ]
    return _grouped(crops, tracklets=tracklets, cameras_of=lambda _: None)


def _sysu_gallery(root: Path) -> list[IngestRecord]:
    records, failures = read_sysu_mm01(root, split="test", cameras=VISIBLE)
    if failures:
        logging.getLogger(__name__).info("gallery: %d unreadable files left out", len(failures))
    return records


def _folder_gallery(root: Path) -> list[IngestRecord]:
    return [
        IngestRecord(
            source=Path(r.path).resolve().as_posix(),
            camera=r.camera,
            modality="visible",
            track_id=str(r.pid),
            path=Path(r.path),
        )
        for r in _held_out(root, "visible")
    ]


def _ingest(settings: Settings, records: list[IngestRecord]) -> None:
    context = open_context(settings)
    try:
        report = GalleryService(context).ingest(records)
    finally:
        context.close()
    logging.getLogger(__name__).info("gallery: %d added", report.added)


def _metrics(
    rankings: list[list[int]], queries: Sequence[Query], pid_of: dict[int, int]
) -> tuple[float, ...]:
    from vireid.training.evaluation import evaluate_rank

    gallery = sorted(pid_of)
    column = {item: j for j, item in enumerate(gallery)}
    distances = np.full((len(rankings), len(gallery)), float(len(gallery) + 1))
    exclude = np.ones((len(rankings), len(gallery)), dtype=bool)
    for i, ranking in enumerate(rankings):
        for position, item in enumerate(ranking):
            distances[i, column[item]] = position
            exclude[i, column[item]] = False  # left out by the camera filter otherwise
    result = evaluate_rank(
        distances,
        np.array([q.pid for q in queries]),
        np.array([pid_of[item] for item in gallery]),
        max_rank=10,
        exclude=exclude,
        dedup_cmc=True,
    )
    return float(result.cmc[0]), float(result.cmc[9]), result.mAP, result.num_valid_queries


@dataclass
class CaseRuns:
    """Per query: full plain ranking, re-ranked ranking, and k=10 latencies (ms) of both."""

    plain: list[list[int]]
    reranked: list[list[int]]
    plain_ms: list[float]
    rerank_ms: list[float]


def _timed(service: SearchService, q: Query, *, rerank: str, repeats: int) -> float:
    """Median ``took_ms`` of ``repeats`` k=10 searches (decode + embed + search [+ re-rank])."""
    return statistics.median(
        service.search_tracklet(q.images, k=10, rerank=rerank, modality="infrared", cameras=q.cameras).took_ms
        for _ in range(repeats)
    )


def _run_case(
    service: SearchService, queries: Sequence[Query], *, gallery_size: int, candidates: int, repeats: int
) -> CaseRuns:
    for q in queries[:5]:  # warm-up: ONNX Runtime's first runs, SQLite pages
        _timed(service, q, rerank="cmfp", repeats=1)
    runs = CaseRuns([], [], [], [])
    for q in queries:
        runs.plain_ms.append(_timed(service, q, rerank="none", repeats=repeats))
        runs.rerank_ms.append(_timed(service, q, rerank="cmfp", repeats=repeats))
        common = {"modality": "infrared", "cameras": q.cameras}
        full = [m.id for m in service.search_tracklet(q.images, k=gallery_size, **common).matches]
        top = service.search_tracklet(q.images, k=candidates, rerank="cmfp", **common).matches
        head = [m.id for m in top]
        runs.plain.append(full)
        runs.reranked.append(head + [item for item in full if item not in set(head)])
    return runs


def _grouped_check(service: SearchService, queries: Sequence[Query], *, k: int = 10) -> tuple[int, float]:
    """How many ``group_by=track`` answers hold ``k`` distinct tracks, and the mean candidates examined."""
    full, examined = 0, []
    for q in queries:
        result = service.search_tracklet(
            q.images, k=k, group_by="track", modality="infrared", cameras=q.cameras
        )
        tracks = {m.track_id for m in result.matches}
        full += int(len(result.matches) == k and len(tracks) == k)
        examined.append(result.candidates)
    return full, float(np.mean(examined))


def _fetch_costs(settings: Settings, *, n: int, repeats: int = 50) -> tuple[float, float]:
    """Median ms to read ``n`` candidate vectors: SQL ``embeddings_of`` vs FAISS ``reconstruct``."""
    context = open_context(settings)
    try:
        shared = context.index("visible")
        ids = shared.ids()[:n]
        faiss_index = shared._index.faiss_index
        sql, rec = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            with context.session() as session:
                context.repository.embeddings_of(session=session, ids=ids)
            sql.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            np.stack([faiss_index.reconstruct(int(i)) for i in ids])
            rec.append((time.perf_counter() - start) * 1000)
        return statistics.median(sql), statistics.median(rec)
    finally:
        context.close()


def _fetch_costs_at_scale(n_items: int, *, dim: int, n: int, repeats: int = 50) -> tuple[float, float]:
    """As :func:`_fetch_costs` on a synthetic SQLite gallery of ``n_items`` random unit vectors, reading
    ``n`` ids scattered over it (as search hits are)."""
    import hashlib

    from vireid.index import (
        FaissGalleryIndex,
        GalleryRepository,
        NewItem,
        make_engine,
        make_sessionmaker,
        upgrade_database,
    )

    rng = np.random.default_rng(0)
    repo = GalleryRepository()
    index = FaissGalleryIndex(dim)
    with tempfile.TemporaryDirectory(prefix="vireid-fetch-") as tmp:
        url = f"sqlite:///{tmp}/gallery.db"
        upgrade_database(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        for start in range(0, n_items, 5000):
            count = min(5000, n_items - start)
            vectors = rng.standard_normal((count, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            items = [
                NewItem(
                    camera="c", modality="visible", sha256=hashlib.sha256(str(start + i).encode()).hexdigest()
                )
                for i in range(count)
            ]
            with sessions.begin() as session:
                ids = repo.add_items(session=session, items=items, vectors=vectors, model_version="m")
            index.add(np.asarray(ids, dtype=np.int64), vectors)
        sql, rec = [], []
        for _ in range(repeats):
            wanted = rng.choice(index.ids(), size=n, replace=False)
            start_t = time.perf_counter()
            with sessions() as session:
                repo.embeddings_of(session=session, ids=wanted)
            sql.append((time.perf_counter() - start_t) * 1000)
            start_t = time.perf_counter()
            np.stack([index.faiss_index.reconstruct(int(i)) for i in wanted])
            rec.append((time.perf_counter() - start_t) * 1000)
        engine.dispose()
    return statistics.median(sql), statistics.median(rec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="exported model directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sysu", type=Path, help="SYSU-MM01 root (official layout)")
    source.add_argument(
        "--folders", type=Path, help="camera-folder dataset with identities.csv and split.csv (vireid synth)"
    )
    parser.add_argument("--candidates", type=int, default=100, help="R, candidates re-ranked (default 100)")
    parser.add_argument("--ks", default="8,30", help="CMFP neighbours to try (default 8,30)")
    parser.add_argument(
        "--fetch-gallery",
        type=int,
        default=0,
        help="also time the vector reads on a synthetic gallery this big",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per query (median)")
    parser.add_argument("--label", default=None, help="model label in the output (default: the folder name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    label = args.label or args.model.name
    with tempfile.TemporaryDirectory(prefix="vireid-rerank-") as tmp:
        base = {"data_dir": Path(tmp), "model_dir": args.model, "store_crops": False, "embed_batching": False}
        gallery = _sysu_gallery(args.sysu) if args.sysu is not None else _folder_gallery(args.folders)
        _ingest(Settings(**base), gallery)
        for kind in ("single", "tracklet"):
            tracklets = kind == "tracklet"
            queries = (
                _queries(args.sysu, tracklets=tracklets)
                if args.sysu is not None
                else _folder_queries(args.folders, tracklets=tracklets)
            )
            for n, k in enumerate(int(value) for value in args.ks.split(",")):
                settings = Settings(**base, rerank_candidates=args.candidates, rerank_k=k)
                context = open_context(settings)
                try:
                    with context.session() as session:
                        ids = context.index("visible").ids()
                        pid_of = {
                            int(r.id): int(r.track_id)
                            for r in context.repository.filter_ids(session=session, ids=ids)
                        }
                    if n == 0:
                        full, examined = _grouped_check(SearchService(context), queries)
                        print(
                            f"rerank model={label} query={kind} group_by=track k=10 "
                            f"answers_with_10_tracks={full}/{len(queries)} mean_candidates={examined:.1f}",
                            flush=True,
                        )
                    runs = _run_case(
                        SearchService(context),
                        queries,
                        gallery_size=len(pid_of),
                        candidates=args.candidates,
                        repeats=args.repeats,
                    )
                finally:
                    context.close()
                rows = [("none", runs.plain, runs.plain_ms)] if n == 0 else []
                rows.append(("cmfp", runs.reranked, runs.rerank_ms))
                for rerank, rankings, latencies in rows:
                    rank1, rank10, mean_ap, valid = _metrics(rankings, queries, pid_of)
                    p50, p95 = np.percentile(latencies, [50, 95])
                    extra = (
                        f" R={args.candidates} k={k} rerank_cost_p50_ms="
                        f"{np.median(np.subtract(runs.rerank_ms, runs.plain_ms)):.1f}"
                        if rerank == "cmfp"
                        else ""
                    )
                    print(
                        f"rerank model={label} query={kind} rerank={rerank}{extra} queries={len(queries)} "
                        f"valid={valid} gallery={len(pid_of)} rank1={rank1:.4f} rank10={rank10:.4f} "
                        f"mAP={mean_ap:.4f} p50_ms={p50:.1f} p95_ms={p95:.1f}",
                        flush=True,
                    )
        sql_ms, faiss_ms = _fetch_costs(Settings(**base), n=args.candidates)
        print(
            f"rerank candidate_vectors n={args.candidates} sql_embeddings_of_ms={sql_ms:.2f} "
            f"faiss_reconstruct_ms={faiss_ms:.2f} gallery={len(pid_of)}"
        )
    if args.fetch_gallery:
        sql_ms, faiss_ms = _fetch_costs_at_scale(args.fetch_gallery, dim=1280, n=args.candidates)
        print(
            f"rerank candidate_vectors n={args.candidates} sql_embeddings_of_ms={sql_ms:.2f} "
            f"faiss_reconstruct_ms={faiss_ms:.2f} gallery={args.fetch_gallery} (synthetic, dim 1280, SQLite)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
