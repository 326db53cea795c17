"""Milvus vs FAISS parity on the real SYSU-MM01 sample (issue #14, item 7): the same gallery ingested
into two data dirs through the service code (``open_context`` + ``GalleryService.ingest``), one with the
exact FAISS index (``IDMap2,Flat``), one with a Milvus Lite file (``FLAT``, metric IP); then every
infrared crop of the split searched through ``SearchService`` (k=10) in both.

Prints one line per backend and a parity line, e.g.::

    milvus_parity backend=faiss gallery=129 ingest_s=9.1 search_ms_mean=31.0 index_ms_mean=0.05
    milvus_parity backend=milvus gallery=129 ingest_s=9.4 search_ms_mean=33.2 index_ms_mean=1.90
    milvus_parity queries=70 identical_top10=70 same_ids_any_order=70 max_abs_score_diff=0.0 ...

``search_ms_mean`` is the whole ``SearchService.search`` (decode, embed, index, SQL); ``index_ms_mean`` is
the index search alone on the same query vectors. Items are matched by their ``source`` path, so the
comparison holds even if the two data dirs gave different SQL ids. Exit code 1 when a query's top-10
differs.

Usage::

    python benchmarks/milvus_parity.py --model /tmp/milvus-model \\
        --sysu ../shared/data/sysu-mm01-sample --work /tmp/milvus-parity
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from vireid.api import Settings
from vireid.api.services import GalleryService, SearchService, open_context
from vireid.api.services._images import decode
from vireid.api.services._layouts import read_sysu_mm01

K = 10


def _run(
    backend: str, *, work: Path, model: Path, sysu: Path, split: str
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
    """Ingest the split's visible crops and search its infrared crops; ``{query: [(source, score)]}``."""
    data_dir = work / backend
    shutil.rmtree(data_dir, ignore_errors=True)
    fields: dict[str, object] = {"index_backend": backend}
    if backend == "milvus":
        fields["milvus_uri"] = str(data_dir / "milvus.db")
    settings = Settings(
        data_dir=data_dir,
        model_dir=model,
        device="cpu",
        embed_batching=False,
        store_crops=False,
        **fields,  # type: ignore[arg-type]
    )
    records, failures = read_sysu_mm01(sysu, split=split)
    if failures:
        raise SystemExit(f"unreadable SYSU-MM01 entries: {failures[:3]}")
    gallery = [r for r in records if r.modality == "visible"]
    queries = [r for r in records if r.modality == "infrared"]
    context = open_context(settings)
    try:
        start = time.perf_counter()
        report = GalleryService(context).ingest(gallery)
        ingest_s = time.perf_counter() - start
        if report.failed or report.added != len(gallery):
            raise SystemExit(f"{backend}: ingest added {report.added} of {len(gallery)}: {report.failed[:3]}")
        service = SearchService(context)
        answers: dict[str, list[tuple[str, float]]] = {}
        search_s = 0.0
        vectors = []
        for record in queries:
            data = record.read_bytes(max_bytes=settings.max_upload_bytes)
            start = time.perf_counter()
            result = service.search(data, modality="infrared", k=K, source=record.source)
            search_s += time.perf_counter() - start
            answers[record.source] = [(str(m.source), m.score) for m in result.matches]
            image = decode(data, max_pixels=settings.max_image_pixels, source=record.source)
            vectors.append(context.embedder.embed([image], "infrared")[0])
        index = context.index("visible")
        start = time.perf_counter()
        for vector in vectors:
            index.search(np.asarray(vector, dtype=np.float32)[None, :], K)
        index_s = time.perf_counter() - start
    finally:
        context.close()
    timing = {
        "gallery": float(len(gallery)),
        "ingest_s": ingest_s,
        "search_ms_mean": 1000 * search_s / max(len(queries), 1),
        "index_ms_mean": 1000 * index_s / max(len(queries), 1),
    }
    return answers, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="exported model dir (vireid export)")
    parser.add_argument("--sysu", type=Path, required=True, help="SYSU-MM01 root (cam1..cam6, exp/)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the two data dirs")
    parser.add_argument("--split", default="test", help="SYSU-MM01 split: test (default), train, val, all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    faiss_answers, faiss_timing = _run(
        "faiss", work=args.work, model=args.model, sysu=args.sysu, split=args.split
    )
    milvus_answers, milvus_timing = _run(
        "milvus", work=args.work, model=args.model, sysu=args.sysu, split=args.split
    )
    for backend, timing in (("faiss", faiss_timing), ("milvus", milvus_timing)):
        print(
            f"milvus_parity backend={backend} split={args.split} gallery={int(timing['gallery'])} "
            f"ingest_s={timing['ingest_s']:.1f} search_ms_mean={timing['search_ms_mean']:.1f} "
            f"index_ms_mean={timing['index_ms_mean']:.3f}"
        )
    identical = same_set = 0
    max_diff = 0.0
    differing: list[str] = []
    for query, want in faiss_answers.items():
        got = milvus_answers[query]
        if [s for s, _ in got] == [s for s, _ in want]:
            identical += 1
        else:
            differing.append(query)
        if {s for s, _ in got} == {s for s, _ in want}:
            same_set += 1
        scores = dict(want)
        diffs = [abs(score - scores[source]) for source, score in got if source in scores]
        max_diff = max([max_diff, *diffs])
    print(
        f"milvus_parity split={args.split} queries={len(faiss_answers)} identical_top{K}={identical} "
        f"same_ids_any_order={same_set} max_abs_score_diff={max_diff:.3g}"
    )
    for query in differing:
        print(f"  differs: {query}")
        print(f"    faiss : {faiss_answers[query]}")
        print(f"    milvus: {milvus_answers[query]}")
    sys.exit(0 if identical == len(faiss_answers) else 1)


if __name__ == "__main__":
    main()
