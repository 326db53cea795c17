"""Search throughput and latency of a live ``vireid serve`` with dynamic batching on and off (issue #13).

Starts ``vireid serve`` (a real exported model: by default the packaged ImageNet SALCR mobile start,
exported once into ``<work>/model``; ONNX Runtime on the CPU) on a free localhost port, ingests the
**visible** crops of a SYSU-MM01 folder through ``POST /gallery`` (once, into ``<work>/data``; later
servers reuse that data dir), then sends ``POST /search`` with the folder's **infrared** crops from
1, 8, 32 and 64 concurrent clients (each a thread with one keep-alive connection, request bodies encoded
beforehand so the clients cost little CPU). Each batching mode gets its own server process (explicit
``VIREID_EMBED_BATCHING=true`` / ``false``), all up at once on the same data dir; for each client count
the modes run in turn, so a change in the machine's load hits them alike.

Per case: throughput, p50/p95 latency, the mean batch size (from the server's ``/metrics``:
``vireid_embed_batch_size`` of the infrared queries, before and after the case) and the server
process's CPU milliseconds per request (``/proc/<pid>/stat``: what a request costs, whatever share of
a shared machine the server got). First, an in-process sweep prints the model's CPU milliseconds per
image for a few batch sizes (``--embed-batches``), at one thread and at ``--threads``: what a shared
batch saves or costs on this CPU, apart from the service.

The SYSU-MM01 images are read in place and never copied into the repository (dataset licence).

Usage::

    python benchmarks/serve.py /work/shared/data/sysu-mm01-sample --work /tmp/vireid-serve-bench

Prints one line per case, e.g. ``serve clients=32 batching=on delay_ms=2 max_batch=32 requests=128
throughput=11.7 req/s p50_ms=2473 p95_ms=3452 mean_batch=14.2 server_cpu_ms_per_req=45 errors=0 load=10.1``
(``load``: the machine's 1-minute load average after the case). Exits 1 when a search failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vireid.api import Settings

VISIBLE_CAMS = ("cam1", "cam2", "cam4", "cam5")
INFRARED_CAMS = ("cam3", "cam6")
_CLI = (sys.executable, "-m", "vireid.cli")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _crops(root: Path, cams: tuple[str, ...]) -> list[Path]:
    return sorted(p for cam in cams for p in (root / cam).glob("*/*.jpg"))


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """An encoded multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _ensure_model(work: Path) -> Path:
    model = work / "model"
    if not (model / "manifest.json").exists():
        subprocess.run(
            [*_CLI, "export", "--method", "salcr", "--variant", "mobile", "--out", str(model), "--force"],
            check=True,
        )
    return model


class Server:
    """One ``vireid serve`` subprocess on the shared data dir."""

    def __init__(
        self, *, work: Path, model: Path, mode: str, delay_ms: float, max_batch: int, threads: int
    ) -> None:
        self.mode, self.delay_ms, self.max_batch = mode, delay_ms, max_batch
        env = {
            "VIREID_EMBED_BATCHING": {"on": "true", "off": "false", "auto": "auto"}[mode],
            "VIREID_EMBED_MAX_QUEUE_DELAY_MS": str(delay_ms),
            "VIREID_EMBED_MAX_BATCH_SIZE": str(max_batch),
        }
        self.port = _free_port()
        log = (work / f"server-batching-{mode}.log").open("w")
        data_model = ["--data-dir", str(work / "data"), "--model-dir", str(model)]
        self.proc = subprocess.Popen(
            [*_CLI, "serve", "--port", str(self.port), "--log-level", "warning", *data_model],
            env={**os.environ, "OMP_NUM_THREADS": str(threads), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log.name}")
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server not ready in 180 s")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = self.connect()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def batch_stats(self, modality: str = "infrared") -> tuple[float, float]:
        """(sum, count) of ``vireid_embed_batch_size`` for ``modality``."""
        text = self.get("/metrics")[1].decode()
        values = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            for key in values:
                if line.startswith(f'vireid_embed_batch_size_{key}{{modality="{modality}"}}'):
                    values[key] = float(line.split()[-1])
        return values["sum"], values["count"]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used by the server process so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def _ingest(server: Server, crops: list[Path], *, chunk: int = 32) -> int:
    """POST the visible crops in chunks; returns the gallery size."""
    conn = server.connect()
    try:
        for start in range(0, len(crops), chunk):
            files = [
                ("images", f"{p.parent.name}_{p.name}", p.read_bytes()) for p in crops[start : start + chunk]
            ]
            body, ctype = _multipart({"camera": "sysu", "modality": "visible"}, files)
            conn.request("POST", "/gallery", body=body, headers={"Content-Type": ctype})
            response = conn.getresponse()
            text = response.read()
            if response.status != 201:
                raise RuntimeError(f"POST /gallery -> {response.status}: {text[:300]!r}")
    finally:
        conn.close()
    stats = json.loads(server.get("/gallery/stats")[1])
    return int(stats["total"])


def _run_case(server: Server, bodies: list[tuple[bytes, str]], *, clients: int, requests: int) -> dict:
    """``requests`` searches from ``clients`` threads; latencies (s), wall time (s), errors."""
    per_client = max(1, requests // clients)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        conn = server.connect()
        mine: list[float] = []
        failed = 0
        barrier.wait()
        for n in range(per_client):
            body, ctype = bodies[(index * per_client + n) % len(bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/search", body=body, headers={"Content-Type": ctype})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = server.connect()
                ok = False
            if ok:
                mine.append(time.perf_counter() - start)
            else:
                failed += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, i) for i in range(clients)]
        barrier.wait()
        start = time.perf_counter()
        for future in futures:
            future.result()
        wall = time.perf_counter() - start
    return {"latencies": latencies, "wall": wall, "errors": errors[0], "requests": per_client * clients}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _embed_sweep(model: Path, crops: list[Path], *, batches: list[int], threads: int) -> None:
    """In-process CPU milliseconds per image of the model's infrared graph (flip views included) for
    each batch size: what a shared batch saves or costs on this CPU, apart from the service."""
    from PIL import Image

    from vireid.serving.runtime import OnnxEmbedder, preprocess_batch

    embedder = OnnxEmbedder(model, device="cpu", batch_size=max(batches), intra_op_threads=threads)
    images = [Image.open(p).convert("RGB") for p in crops[: max(batches)]]
    for size in batches:
        batch = preprocess_batch(images[:size], embedder.manifest.input)
        embedder.embed_preprocessed(batch, "infrared")  # warm-up
        done, wall, cpu = 0, time.perf_counter(), time.process_time()
        while done < 64 or time.perf_counter() - wall < 2.0:
            embedder.embed_preprocessed(batch, "infrared")
            done += size
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"embed batch={size} threads={threads} cpu_ms_per_img={cpu * 1000 / done:.1f} "
            f"img_per_s={done / wall:.1f} load={os.getloadavg()[0]:.1f}",
            flush=True,
        )


def _case_line(server: Server, bodies: list[tuple[bytes, str]], *, clients: int, requests: int) -> str:
    before, cpu = server.batch_stats(), server.cpu_seconds()
    result = _run_case(server, bodies, clients=clients, requests=requests)
    after, cpu = server.batch_stats(), server.cpu_seconds() - cpu
    calls = after[1] - before[1]
    mean_batch = (after[0] - before[0]) / calls if calls else float("nan")
    lat = result["latencies"]
    return (
        f"serve clients={clients} batching={server.mode} delay_ms={server.delay_ms:g} "
        f"max_batch={server.max_batch} requests={result['requests']} "
        f"throughput={len(lat) / result['wall']:.1f} req/s p50_ms={_percentile(lat, 0.5) * 1000:.0f} "
        f"p95_ms={_percentile(lat, 0.95) * 1000:.0f} mean_batch={mean_batch:.1f} "
        f"server_cpu_ms_per_req={cpu * 1000 / max(1, len(lat)):.0f} "
        f"errors={result['errors']} load={os.getloadavg()[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="SYSU-MM01 folder (cam1..cam6); read in place")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vireid-serve-bench"))
    parser.add_argument("--model", type=Path, default=None, help="exported model; default <work>/model")
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated client counts")
    parser.add_argument(
        "--modes",
        default="on,off",
        help="batching modes (on, off, auto = the default setting); each client count runs them in turn",
    )
    parser.add_argument("--requests", type=int, default=128, help="searches per case (at least 4 per client)")
    parser.add_argument("--delay-ms", type=float, default=None, help="VIREID_EMBED_MAX_QUEUE_DELAY_MS")
    parser.add_argument("--max-batch", type=int, default=None, help="VIREID_EMBED_MAX_BATCH_SIZE")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the server")
    parser.add_argument(
        "--embed-batches", default="1,4,16,32", help="batch sizes of the in-process sweep first; '' skips it"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or _ensure_model(args.work)
    queries = _crops(args.dataset, INFRARED_CAMS)
    if not queries:
        raise SystemExit(f"no infrared crops under {args.dataset}/cam3, cam6")
    bodies = [
        _multipart({"modality": "infrared", "k": "10"}, [("image", p.name, p.read_bytes())]) for p in queries
    ]
    if args.embed_batches:
        for threads in sorted({1, args.threads}):
            sizes = [int(b) for b in args.embed_batches.split(",")]
            _embed_sweep(model, queries, batches=sizes, threads=threads)
    fields = Settings.model_fields
    delay_ms = args.delay_ms if args.delay_ms is not None else fields["embed_max_queue_delay_ms"].default
    max_batch = args.max_batch if args.max_batch is not None else fields["embed_max_batch_size"].default
    servers: list[Server] = []
    try:
        for mode in args.modes.split(","):
            server = Server(
                work=args.work,
                model=model,
                mode=mode,
                delay_ms=delay_ms,
                max_batch=max_batch,
                threads=args.threads,
            )
            servers.append(server)
            gallery = _ingest(server, _crops(args.dataset, VISIBLE_CAMS))  # the later ones find duplicates
            _run_case(server, bodies, clients=4, requests=16)  # warm-up
        print(
            f"# gallery={gallery} visible crops, {len(queries)} infrared queries, "
            f"load={os.getloadavg()[0]:.1f}"
        )
        lines = []
        for clients in (int(c) for c in args.clients.split(",")):
            for server in servers:
                lines.append(
                    _case_line(server, bodies, clients=clients, requests=max(args.requests, 4 * clients))
                )
                print(lines[-1], flush=True)
    finally:
        for server in servers:
            server.stop()
    return 1 if any(" errors=0 " not in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
