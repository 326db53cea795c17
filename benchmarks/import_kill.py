"""Kill trial for ``vireid ingest --embeddings``: SIGKILL mid-import, rerun, nothing lost, index == SQL.

Setup: a tiny SALCR model is exported once (``vireid export --variant tiny``, randomly initialised; only
its registration and dimension matter, no image is embedded), and an ``(N, D)`` float32 ``.npy`` with its
metadata CSV is written. Each trial, on a fresh data directory: ``vireid ingest --embeddings`` runs in a
subprocess and gets SIGKILL after a random delay; right after the kill the SQL rows and the index files on
disk are compared (``stale_index_at_kill`` counts trials where they differed, i.e. the kill landed
between a commit and its index save); the import is run again to completion, and then every row must be
stored exactly once (SQL count == N, the rerun's ``added + skipped_duplicate == N`` and its duplicates
equal to the rows committed before the kill) and the index a fresh ``open_context`` loads must hold exactly
SQL's ids.

Usage::

    python benchmarks/import_kill.py --trials 5 --rows 100000 --work /tmp/import-kill

Prints one line, e.g. ``import-kill trials=5 rows=100000 committed_before_kill=[...] lost=0
index_mismatch=0 stale_index_at_kill=1 errors=0``; exit code 1 when anything was lost or inconsistent.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _vireid(*args: str) -> list[str]:
    return [sys.executable, "-m", "vireid.cli", *args]


def _state(data_dir: Path, model_dir: Path) -> tuple[set[int], set[int]]:
    """(SQL ids, index ids) as a fresh process at start-up would see them before any repair."""
    from sqlalchemy import select

    from vireid.index import FaissGalleryIndex, GalleryItem, make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{data_dir / 'gallery.db'}")
    with make_sessionmaker(engine)() as session:
        sql = {int(i) for i in session.scalars(select(GalleryItem.id))}
    engine.dispose()
    files = list((data_dir / "indexes").glob("*/visible.faiss"))
    index = {int(i) for i in FaissGalleryIndex.load(files[0]).ids()} if files else set()
    return sql, index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rows-per-commit", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vireid-import-kill"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.work / "model"
    if not (model_dir / "manifest.json").is_file():
        subprocess.run(
            _vireid("export", "--method", "salcr", "--variant", "tiny", "--out", str(model_dir)),
            check=True,
            capture_output=True,
        )
    manifest = json.loads((model_dir / "manifest.json").read_text())
    version, dim = str(manifest["model_version"]), int(manifest["embedding_dim"])
    npy, csv = args.work / "emb.npy", args.work / "emb.csv"
    vectors = np.random.default_rng(args.seed).standard_normal((args.rows, dim)).astype(np.float32)
    np.save(npy, vectors)
    csv.write_text(
        "camera,modality,source\n" + "".join(f"cam{i % 4},visible,row-{i}\n" for i in range(args.rows))
    )
    lost = mismatch = stale = errors = 0
    committed: list[int] = []
    for trial in range(args.trials):
        data_dir = args.work / f"data-{trial}"
        shutil.rmtree(data_dir, ignore_errors=True)
        common = ["--data-dir", str(data_dir), "--model-dir", str(model_dir), "--no-progress"]
        command = _vireid(
            "ingest",
            "--embeddings",
            str(npy),
            "--metadata",
            str(csv),
            "--model-version",
            version,
            "--rows-per-commit",
            str(args.rows_per_commit),
            "--json",
            *common,
        )
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sql_ids, index_ids = _state(data_dir, model_dir)
        committed.append(len(sql_ids))
        stale += int(sql_ids != index_ids)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            errors += 1
            print(f"# trial {trial}: rerun exit {done.returncode}: {done.stderr[-500:]}", flush=True)
            continue
        report = json.loads(done.stdout)
        if report["added"] + report["skipped_duplicate"] != args.rows or report["skipped_duplicate"] != len(
            sql_ids
        ):
            lost += 1
        sql_after, index_after = _state(data_dir, model_dir)
        lost += int(len(sql_after) != args.rows or not sql_ids <= sql_after)
        mismatch += int(sql_after != index_after)
        print(
            f"# trial {trial}: committed_before_kill={len(sql_ids)} index_at_kill={len(index_ids)} "
            f"rerun_added={report['added']} rerun_duplicates={report['skipped_duplicate']}",
            flush=True,
        )
    print(
        f"import-kill trials={args.trials} rows={args.rows} dim={dim} committed_before_kill={committed} "
        f"lost={lost} index_mismatch={mismatch} stale_index_at_kill={stale} errors={errors}",
        flush=True,
    )
    return 1 if lost or mismatch or errors else 0


if __name__ == "__main__":
    sys.exit(main())
