"""Crash trial: kill -9 the service and ``vireid ingest`` at random moments; nothing acknowledged is lost.

Setup: a tiny SALCR model is exported once with ``vireid export --variant tiny`` (randomly initialised,
no training), then two kinds of trial run, each on its own data directory (and, with ``--database-url``,
its own PostgreSQL schema, dropped at the end):

* ``server``: ``vireid serve`` runs on a free localhost port; a client thread POSTs ``/gallery`` requests
  of 1-6 small random PNG crops (visible and infrared in turn) and records every id of a 201 answer;
  after a random delay the server gets SIGKILL. The next start must keep every acknowledged id
  (``GET /gallery/{id}`` 200 with the uploaded SHA-256, and the id among SQL's), hold the same ids in
  memory (``/readyz`` sizes), on disk (index file + manifest) and in SQL, find a sample of the trial's
  crops by search, leave no ``.*.tmp`` file under ``<data_dir>/indexes`` or ``<data_dir>/crops``, and
  keep the crop store equal to SQL: every row's crop stored, no crop without a row, no crop journal
  left (``crop_mismatch``). The request the kill cut
  off must be stored whole or not at all (``partial_requests``; ``unacked_committed`` counts those stored
  whole although the client never got the answer). After the last trial, the
  same searches must give identical results (ids and scores) across a graceful restart (SIGTERM), a
  kill -9 of the idle server and a restart that rebuilds the indexes from SQL (``indexes/`` removed).
* ``ingest``: ``vireid ingest`` of a folder of fresh crops (batches of 8) gets SIGKILL after a random
  delay and is run again to completion. Every file must then be stored exactly once (by SHA-256), the
  rerun must report no failure, index files must match SQL, the crops must match the rows and no temp
  file may remain.

Only the public command line and HTTP API write; the checks read SQL and the index files through
``vireid.index`` (``GalleryRepository``, ``IndexManifest``, ``FaissGalleryIndex``).

Usage::

    python benchmarks/reliability.py                                  # 10 trials of each kind, SQLite
    python benchmarks/reliability.py --trials 20 --seed 3 --work /tmp/reliability
    python benchmarks/reliability.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Prints one line per kind, e.g. ``reliability kind=server db=sqlite trials=10 acknowledged=1694 lost=0
index_mismatch=0 search_missed=0 partial_requests=0 temp_files_left=0 results_changed=0 errors=0
killed_in_save=1 stale_index_at_kill=3 unacked_committed=5 wall_s=60.5`` and ``reliability kind=ingest
db=sqlite trials=10 files=4800 lost=0 index_mismatch=0 duplicates=0 temp_files_left=0 errors=0
killed_in_save=1 stale_index_at_kill=3 killed_mid_ingest=5 wall_s=68.6`` (docs/reliability.md has the
last figures). ``killed_in_save`` (trials with a temp file right after the kill),
``stale_index_at_kill`` (trials whose index on disk did not match SQL right after the kill, so the next
start rebuilt it) and ``killed_mid_ingest`` (kills after some but not all batches were committed) show
where the kills landed. Exit code 1 when anything was lost, inconsistent, left behind or failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from vireid.index import (
    CROPS_DIRNAME,
    INDEXES_DIRNAME,
    MODALITIES,
    CorruptIndexError,
    FaissGalleryIndex,
    GalleryItem,
    GalleryRepository,
    IndexManifest,
    default_database_url,
    make_engine,
    make_sessionmaker,
)

logger = logging.getLogger("reliability")

READY_TIMEOUT_S = 120.0
INGEST_TIMEOUT_S = 300.0
MAX_KILL_DELAY_S = 4.0  # server trials: SIGKILL after U(0.2, this) seconds of writes
INGEST_FILES = 480  # crops per ingest trial
INGEST_BATCH = 8
GET_EARLIER = 200  # ids of earlier trials read back with GET after each restart (all are checked in SQL)
SEARCH_PROBES = 3  # acknowledged crops searched for after each restart
QUERIES = 6  # fixed queries compared across the final restarts
CROP_SIZE = (48, 96)  # (W, H)


@dataclass
class Tally:
    """Counters of one trial kind; the printed line."""

    kind: str
    db: str
    trials: int = 0
    acknowledged: int = 0
    files: int = 0
    lost: int = 0
    index_mismatch: int = 0
    search_missed: int = 0
    partial_requests: int = 0
    duplicates: int = 0
    temp_files_left: int = 0
    crop_mismatch: int = 0
    results_changed: int = 0
    errors: int = 0
    killed_in_save: int = 0
    stale_index_at_kill: int = 0
    killed_mid_ingest: int = 0
    unacked_committed: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when anything was lost, inconsistent, left behind or failed."""
        return any(
            (
                self.lost,
                self.index_mismatch,
                self.search_missed,
                self.partial_requests,
                self.duplicates,
                self.temp_files_left,
                self.crop_mismatch,
                self.results_changed,
                self.errors,
            )
        )

    def line(self) -> str:
        """``reliability kind=... key=value ...`` (ingest-only and server-only fields where they apply)."""
        only = {
            "server": {
                "acknowledged",
                "search_missed",
                "partial_requests",
                "results_changed",
                "unacked_committed",
            },
            "ingest": {"files", "duplicates", "killed_mid_ingest"},
        }
        skip = {"notes"} | only["ingest" if self.kind == "server" else "server"]
        values = {k: v for k, v in vars(self).items() if k not in skip}
        values["wall_s"] = round(self.wall_s, 1)
        return "reliability " + " ".join(f"{k}={v}" for k, v in values.items())

    def problem(self, text: str) -> None:
        """Log a failed check and keep its text in :attr:`notes`."""
        logger.error("%s: %s", self.kind, text)
        self.notes.append(text)


# ---------------------------------------------------------------------------------------------------
# Crops, processes, database


def crop_png(seed: int) -> bytes:
    """A random blocky RGB crop of :data:`CROP_SIZE`, PNG encoded (distinct per seed)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(CROP_SIZE, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """Environment of the ``vireid`` children: one BLAS thread, no ``VIREID_*`` from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIREID_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def vireid_command(*args: str) -> list[str]:
    """``python -m vireid.cli ARGS`` with this interpreter (the ``vireid`` console command)."""
    return [sys.executable, "-m", "vireid.cli", *args]


def export_tiny_model(model_dir: Path) -> str:
    """Export the tiny SALCR model once (kept in ``model_dir``); returns its model version."""
    manifest = model_dir / "manifest.json"
    if not manifest.is_file():
        logger.info("exporting the tiny SALCR model to %s", model_dir)
        command = vireid_command("export", "--method", "salcr", "--variant", "tiny", "--out", str(model_dir))
        subprocess.run(command, check=True, env=child_env(), capture_output=True, timeout=600)
    return str(json.loads(manifest.read_text())["model_version"])


@contextlib.contextmanager
def database(base_url: str | None, *, data_dir: Path, kind: str) -> Iterator[str]:
    """The database URL of one trial kind: SQLite in ``data_dir``, or a fresh PostgreSQL schema (dropped)."""
    if base_url is None:
        yield default_database_url(data_dir)
        return
    admin = make_engine(base_url)
    schema = f"vireid_reliability_{kind}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(admin.url.render_as_string(hide_password=False))
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# ---------------------------------------------------------------------------------------------------
# Read-only checks through vireid.index


class Inspector:
    """Reads SQL and the index files of one data directory (never writes).

    Args:
        data_dir: the service data directory.
        url: its database URL.
        model_version: the loaded model's version.
    """

    def __init__(self, data_dir: Path, url: str, model_version: str) -> None:
        self.data_dir = data_dir
        self.model_version = model_version
        self._engine = make_engine(url)
        self._sessions = make_sessionmaker(self._engine)
        self._repository = GalleryRepository()

    def close(self) -> None:
        """Release the engine."""
        self._engine.dispose()

    def sql_ids(self, modality: str) -> np.ndarray:
        """``(N,)`` int64 ids stored in SQL for the model and ``modality``, ascending."""
        if not inspect(self._engine).has_table(GalleryItem.__tablename__):
            return np.zeros(0, dtype=np.int64)
        with self._sessions() as session:
            ids = self._repository.list_ids(
                session=session, model_version=self.model_version, modality=modality
            )
        return np.asarray(ids, dtype=np.int64)

    def rows_per_sha(self, camera: str) -> dict[str, int]:
        """SHA-256 -> number of rows of ``camera`` for the model (none before the first migration)."""
        if not inspect(self._engine).has_table(GalleryItem.__tablename__):
            return {}
        stmt = (
            select(GalleryItem.sha256, func.count())
            .where(GalleryItem.camera == camera, GalleryItem.model_version == self.model_version)
            .group_by(GalleryItem.sha256)
        )
        with self._sessions() as session:
            return {str(digest): int(count) for digest, count in session.execute(stmt)}

    def disk_ids(self, modality: str) -> np.ndarray | None:
        """Ids of the saved index, or None when its files are missing or disagree with each other."""
        folder = self.data_dir / INDEXES_DIRNAME / self.model_version
        try:
            manifest = IndexManifest.read(folder / f"{modality}.json")
            data = (folder / f"{modality}.faiss").read_bytes()
            if sha256(data) != manifest.index_sha256:
                return None
            index = FaissGalleryIndex.deserialize(data, factory=manifest.factory)
        except (FileNotFoundError, CorruptIndexError):
            return None
        return np.asarray(index.ids(), dtype=np.int64)

    def stale_modalities(self) -> list[str]:
        """Modalities whose saved index does not hold exactly SQL's ids (a start would rebuild them)."""
        stale = []
        for modality in MODALITIES:
            ids = self.disk_ids(modality)
            if ids is None or not np.array_equal(ids, self.sql_ids(modality)):
                stale.append(modality)
        return stale

    def temp_files(self) -> list[Path]:
        """Temp files of interrupted index or crop writes (``.*.tmp``) under ``<data_dir>/indexes`` and
        ``<data_dir>/crops``."""
        return sorted(
            path
            for folder in (INDEXES_DIRNAME, CROPS_DIRNAME)
            for path in (self.data_dir / folder).rglob(".*.tmp")
        )

    def crop_mismatch(self) -> tuple[list[str], list[str], list[Path]]:
        """``(digests of rows without a stored crop, crops without a row, crop journals left)``."""
        rows: set[str] = set()
        if inspect(self._engine).has_table(GalleryItem.__tablename__):
            with self._sessions() as session:
                rows = {str(d) for d in session.scalars(select(GalleryItem.sha256).distinct())}
        root = self.data_dir / CROPS_DIRNAME
        files = {p.name for p in root.glob("??/*") if not p.name.startswith(".")} if root.is_dir() else set()
        journals = sorted((root / ".pending").glob("*.json")) if root.is_dir() else []
        return sorted(rows - files), sorted(files - rows), journals


# ---------------------------------------------------------------------------------------------------
# Server trials


class Server:
    """One ``vireid serve`` process on a free port; its log goes to ``<log_dir>/serve-<n>.log``."""

    def __init__(self, *, data_dir: Path, model_dir: Path, url: str, log_dir: Path) -> None:
        self._args = ["--data-dir", str(data_dir), "--model-dir", str(model_dir), "--database-url", url]
        self._log_dir = log_dir
        self._starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> dict[str, Any]:
        """Start and wait for ``/readyz`` 200; returns its body.

        Raises:
            RuntimeError: the process exited or was not ready within :data:`READY_TIMEOUT_S`.
        """
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self._starts += 1
        log = (self._log_dir / f"serve-{self._starts:03d}.log").open("wb")
        command = vireid_command("serve", "--port", str(port), "--log-level", "warning", *self._args)
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vireid serve exited with {self.proc.returncode} (see {log.name})")
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"{self.base_url}/readyz", timeout=5)
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
            time.sleep(0.1)
        raise RuntimeError(f"vireid serve not ready after {READY_TIMEOUT_S:.0f} s (see {log.name})")

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@dataclass(frozen=True)
class Acked:
    """One acknowledged crop."""

    modality: str
    sha256: str
    data: bytes


class Writer(threading.Thread):
    """Client thread: POST /gallery until the server is gone; records every acknowledged id.

    Args:
        base_url: the server.
        camera: camera name of every upload.
        first_seed: seed of its first crop (seeds then count up, so crops never repeat).
        rng: batch sizes.
    """

    def __init__(self, base_url: str, *, camera: str, first_seed: int, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self._base_url, self._camera, self.next_seed, self._rng = base_url, camera, first_seed, rng
        self.acked: dict[int, Acked] = {}
        self.refused: list[str] = []
        self.in_flight: list[str] = []  # SHA-256 of the crops of the request the kill cut off

    def run(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            for request in range(1_000_000):
                modality = MODALITIES[request % 2]
                crops = [crop_png(self.next_seed + i) for i in range(self._rng.randint(1, 6))]
                self.next_seed += len(crops)
                files = [("images", (f"c{n}.png", data, "image/png")) for n, data in enumerate(crops)]
                try:
                    response = client.post(
                        "/gallery", files=files, data={"camera": self._camera, "modality": modality}
                    )
                except httpx.TransportError:  # killed: no answer, so nothing of this request is acknowledged
                    self.in_flight = [sha256(data) for data in crops]
                    return
                if response.status_code != 201:
                    self.refused.append(f"{response.status_code} {response.text[:200]}")
                    continue
                for item_id, data in zip(response.json()["ids"], crops, strict=True):
                    self.acked[int(item_id)] = Acked(modality, sha256(data), data)


def check_after_start(
    tally: Tally,
    client: httpx.Client,
    inspector: Inspector,
    *,
    ready: dict[str, Any],
    acked: dict[int, Acked],
    recent: list[int] | None = None,
) -> None:
    """Checks after a (re)start: acknowledged ids kept, index ≡ SQL, no temp file, crops ≡ rows.

    Every id of ``acked`` must be among SQL's; those of ``recent`` (default: all) are also read back with
    ``GET /gallery/{id}`` and their SHA-256 compared.
    """
    sql = {m: inspector.sql_ids(m) for m in MODALITIES}
    stored = {int(i) for ids in sql.values() for i in ids}
    lost = [i for i in acked if i not in stored]
    for item_id in acked if recent is None else recent:
        response = client.get(f"/gallery/{item_id}")
        if response.status_code != 200 or response.json()["sha256"] != acked[item_id].sha256:
            lost.append(item_id)
    if lost:
        tally.lost += len(set(lost))
        tally.problem(f"acknowledged ids lost: {sorted(set(lost))[:20]}")
    for modality in MODALITIES:
        disk = inspector.disk_ids(modality)
        in_memory = int(ready["gallery_size"][modality])
        if disk is None or not np.array_equal(disk, sql[modality]) or in_memory != sql[modality].size:
            tally.index_mismatch += 1
            tally.problem(
                f"{modality}: SQL {sql[modality].size} ids, in memory {in_memory}, "
                f"on disk {None if disk is None else disk.size} (or different ids)"
            )
    temp = inspector.temp_files()
    if temp:
        tally.temp_files_left += len(temp)
        tally.problem(f"temp files after start: {[p.name for p in temp]}")
    check_crops(tally, inspector, when="after start")


def check_crops(tally: Tally, inspector: Inspector, *, when: str) -> None:
    """Every row's crop is stored, every stored crop has a row, no crop journal is left."""
    missing, orphans, journals = inspector.crop_mismatch()
    if missing or orphans or journals:
        tally.crop_mismatch += len(missing) + len(orphans) + len(journals)
        tally.problem(
            f"crops {when}: {len(missing)} rows without crop, {len(orphans)} crops without row, "
            f"{len(journals)} journals left"
        )


def probe_search(tally: Tally, client: httpx.Client, acked: dict[int, Acked], rng: random.Random) -> None:
    """Search for a few acknowledged crops (own modality); each must come back among the top 10."""
    for item_id in rng.sample(sorted(acked), min(SEARCH_PROBES, len(acked))):
        item = acked[item_id]
        response = client.post(
            "/search",
            files={"image": ("q.png", item.data, "image/png")},
            data={"modality": item.modality, "target_modality": item.modality, "k": "10"},
        )
        if response.status_code != 200:
            tally.errors += 1
            tally.problem(f"search answered {response.status_code}: {response.text[:200]}")
        elif item_id not in [m["id"] for m in response.json()["matches"]]:
            tally.search_missed += 1
            tally.problem(f"search for acknowledged id {item_id} did not find it")


def query_results(client: httpx.Client, seed: int) -> list[list[tuple[int, float]]]:
    """``(id, score)`` lists of :data:`QUERIES` fixed crops, each searched in both directions."""
    results = []
    for n in range(QUERIES):
        modality = MODALITIES[n % 2]
        response = client.post(
            "/search",
            files={"image": ("q.png", crop_png(seed + n), "image/png")},
            data={"modality": modality, "k": "20"},
        )
        response.raise_for_status()
        results.append([(int(m["id"]), float(m["score"])) for m in response.json()["matches"]])
    return results


def kill_trial(
    tally: Tally, server: Server, inspector: Inspector, *, trial: int, seed: int, rng: random.Random
) -> tuple[dict[int, Acked], int]:
    """Writes against the running server, SIGKILL after a random delay; returns (acknowledged, next seed)."""
    writer = Writer(server.base_url, camera=f"srv{trial}", first_seed=seed, rng=rng)
    writer.start()
    time.sleep(rng.uniform(0.2, MAX_KILL_DELAY_S))
    server.stop(signal.SIGKILL)
    writer.join(timeout=60)
    for refusal in writer.refused:
        tally.errors += 1
        tally.problem(f"POST /gallery refused: {refusal}")
    tally.killed_in_save += int(bool(inspector.temp_files()))
    tally.stale_index_at_kill += int(bool(inspector.stale_modalities()))
    stored = inspector.rows_per_sha(f"srv{trial}")
    committed = sum(digest in stored for digest in writer.in_flight)
    if 0 < committed < len(writer.in_flight):
        tally.partial_requests += 1
        tally.problem(f"{committed} of the {len(writer.in_flight)} images of the cut-off request stored")
    tally.unacked_committed += int(bool(writer.in_flight) and committed == len(writer.in_flight))
    logger.info("server trial %d: %d ids acknowledged before SIGKILL", trial, len(writer.acked))
    return writer.acked, writer.next_seed


def final_restarts(tally: Tally, server: Server, inspector: Inspector, *, seed: int) -> None:
    """Identical search results across a graceful, a kill -9 and a rebuild-from-SQL restart."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        before = query_results(client, seed)
    for how in ("graceful", "kill -9", "rebuild from SQL"):
        code = server.stop(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        if how != "kill -9" and code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after shutdown
            tally.errors += 1
            tally.problem(f"vireid serve exited with {code} on SIGTERM")
        if how == "rebuild from SQL":
            shutil.rmtree(inspector.data_dir / INDEXES_DIRNAME)
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            after = query_results(client, seed)
        if after != before:
            tally.results_changed += 1
            tally.problem(f"search results changed across a {how} restart")


def run_server_trials(args: argparse.Namespace, work: Path, model_dir: Path, version: str) -> Tally:
    """``args.trials`` kill -9 trials of ``vireid serve`` under writes, then the restart comparison."""
    tally = Tally("server", "postgresql" if args.database_url else "sqlite")
    rng, started = random.Random(args.seed), time.monotonic()
    data_dir = work / "server" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with database(args.database_url, data_dir=data_dir, kind="server") as url:
        inspector = Inspector(data_dir, url, version)
        server = Server(data_dir=data_dir, model_dir=model_dir, url=url, log_dir=data_dir.parent)
        all_acked: dict[int, Acked] = {}
        seed = args.seed * 1_000_000
        try:
            server.start()
            for trial in range(args.trials):
                acked, seed = kill_trial(tally, server, inspector, trial=trial, seed=seed, rng=rng)
                earlier = rng.sample(sorted(all_acked), min(GET_EARLIER, len(all_acked)))
                all_acked.update(acked)
                ready = server.start()
                with httpx.Client(base_url=server.base_url, timeout=30) as client:
                    recent = [*acked, *earlier]
                    check_after_start(tally, client, inspector, ready=ready, acked=all_acked, recent=recent)
                    probe_search(tally, client, acked, rng)
                tally.trials += 1
            final_restarts(tally, server, inspector, seed=seed)
        except (RuntimeError, httpx.HTTPError, subprocess.SubprocessError, SQLAlchemyError) as exc:
            tally.errors += 1
            tally.problem(f"server trials stopped: {exc}")
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop(signal.SIGTERM)
            inspector.close()
    tally.acknowledged = len(all_acked)
    tally.wall_s = time.monotonic() - started
    return tally


# ---------------------------------------------------------------------------------------------------
# Ingest trials


def write_crops(folder: Path, *, count: int, first_seed: int) -> dict[str, str]:
    """``count`` fresh crops as PNG files; returns SHA-256 -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for n in range(count):
        data = crop_png(first_seed + n)
        (folder / f"{n:04d}.png").write_bytes(data)
        digests[sha256(data)] = f"{n:04d}.png"
    return digests


def ingest_command(
    folder: Path, *, camera: str, modality: str, data_dir: Path, model_dir: Path, url: str
) -> list[str]:
    """``vireid ingest FOLDER`` for one trial (JSON report, batches of :data:`INGEST_BATCH`)."""
    return vireid_command(
        "ingest", str(folder), "--camera", camera, "--modality", modality, "--json", "--no-progress",
        "--batch-size", str(INGEST_BATCH), "--data-dir", str(data_dir), "--model-dir", str(model_dir),
        "--database-url", url,
    )  # fmt: skip


def killed_ingest(command: list[str], *, delay: float) -> tuple[bool, float]:
    """Run ``command`` and SIGKILL it after ``delay`` s; returns (was killed, seconds it ran)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=60)
        return True, time.monotonic() - started
    return False, time.monotonic() - started


def ingest_trial(
    tally: Tally,
    inspector: Inspector,
    command: list[str],
    *,
    camera: str,
    digests: dict[str, str],
    delay: float,
) -> float | None:
    """One killed and one completed ingest of a folder, then the checks; returns the full-run time if the
    first run finished before the kill."""
    killed, ran_s = killed_ingest(command, delay=delay)
    if killed:
        committed = sum(inspector.rows_per_sha(camera).values())
        tally.killed_mid_ingest += int(0 < committed < len(digests))
        tally.killed_in_save += int(bool(inspector.temp_files()))
        tally.stale_index_at_kill += int(bool(inspector.stale_modalities()))
    rerun = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=INGEST_TIMEOUT_S)
    if rerun.returncode != 0:
        tally.errors += 1
        tally.problem(f"ingest rerun exited {rerun.returncode}: {rerun.stderr[-500:]}")
        return None
    report = json.loads(rerun.stdout)
    if report["added"] + report["skipped_duplicate"] != len(digests) or report["failed"]:
        tally.errors += 1
        tally.problem(f"ingest rerun report: {report['added']} added, {report['skipped_duplicate']} dup")
    rows = inspector.rows_per_sha(camera)
    tally.lost += len(set(digests) - set(rows))
    tally.duplicates += sum(count - 1 for count in rows.values())
    if set(rows) != set(digests) or any(count != 1 for count in rows.values()):
        tally.problem(f"{camera}: {len(rows)} of {len(digests)} files stored, some more than once")
    stale = inspector.stale_modalities()
    tally.index_mismatch += len(stale)
    if stale:
        tally.problem(f"{camera}: index on disk differs from SQL after the rerun: {stale}")
    temp = inspector.temp_files()
    tally.temp_files_left += len(temp)
    if temp:
        tally.problem(f"temp files after the rerun: {[p.name for p in temp]}")
    check_crops(tally, inspector, when="after the rerun")
    tally.files += len(digests)
    logger.info("ingest trial %s: killed=%s after %.1f s", camera, killed, ran_s)
    return None if killed else ran_s


def run_ingest_trials(args: argparse.Namespace, work: Path, model_dir: Path, version: str) -> Tally:
    """``args.trials`` kill -9 trials of ``vireid ingest``, each on a fresh folder, one data dir."""
    tally = Tally("ingest", "postgresql" if args.database_url else "sqlite")
    rng, started = random.Random(args.seed + 1), time.monotonic()
    data_dir = work / "ingest" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_run_s = 8.0  # first guess at a complete run; replaced by the first measured one
    with database(args.database_url, data_dir=data_dir, kind="ingest") as url:
        inspector = Inspector(data_dir, url, version)
        try:
            for trial in range(args.trials):
                camera, folder = f"cli{trial}", work / "ingest" / "crops" / f"t{trial:03d}"
                digests = write_crops(
                    folder, count=INGEST_FILES, first_seed=(args.seed + 7) * 1_000_000 + trial * 10_000
                )
                command = ingest_command(
                    folder,
                    camera=camera,
                    modality=MODALITIES[trial % 2],
                    data_dir=data_dir,
                    model_dir=model_dir,
                    url=url,
                )
                delay = rng.uniform(0.3, full_run_s)
                measured = ingest_trial(
                    tally, inspector, command, camera=camera, digests=digests, delay=delay
                )
                full_run_s = measured or full_run_s
                tally.trials += 1
        except (subprocess.SubprocessError, ValueError, SQLAlchemyError) as exc:
            tally.errors += 1
            tally.problem(f"ingest trials stopped: {exc}")
        finally:
            inspector.close()
    tally.wall_s = time.monotonic() - started
    return tally


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10, help="trials of each kind (default 10)")
    parser.add_argument("--kinds", nargs="+", default=["server", "ingest"], choices=("server", "ingest"))
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temp folder, removed)")
    parser.add_argument(
        "--database-url", help="PostgreSQL server URL: each kind runs in a fresh schema (default SQLite)"
    )
    parser.add_argument("--seed", type=int, default=0, help="kill delays, batch sizes and crops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="vireid-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    tallies: list[Tally] = []
    try:
        model_dir = work / "model"
        version = export_tiny_model(model_dir)
        runners = {"server": run_server_trials, "ingest": run_ingest_trials}
        for kind in args.kinds:
            tallies.append(runners[kind](args, work, model_dir, version))
            print(tallies[-1].line(), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(t.failed for t in tallies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
