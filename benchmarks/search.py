"""Scale benchmark: FAISS gallery search from 100k to 10M clustered unit vectors (issue #14 item 3).

For each gallery size and FAISS factory string (``faiss.index_factory(dim, factory,
METRIC_INNER_PRODUCT)``) it measures, on synthetic but re-id-shaped embeddings:

* ``train_s`` / ``add_s``: wall seconds of ``index.train`` (on a sample spread over the whole gallery, of
  ``--train-per-centroid`` vectors per IVF centroid, inside FAISS's advice of 39-256 per centroid; see the
  FAISS wiki "Guidelines to choose an index") and of adding the gallery chunk by chunk;
* ``bytes``: the size of the index as ``faiss.write_index`` writes it, counted through a
  ``faiss.PyCallbackIOWriter`` so that no second copy is held (``serialize_index`` would copy it);
* ``p50_ms`` / ``p95_ms``: single-query latency (one query per ``index.search`` call, k = 10) over
  ``--single`` queries after 5 warm-up calls, with FAISS's default OpenMP threads (``--threads``, the
  machine's 2 cores). FAISS parallelises IVF and flat search over *queries*, so one query uses
  essentially one core; HNSW search is single-threaded per query as well;
* ``batch_qps``: queries per second of one ``index.search`` call on a batch of ``--batch`` queries;
* ``recall@10``: mean of |approximate top-10 ∩ exact top-10| / 10, the exact top-10 coming from a chunked
  brute-force inner product in numpy over the same gallery (``--gt-queries`` queries).

Search parameters are set through ``faiss.ParameterSpace().set_index_parameters`` (``nprobe``,
``efSearch``, ``k_factor``), several per index, one printed line each.

Data (seeded, generated chunk by chunk, never two copies of the gallery in memory). An identity's centre
is ``normalize(sqrt(0.2) * m + sqrt(0.5) * normalize(z @ W) + sqrt(0.3) * own)``: ``m`` is one shared unit
direction (embeddings of ReLU features share a cone, so unrelated people still have cosine ≈ 0.2), ``z @ W``
places the identity on a continuous 64-dimensional "appearance" manifold (``z ~ N(0, I_64)``, ``W`` a fixed
random 64×D matrix: look-alike people are near each other, with no clean cluster borders for an IVF to
exploit), and ``own`` is a random unit vector of its own. Each identity has 2-18 crops (uniform, mean 10),
each ``normalize(centre + 0.6 * e)`` with ``e ~ N(0, I/D)``: crops of one identity have cosine ≈ 0.74.
Queries are *held-out* views of gallery identities drawn the same way from another random stream (never
gallery vectors), so an exact top-10 is the query identity's crops followed by look-alikes' crops in a
continuum of scores — the hard case for quantisers and cell borders, as in real re-id galleries.

``--e2e`` instead measures vireid's own path: ``vireid ingest --embeddings/--metadata`` of the gallery
into a fresh SQLite data directory (rows/s), then ``vireid.index.FaissGalleryIndex`` built by the
service's store from SQL with the given factory, and searched (latency, recall against the same brute
force).

Usage (docs/benchmarks.md has the results and the exact commands)::

    nice -n 10 python benchmarks/search.py --sizes 100000 --cases flat,ivf,ivfpq-refine,hnsw,ivfpq
    nice -n 10 python benchmarks/search.py --sizes 1000000 --cases flat,ivfpq-refine,ivf
    nice -n 10 python benchmarks/search.py --sizes 1000000 --cases ivfpq-refine \\
        --sweep "nprobe=768,k_factor_rf=64"
    nice -n 10 python benchmarks/search.py --e2e --sizes 100000 --factory "IDMap2,IVF1024,PQ256x4fs,RFlat" \\
        --params "nprobe=128,k_factor_rf=32"
    nice -n 10 python benchmarks/search.py --insert-compare --sizes 100000

One line per case, e.g. ``search n=1000000 dim=2048 factory=IVF2048,PQ256x4fs,RFlat
params=nprobe=768,k_factor_rf=64 train_s=77.1 add_s=137.3 bytes=8348955430 p50_ms=3.92 p95_ms=4.28
p50_1t_ms=3.92 p95_1t_ms=4.20 batch_qps=909.3 batch=1000 recall@10=0.979 threads=2 single_queries=200``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

CONE_SHARE = math.sqrt(0.2)  # weight of the direction all embeddings share
MANIFOLD_SHARE = math.sqrt(0.5)  # weight of the identity's place on the appearance manifold
OWN_SHARE = math.sqrt(0.3)  # weight of the identity's own random direction
MANIFOLD_DIM = 64
CROP_NOISE = 0.6  # norm of the per-crop noise added to a unit centre
BLOCK_IDS = 1000  # identities per generated chunk (~10k vectors)
MIN_CROPS, MAX_CROPS = 2, 18


def _normalize(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass(frozen=True)
class Gallery:
    """Seeded clustered gallery of ``n`` unit vectors of dimension ``dim`` (float32), made chunk by chunk."""

    n: int
    dim: int
    seed: int = 0

    def __post_init__(self) -> None:
        counts: list[np.ndarray] = []
        total = 0
        b = 0
        while total < self.n:
            c = np.random.default_rng([self.seed, 5, b]).integers(MIN_CROPS, MAX_CROPS + 1, size=BLOCK_IDS)
            counts.append(c)
            total += int(c.sum())
            b += 1
        object.__setattr__(self, "_counts", counts)
        rng = np.random.default_rng([self.seed, 0])
        cone = _normalize(rng.standard_normal((1, self.dim), dtype=np.float32))
        basis = rng.standard_normal((MANIFOLD_DIM, self.dim), dtype=np.float32) / math.sqrt(self.dim)
        object.__setattr__(self, "_cone", cone)
        object.__setattr__(self, "_basis", basis)

    @property
    def n_blocks(self) -> int:
        return len(self._counts)  # type: ignore[attr-defined]

    def centres(self, b: int) -> np.ndarray:
        """(BLOCK_IDS, dim) float32 unit identity centres of block ``b``."""
        rng = np.random.default_rng([self.seed, 1, b])
        z = rng.standard_normal((BLOCK_IDS, MANIFOLD_DIM), dtype=np.float32)
        place = _normalize(z @ self._basis)  # type: ignore[attr-defined]
        own = _normalize(rng.standard_normal((BLOCK_IDS, self.dim), dtype=np.float32))
        return _normalize(CONE_SHARE * self._cone + MANIFOLD_SHARE * place + OWN_SHARE * own)  # type: ignore[attr-defined]

    def views(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(centres.shape, dtype=np.float32)
        noise *= CROP_NOISE / math.sqrt(self.dim)
        noise += centres
        return _normalize(noise)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, vectors)``: consecutive (m, dim) float32 chunks whose rows are the gallery."""
        start = 0
        for b in range(self.n_blocks):
            counts = self._counts[b]  # type: ignore[attr-defined]
            centres = self.centres(b)
            x = self.views(np.repeat(centres, counts, axis=0), np.random.default_rng([self.seed, 2, b]))
            x = x[: self.n - start]
            yield start, x
            start += x.shape[0]
            if start >= self.n:
                return

    def queries(self, nq: int) -> np.ndarray:
        """(nq, dim) float32 held-out unit views of ``nq`` distinct gallery identities."""
        used_blocks = self.n_blocks
        rng = np.random.default_rng([self.seed, 3])
        # Only identities whose crops are in the (possibly truncated) gallery: the last block is cut.
        picks = rng.choice((used_blocks - 1) * BLOCK_IDS, size=nq, replace=False) if used_blocks > 1 else None
        if picks is None:
            picks = rng.choice(BLOCK_IDS // 2, size=nq, replace=False)
        out = np.empty((nq, self.dim), dtype=np.float32)
        order = np.argsort(picks)
        picks_sorted = picks[order]
        for b in np.unique(picks_sorted // BLOCK_IDS):
            sel = order[picks_sorted // BLOCK_IDS == b]
            c = self.centres(int(b))[picks[sel] % BLOCK_IDS]
            out[sel] = self.views(c, np.random.default_rng([self.seed, 4, int(b)]))
        return out


def merge_topk(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, first: int, k: int) -> None:
    """Merge a (nq, m) block of scores whose rows start at gallery row ``first`` into the running top-k."""
    kk = min(k, s.shape[1])
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
    cand_i = np.concatenate([best_i, part + first], axis=1)
    top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
    best_s[:] = np.take_along_axis(cand_s, top, axis=1)
    best_i[:] = np.take_along_axis(cand_i, top, axis=1)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


def index_bytes(index: faiss.Index) -> int:
    """Bytes ``faiss.write_index`` writes for ``index``, counted without keeping them."""
    total = [0]

    def count(buf: bytes) -> int:
        total[0] += len(buf)
        return len(buf)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer
    return total[0]


def _latencies_ms(index: faiss.Index, q: np.ndarray, single: int, k: int) -> tuple[float, float]:
    for i in range(min(5, single)):
        index.search(q[i : i + 1], k)
    lat = []
    for i in range(single):
        t0 = time.perf_counter()
        index.search(q[i : i + 1], k)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1e3
    return float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 95))


def time_queries(index: faiss.Index, q: np.ndarray, single: int, batch: int, k: int = 10) -> tuple:
    """``(p50, p95 ms with FAISS's threads, p50, p95 ms with 1 OpenMP thread, batch q/s, batch ids)``."""
    threads = faiss.omp_get_max_threads()
    p50, p95 = _latencies_ms(index, q, single, k)
    faiss.omp_set_num_threads(1)
    try:
        p50_1t, p95_1t = _latencies_ms(index, q, single, k)
    finally:
        faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    _, found = index.search(q[:batch], k)
    qps = batch / (time.perf_counter() - t0)
    return p50, p95, p50_1t, p95_1t, qps, found


# name -> (factory template, list of parameter strings); {nlist} and {nlist_hnsw} are filled per size.
CASES: dict[str, tuple[str, list[str]]] = {
    "flat": ("IDMap2,Flat", [""]),
    "ivf": ("IVF{nlist},Flat", ["nprobe=16", "nprobe=64", "nprobe=128", "nprobe=256"]),
    "ivfpq-refine": (
        "IVF{nlist},PQ{m4}x4fs,RFlat",
        [
            "nprobe=16,k_factor_rf=8",
            "nprobe=32,k_factor_rf=8",
            "nprobe=64,k_factor_rf=8",
            "nprobe=64,k_factor_rf=16",
            "nprobe=128,k_factor_rf=16",
            "nprobe=128,k_factor_rf=32",
            "nprobe=256,k_factor_rf=32",
            "nprobe=512,k_factor_rf=32",
        ],
    ),
    "ivfpq": ("IVF{nlist},PQ{m8}np", ["nprobe=16", "nprobe=64", "nprobe=128"]),
    "ivfpq-hnsw": ("IVF{nlist},PQ{m8}", ["nprobe=16", "nprobe=64", "nprobe=128"]),
    "hnsw": ("HNSW32", ["efSearch=32", "efSearch=64", "efSearch=128", "efSearch=256"]),
}


def nlist_for(n: int) -> int:
    """IVF list count used per size (compute-bound here: k-means on 2 cores), see docs/benchmarks.md."""
    if n <= 200_000:
        return 1024
    if n <= 2_000_000:
        return 2048
    return 4096


def run_size(args: argparse.Namespace, n: int, cases: list[str]) -> None:
    dim = args.dim
    gal = Gallery(n, dim, seed=args.seed)
    nq = args.gt_queries
    q = gal.queries(nq)
    nlist = nlist_for(n) if args.nlist is None else args.nlist
    want_train = max(nlist * args.train_per_centroid, 65536)
    n_train = min(n, want_train)
    # Pass 1: exact top-k by brute force, a training sample spread over the gallery, and the flat index.
    t0 = time.perf_counter()
    best_s = np.full((nq, args.k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, args.k), -1, dtype=np.int64)
    train = np.empty((n_train, dim), dtype=np.float32)
    taken = 0
    flat = faiss.index_factory(dim, CASES["flat"][0], faiss.METRIC_INNER_PRODUCT) if "flat" in cases else None
    flat_add = 0.0
    for first, x in gal.chunks():
        merge_topk(best_s, best_i, q @ x.T, first, args.k)
        end = first + x.shape[0]
        want = min(n_train, round(n_train * end / n)) - taken
        if want > 0:
            rows = np.random.default_rng([args.seed, 6, first]).choice(x.shape[0], size=want, replace=False)
            train[taken : taken + want] = x[np.sort(rows)]
            taken += want
        if flat is not None:
            ta = time.perf_counter()
            flat.add_with_ids(x, np.arange(first, end, dtype=np.int64))
            flat_add += time.perf_counter() - ta
    train = train[:taken]
    print(
        f"# n={n} dim={dim} gt_queries={nq} ground_truth_pass_s={time.perf_counter() - t0:.1f} "
        f"train_sample={taken} nlist={nlist}",
        flush=True,
    )
    coarse: dict[int, tuple[np.ndarray, float]] = {}
    for case in cases:
        template, params = CASES[case]
        if args.sweep and case != "flat":
            params = args.sweep.split(";")
        if case == "flat":
            assert flat is not None
            report(args, n, dim, template, params, flat, 0.0, flat_add, q, best_i)
            del flat
            flat = None
            continue
        if case == "hnsw" and n > args.max_hnsw:
            print(
                f"search n={n} dim={dim} factory={template} skipped: HNSW build over {args.max_hnsw} vectors "
                "takes longer than this run allows on 2 cores (see the 100k line and docs/benchmarks.md)",
                flush=True,
            )
            continue
        factory = template.format(nlist=nlist, m4=dim // 8, m8=64)
        if case == "ivfpq-hnsw":
            factory = f"IVF{nlist}_HNSW32,PQ64"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        train_s = 0.0
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and factory.startswith(f"IVF{nlist},") and nlist in coarse:
            # Same coarse k-means as an earlier case of this size: reuse its centroids (FAISS skips
            # training a quantizer that is trained and holds nlist vectors); its time is still counted.
            centroids, coarse_s = coarse[nlist]
            ivf.quantizer.add(centroids)
            train_s += coarse_s
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(train)
        train_s += time.perf_counter() - t0
        if ivf is not None and factory.startswith(f"IVF{nlist},") and nlist not in coarse:
            coarse[nlist] = (ivf.quantizer.reconstruct_n(0, nlist), train_s)
        t0 = time.perf_counter()
        for _, x in gal.chunks():
            index.add(x)
        add_s = time.perf_counter() - t0
        report(args, n, dim, factory, params, index, train_s, add_s, q, best_i)
        del index


def report(args, n, dim, factory, params, index, train_s, add_s, q, truth) -> None:
    size = index_bytes(index)
    space = faiss.ParameterSpace()
    for p in params:
        if p:
            space.set_index_parameters(index, p)
        exact_big = factory.startswith("IDMap") and factory.endswith("Flat") and n > 200_000
        single = 20 if exact_big else args.single
        batch = min(200 if exact_big else args.batch, q.shape[0])
        p50, p95, p50_1t, p95_1t, qps, found = time_queries(index, q, single, batch, args.k)
        rec = recall_at(found, truth[: found.shape[0]], args.k)
        print(
            f"search n={n} dim={dim} factory={factory} params={p or '-'} train_s={train_s:.1f} "
            f"add_s={add_s:.1f} bytes={size} p50_ms={p50:.2f} p95_ms={p95:.2f} p50_1t_ms={p50_1t:.2f} "
            f"p95_1t_ms={p95_1t:.2f} batch_qps={qps:.1f} batch={batch} recall@10={rec:.3f} "
            f"threads={faiss.omp_get_max_threads()} single_queries={single}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000", help="comma-separated gallery sizes")
    ap.add_argument(
        "--dim", type=int, default=2048, help="2048 = SALCR ResNet-50 full; 1536 = SDCL ViT-B (2 x 768)"
    )
    ap.add_argument("--cases", default="flat,ivf,ivfpq-refine,ivfpq,hnsw", help=f"any of {','.join(CASES)}")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default per size, see nlist_for)")
    ap.add_argument("--train-per-centroid", type=int, default=39)
    ap.add_argument("--gt-queries", type=int, default=1000, help="queries with exact ground truth")
    ap.add_argument("--single", type=int, default=200, help="single-query calls timed per case")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the throughput batch")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-hnsw", type=int, default=200_000, help="largest size where HNSW is built")
    ap.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--e2e", action="store_true", help="vireid ingest + FaissGalleryIndex path instead")
    ap.add_argument(
        "--factory", default="IDMap2,IVF1024,PQ256x4fs,RFlat", help="--e2e: vireid factory string (IDMap...)"
    )
    ap.add_argument("--params", default="nprobe=64,k_factor_rf=16", help="--e2e: faiss.ParameterSpace string")
    ap.add_argument("--rows-per-commit", type=int, default=None, help="--e2e: import batch (default 4096)")
    ap.add_argument("--work", default=None, help="--e2e: work directory (default: a temporary one)")
    ap.add_argument(
        "--insert-compare",
        action="store_true",
        help="time GalleryRepository.add_items (ORM) against add_items_bulk on a fresh SQLite file",
    )
    ap.add_argument("--import-only", action="store_true", help="--e2e: stop after the import line")
    ap.add_argument(
        "--sweep",
        default=None,
        help="replace the cases' parameter lists, e.g. 'nprobe=512,k_factor_rf=64;nprobe=1024'",
    )
    args = ap.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"# faiss={faiss.__version__} numpy={np.__version__} omp_threads={faiss.omp_get_max_threads()} "
        f"cpus={os.cpu_count()} pid={os.getpid()}",
        flush=True,
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.insert_compare:
        for n in sizes:
            insert_compare(args, n)
        return 0
    if args.e2e:
        for n in sizes:
            run_e2e(args, n)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}")
    for n in sizes:
        run_size(args, n, cases)
    return 0


def insert_compare(args: argparse.Namespace, n: int) -> None:
    """Rows/s of the two repository insert paths, 4096 rows per commit, on SQLite (before/after)."""
    import hashlib
    import tempfile
    from pathlib import Path

    from vireid.index import GalleryRepository, NewItem, make_engine, make_sessionmaker, upgrade_database

    repo = GalleryRepository()
    for method in ("add_items", "add_items_bulk"):
        folder = Path(tempfile.mkdtemp(prefix="vireid-insert-"))
        url = f"sqlite:///{folder / 'gallery.db'}"
        upgrade_database(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        elapsed = 0.0
        for first, x in Gallery(n, args.dim, seed=args.seed).chunks():
            for start in range(0, x.shape[0], 4096):
                rows = x[start : start + 4096]
                items = [
                    NewItem(
                        camera="cam1",
                        modality="visible",
                        sha256=hashlib.sha256(str(first + start + i).encode()).hexdigest(),
                        source=f"row-{first + start + i}",
                    )
                    for i in range(rows.shape[0])
                ]
                t0 = time.perf_counter()
                with sessions() as session:
                    getattr(repo, method)(session=session, items=items, vectors=rows, model_version="v1")
                    session.commit()
                elapsed += time.perf_counter() - t0
        engine.dispose()
        print(
            f"insert n={n} dim={args.dim} db=sqlite method={method} rows_per_s={n / elapsed:.0f}", flush=True
        )


def _service_latencies(index: object, q: np.ndarray, single: int, k: int) -> list[float]:
    search = index.search  # type: ignore[attr-defined]
    for i in range(min(5, single)):
        search(q[i : i + 1], k)
    lat = []
    for i in range(single):
        t0 = time.perf_counter()
        search(q[i : i + 1], k)
        lat.append(time.perf_counter() - t0)
    return lat


class _NoImages:
    """Embedder stand-in for ``open_context``: the import never embeds images (``embed`` raises)."""

    def __init__(self, dim: int) -> None:
        from types import SimpleNamespace

        self.manifest = SimpleNamespace(
            model_version=f"bench-d{dim}", method="salcr", variant="full", embedding_dim=dim, precision="fp32"
        )

    def embed(self, images: object, modality: str) -> np.ndarray:
        raise RuntimeError("the benchmark imports embeddings; it embeds no image")


def run_e2e(args: argparse.Namespace, n: int) -> None:
    """vireid's own path: embeddings import into SQLite, rebuild from SQL, FaissGalleryIndex search."""
    import tempfile
    from pathlib import Path

    from vireid.api import Settings
    from vireid.api.services import GalleryService, open_context, read_embedding_import
    from vireid.index import FaissGalleryIndex

    dim = args.dim
    work = Path(args.work or tempfile.mkdtemp(prefix="vireid-search-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    gal = Gallery(n, dim, seed=args.seed)
    npy, csv_path = work / "gallery.npy", work / "gallery.csv"
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(n, dim))
    with csv_path.open("w", encoding="utf-8") as handle:
        handle.write("camera,modality,source\n")
        for first, x in gal.chunks():
            out[first : first + x.shape[0]] = x
            handle.writelines(f"cam{(first + i) % 8},visible,row-{first + i}\n" for i in range(x.shape[0]))
    out.flush()
    del out
    print(f"# e2e files written in {time.perf_counter() - t0:.1f}s under {work}", flush=True)
    ctx = open_context(Settings(data_dir=work / "data"), embedder=_NoImages(dim))  # type: ignore[arg-type]
    version = ctx.model_version
    try:
        t0 = time.perf_counter()
        data = read_embedding_import(npy, csv_path, dim=dim)
        validate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = GalleryService(ctx).import_embeddings(
            data, model_version=version, batch_size=args.rows_per_commit
        )
        import_s = time.perf_counter() - t0
        if report.added != n:
            raise SystemExit(f"import added {report.added} of {n} rows")
        row_ids = np.asarray([o.id for o in report.outcomes], dtype=np.int64)
        print(
            f"import n={n} dim={dim} db=sqlite validate_s={validate_s:.1f} import_s={import_s:.1f} "
            f"rows_per_s={n / import_s:.0f} with_validation_rows_per_s={n / (validate_s + import_s):.0f} "
            f"rows_per_commit={args.rows_per_commit or 4096}+ index=IDMap2,Flat(saved after each commit)",
            flush=True,
        )
        if args.import_only:
            return
        knobs = dict(item.split("=") for item in args.params.split(",") if item)

        def from_sql() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            with ctx.session() as session:
                yield from ctx.repository.iter_embeddings(
                    session=session, model_version=version, modality="visible"
                )

        gallery = np.load(npy, mmap_mode="r")
        t0 = time.perf_counter()
        index = FaissGalleryIndex.build(  # trained on a reservoir sample of the stored embeddings
            dim,
            from_sql,
            factory=args.factory,
            nprobe=int(knobs["nprobe"]) if "nprobe" in knobs else None,
            ef_search=int(knobs["efSearch"]) if "efSearch" in knobs else None,
            k_factor=float(knobs["k_factor_rf"]) if "k_factor_rf" in knobs else None,
        )
        train_s = float("nan")  # inside the build: training is not timed apart
        rebuild_s = time.perf_counter() - t0
    finally:
        ctx.close()
    print(f"# e2e index: {index!r}", flush=True)
    q = gal.queries(args.gt_queries)
    best_s = np.full((q.shape[0], args.k), -np.inf, dtype=np.float32)
    best_i = np.full((q.shape[0], args.k), -1, dtype=np.int64)
    for first in range(0, n, 16384):
        block = np.array(gallery[first : first + 16384], dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        merge_topk(best_s, best_i, q @ block.T, first, args.k)
    truth = row_ids[best_i]
    batch = min(args.batch, q.shape[0])
    # The raw FAISS index gets the same parameters as index defaults (FaissGalleryIndex passes its own).
    faiss.ParameterSpace().set_index_parameters(index.faiss_index, args.params)
    p50, p95, p50_1t, _, qps, _ = time_queries(index.faiss_index, q, args.single, batch, args.k)
    lat_ms = np.asarray(_service_latencies(index, q, args.single, args.k)) * 1e3
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    lat_1t_ms = np.asarray(_service_latencies(index, q, args.single, args.k)) * 1e3
    faiss.omp_set_num_threads(threads)
    ts = time.perf_counter()
    _, found = index.search(q[:batch], args.k)
    service_qps = batch / (time.perf_counter() - ts)
    print(
        f"search-e2e n={n} dim={dim} factory={args.factory} params={args.params} train_s={train_s:.1f} "
        f"rebuild_from_sql_s={rebuild_s:.1f} bytes={index_bytes(index.faiss_index)} "
        f"service_p50_ms={np.percentile(lat_ms, 50):.2f} service_p95_ms={np.percentile(lat_ms, 95):.2f} "
        f"service_p50_1t_ms={np.percentile(lat_1t_ms, 50):.2f} "
        f"service_p95_1t_ms={np.percentile(lat_1t_ms, 95):.2f} "
        f"service_batch_qps={service_qps:.1f} raw_p50_ms={p50:.2f} raw_p95_ms={p95:.2f} "
        f"raw_p50_1t_ms={p50_1t:.2f} raw_batch_qps={qps:.1f} "
        f"recall@10={recall_at(found, truth[:batch], args.k):.3f} threads={faiss.omp_get_max_threads()} "
        "path=vireid.index.FaissGalleryIndex.search (service_*), its faiss_index (raw_*)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
