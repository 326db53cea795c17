"""The kill -9 trial (``benchmarks/reliability.py``) at 2 trials of each kind: nothing acknowledged is lost.

About a minute per database on 2 cores (a tiny model export, one ``vireid serve`` start per server
trial plus four, two ``vireid ingest`` runs per ingest trial). The PostgreSQL case runs in a schema of
its own that the script drops.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from vireid.index import make_engine

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"
POSTGRES_URL = os.environ.get("VIREID_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.slow


def _postgres_or_skip() -> str:
    engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        if os.environ.get("VIREID_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable: {exc}")
    finally:
        engine.dispose()
    return POSTGRES_URL


def _lines(stdout: str) -> dict[str, dict[str, str]]:
    """``reliability kind=K a=1 b=2`` lines -> {K: {a: 1, b: 2}}."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("reliability "):
            fields = dict(item.split("=", 1) for item in line.split()[1:])
            rows[fields["kind"]] = fields
    return rows


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_kill_nine_trials_lose_nothing(db: str, tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--trials", "2", "--seed", "5", "--work", str(tmp_path)]
    if db == "postgresql":
        command += ["--database-url", _postgres_or_skip()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    rows = _lines(result.stdout)
    assert set(rows) == {"server", "ingest"}, result.stdout + result.stderr[-3000:]
    server, ingest = rows["server"], rows["ingest"]
    assert server["trials"] == ingest["trials"] == "2"
    assert server["db"] == ingest["db"] == db
    assert int(server["acknowledged"]) > 0
    assert int(ingest["files"]) > 0
    for row in (server, ingest):
        for key in ("lost", "index_mismatch", "temp_files_left", "errors"):
            assert row[key] == "0", (key, row, result.stderr[-3000:])
    assert server["search_missed"] == server["results_changed"] == "0"
    assert ingest["duplicates"] == "0"
    assert result.returncode == 0, result.stderr[-3000:]
