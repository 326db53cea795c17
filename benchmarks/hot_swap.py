"""Model lifecycle trial (issue #13): reindex a second model while the live service answers searches,
activate it, and check that no search failed and that the answers switch models and stay switched.

Steps, against a real ``vireid serve`` process and the real command line:

1. export two models: SALCR mobile and SDCL mobile from the packaged ImageNet start (different methods
   and embedding sizes; no training needed for a lifecycle trial);
2. serve the first one (API key set) and ingest the visible test crops of a SYSU-MM01 tree with
   ``vireid ingest`` beside it;
3. start client threads that POST the tree's infrared test crops to ``/search`` without pause;
4. ``vireid reindex --model <second>`` while they run, then ``POST /models/<second>/activate``;
5. stop the clients; restart the service and read the active version.

Prints one line, e.g. ``hot_swap searches=812 failed=0 first=... second=... sent_before_switch=...
sent_after_switch=... old_after_switch=0 reindex_s=41.0 activate_ms=950 restart_active=second``
(``old_after_switch``: searches sent after the activation answered that still named the old model).
Exit code 1 when any search failed, such a search named the old model, or the restart lost the choice.

Usage::

    python benchmarks/hot_swap.py --sysu ../shared/data/sysu-mm01-sample --work /tmp/hot-swap
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

KEY = "trial-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "vireid.cli", *args], check=True, env=env)


def _serve(work: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (work / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vireid.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"vireid serve exited with {proc.returncode}; see {work / 'serve.log'}")
        time.sleep(0.5)
    raise RuntimeError("vireid serve not ready in 180 s")


def _version(model_dir: Path) -> str:
    import json

    return str(json.loads((model_dir / "manifest.json").read_text())["model_version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sysu", type=Path, required=True, help="SYSU-MM01 tree (official layout)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vireid-hot-swap"))
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    work = args.work
    shutil.rmtree(work / "data", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "VIREID_DATA_DIR": str(work / "data"),
        "VIREID_MODEL_DIR": str(work / "first"),
        "VIREID_API_KEY": KEY,
    }
    for name, method in (("first", "salcr"), ("second", "sdcl")):
        if not (work / name / "manifest.json").is_file():
            _cli(
                "export",
                "--method",
                method,
                "--variant",
                "mobile",
                "--out",
                str(work / name),
                "--force",
                env=env,
            )
    first, second = _version(work / "first"), _version(work / "second")
    queries = sorted(p for cam in ("cam3", "cam6") for p in (args.sysu / cam).rglob("*.jpg"))[:40]
    port = _free_port()
    server = _serve(work, port, env)
    url = f"http://127.0.0.1:{port}"
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()
    switched_at: list[float] = []

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n = offset
            while not stop.is_set():
                path = queries[n % len(queries)]
                n += 1
                sent = time.monotonic()
                response = http.post("/search", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
                version = response.json()["model"]["version"] if response.status_code == 200 else ""
                results.append((sent, response.status_code, version))

    try:
        _cli(
            "ingest",
            "--layout",
            "sysu-mm01",
            str(args.sysu),
            "--split",
            "test",
            "--cameras",
            "1,2,4,5",
            "--no-progress",
            env=env,
        )
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        _cli("reindex", "--model", str(work / "second"), "--no-progress", env=env)
        reindex_s = time.perf_counter() - start
        start = time.perf_counter()
        response = httpx.post(f"{url}/models/{second}/activate", headers={"X-API-Key": KEY}, timeout=300)
        activate_ms = (time.perf_counter() - start) * 1000
        switched_at.append(time.monotonic())
        if response.status_code != 200:
            raise RuntimeError(f"activate answered {response.status_code}: {response.text}")
        time.sleep(10)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
    restarted = _serve(work, port, env)
    try:
        restart_active = httpx.get(f"{url}/readyz", timeout=5).json()["model"]["version"]
    finally:
        restarted.terminate()
        restarted.wait(timeout=60)
    failed = sum(1 for _, code, _ in results if code != 200)
    # Requests sent after the activation answered must all use the new model (those in flight during the
    # switch may finish on the old one: that is the contract).
    after = [v for t, code, v in results if switched_at and t > switched_at[0] and code == 200]
    old_after = sum(1 for v in after if v == first)
    print(
        f"hot_swap searches={len(results)} failed={failed} first={first} second={second} "
        f"sent_before_switch={len(results) - len(after)} sent_after_switch={len(after)} "
        f"old_after_switch={old_after} reindex_s={reindex_s:.1f} activate_ms={activate_ms:.0f} "
        f"restart_active={'second' if restart_active == second else restart_active}",
        flush=True,
    )
    return 1 if failed or old_after or restart_active != second else 0


if __name__ == "__main__":
    raise SystemExit(main())
