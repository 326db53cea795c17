"""Peak server memory under pixel-heavy uploads (issue #15, item 6): what small request bodies can cost.

Starts ``vireid serve`` (a real exported model: the packaged ImageNet SALCR mobile start, ONNX Runtime
on the CPU) on a free localhost port and sends, each case against a fresh server process so the peak
belongs to that case alone:

* ``gallery-default``: one ``POST /gallery`` of 24 single-colour 6000×6000 PNGs (a ~3 MB body that
  decodes to 2.6 GB of RGB) with the default settings — refused with 413 from the image headers;
* ``gallery-chunked``: the same request with ``VIREID_MAX_REQUEST_PIXELS`` raised so that it is
  accepted — the images are decoded, embedded and released in chunks under ``VIREID_MAX_DECODE_PIXELS``;
* ``search-concurrent``: 8 concurrent ``POST /search`` with one such image each.

After each case the server must still answer a small search. Peak RSS is the server process's
``VmHWM`` (``/proc/<pid>/status``, Linux only); ``baseline`` is its VmHWM after start-up and one small
warm-up search. Target (issue #15): a 24-image request keeps the server's peak RSS under 1.2 GB.

Usage::

    python benchmarks/upload_memory.py --work /tmp/upload-memory

Prints one line per case, e.g. ``upload_memory case=gallery-default status=413 requests=1
baseline_rss_mb=310 peak_rss_mb=318 wall_s=0.4 answering=yes``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

SIDE = 6000
COUNT = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc status (Linux only)")


def _png(colour: tuple[int, int, int], side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _small_png() -> bytes:
    return _png((90, 120, 150), 64)


def _ensure_model(work: Path) -> Path:
    model = work / "model"
    if not (model / "manifest.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vireid.cli",
                "export",
                "--method",
                "salcr",
                "--variant",
                "mobile",
                "--out",
                str(model),
                "--force",
            ],
            check=True,
        )
    return model


class Server:
    """One ``vireid serve`` subprocess on a fresh data dir."""

    def __init__(self, work: Path, model: Path, name: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        data = work / f"data-{name}"
        shutil.rmtree(data, ignore_errors=True)  # a fresh gallery: nothing is skipped as a duplicate
        log = (work / f"server-{name}.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vireid.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data),
                "--model-dir",
                str(model),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log.name}")
            time.sleep(0.5)
        raise RuntimeError("server not ready in 120 s")

    def search(self, data: bytes) -> int:
        response = httpx.post(
            f"{self.url}/search", files={"image": ("q.png", data, "image/png")}, data={"k": "5"}, timeout=600
        )
        return response.status_code

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def _gallery(server: Server, images: list[bytes]) -> list[int]:
    files = [("images", (f"big{n}.png", data, "image/png")) for n, data in enumerate(images)]
    response = httpx.post(
        f"{server.url}/gallery", files=files, data={"camera": "c1", "modality": "visible"}, timeout=1200
    )
    return [response.status_code]


def _concurrent_search(server: Server, images: list[bytes]) -> list[int]:
    with ThreadPoolExecutor(len(images)) as pool:
        return list(pool.map(server.search, images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vireid-upload-memory"))
    parser.add_argument("--cases", default="gallery-default,gallery-chunked,search-concurrent")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    model = _ensure_model(args.work)
    big = [_png((n * 10 % 256, 255 - n * 10 % 256, 128), SIDE) for n in range(COUNT)]
    print(
        f"# {COUNT} PNGs of {SIDE}x{SIDE}: {sum(map(len, big)) / 1e6:.2f} MB encoded, "
        f"{COUNT * SIDE * SIDE * 3 / 1e9:.2f} GB as RGB",
        flush=True,
    )
    cases = {
        "gallery-default": ({}, lambda s: _gallery(s, big)),
        "gallery-chunked": ({"VIREID_MAX_REQUEST_PIXELS": str(10**10)}, lambda s: _gallery(s, big)),
        "search-concurrent": ({}, lambda s: _concurrent_search(s, big[:8])),
    }
    failed = False
    for name in args.cases.split(","):
        env, run = cases[name]
        server = Server(args.work, model, name, env)
        try:
            server.search(_small_png())
            baseline = _vm_hwm_mb(server.proc.pid)
            start = time.perf_counter()
            codes = run(server)
            wall = time.perf_counter() - start
            peak = _vm_hwm_mb(server.proc.pid)
            answering = server.search(_small_png()) == 200
        finally:
            server.stop()
        status = ",".join(sorted({str(c) for c in codes}))
        failed |= not answering or any(c >= 500 for c in codes) or peak > 1200
        print(
            f"upload_memory case={name} status={status} requests={len(codes)} baseline_rss_mb={baseline:.0f} "
            f"peak_rss_mb={peak:.0f} wall_s={wall:.1f} answering={'yes' if answering else 'no'}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
