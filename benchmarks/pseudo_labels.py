"""Benchmark the pseudo-label step (k-reciprocal Jaccard distance + DBSCAN, methods.md §0.3).

Each case runs in a fresh subprocess, so its peak RSS (``ru_maxrss`` of that process) is its own. One line
per case::

    pseudo_labels N=20000 D=2048 device=cpu impl=sparse jaccard_s=... dbscan_s=... total_s=... \
        peak_rss_mb=... clusters=... outliers=... cpu_s=... stored_per_row=... rss_before_mb=... \
        warmup_s=... jit=cached

Before the timed step, the sparse implementation is run once on 256 points (``warmup_s``): that first call
loads the numba kernels from their on-disk cache (``jit=cached``, about a second) or compiles them
(``jit=compiled``, tens of seconds, once per installation and source change). ``--breakdown`` adds a line
of per-step wall / CPU seconds (kNN, encoding, query expansion, Jaccard, DBSCAN), timed by calling the
module's private step functions in the order :func:`jaccard_distance` does.

Features are synthetic and clustered: ``N // per_centre`` Gaussian centres, ``per_centre`` points each with
isotropic noise (``noise`` = noise std relative to the centre's per-dimension std), plus a ``background``
fraction of unclustered points, all L2-normalised.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/pseudo_labels.py                  # N = 5k, 20k, 34k, CPU (+ CUDA)
    OMP_NUM_THREADS=2 python benchmarks/pseudo_labels.py --sizes 20000 --breakdown  # + per-step times
    python benchmarks/pseudo_labels.py --sizes 20000 --reference          # also time the dense reference
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "tests" / "training" / "test_pseudo_labels.py"


def make_features(
    n: int, dim: int, *, per_centre: int, noise: float, background: float, seed: int, device: str
):
    """(n, dim) float32 L2-normalised clustered features on ``device`` (torch tensor), built in chunks."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n_background = round(background * n)
    n_clustered = n - n_background
    centres = torch.randn(max(1, n_clustered // per_centre), dim, generator=g)
    # position -> centre id (-1 = background), in a random order; filled chunk-wise, normalised in place
    owner = torch.cat([torch.arange(n_clustered) % centres.shape[0], torch.full((n_background,), -1)])
    owner = owner[torch.randperm(n, generator=g)]
    x = torch.empty(n, dim)
    for a in range(0, n, 4096):
        o = owner[a : a + 4096]
        chunk = torch.randn(o.numel(), dim, generator=g)
        clustered = o >= 0
        chunk[clustered] = centres[o[clustered]] + noise * chunk[clustered]
        x[a : a + 4096] = torch.nn.functional.normalize(chunk, dim=1)
    return x.to(device)


def _load_reference() -> Any:
    spec = importlib.util.spec_from_file_location("_pl_reference", REFERENCE_FILE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"reference implementation not found: {REFERENCE_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warm_up(dim: int, device: str) -> dict[str, Any]:
    """Load (or compile) the numba kernels and run the sparse implementation once on 256 points.

    Returns ``warmup_s`` (seconds) and ``jit``: ``compiled`` if a kernel was not in numba's disk cache.
    """
    from vireid.training import _pseudo_label_kernels as kernels
    from vireid.training.pseudo_labels import dbscan_pseudo_labels, jaccard_distance

    x = make_features(256, dim, per_centre=8, noise=1.0, background=0.05, seed=1, device=device)
    t0 = time.perf_counter()
    kernels.warm_up()
    dbscan_pseudo_labels(jaccard_distance(x), 0.6)
    seconds = time.perf_counter() - t0
    dispatchers = [getattr(kernels, name) for name in kernels.__all__ if name != "warm_up"]
    compiled = any(sum(d.stats.cache_misses.values()) for d in dispatchers)
    return {"warmup_s": seconds, "jit": "compiled" if compiled else "cached"}


def time_steps(x: Any, case: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of each step of ``jaccard_distance`` (through its step runner) and of DBSCAN."""
    from vireid.training import pseudo_labels as pl

    out: dict[str, tuple[float, float]] = {}

    def timed(name: str, fn: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        out[name] = (time.perf_counter() - t0, time.process_time() - c0)
        return result

    dist = pl._jaccard_steps(x, case["k1"], case["k2"], timed=timed)
    timed("dbscan", functools.partial(pl.dbscan_pseudo_labels, dist, case["eps"]))
    return out


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process and return its measurements."""
    import numpy as np
    import torch

    from vireid.training.pseudo_labels import dbscan_pseudo_labels, jaccard_distance

    warm = warm_up(case["dim"], case["device"]) if case["impl"] == "sparse" else {}
    x = make_features(
        case["n"],
        case["dim"],
        per_centre=case["per_centre"],
        noise=case["noise"],
        background=case["background"],
        seed=case["seed"],
        device=case["device"],
    )
    if case["device"] == "cuda":
        torch.cuda.synchronize()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    if case["impl"] == "reference":
        ref = _load_reference()
        dist = ref.reference_jaccard_distance(x.cpu().numpy(), case["k1"], case["k2"])
        t1 = time.perf_counter()
        labels = ref.reference_labels(dist, case["eps"])
        stored = float((dist < 1).sum()) / case["n"]
    else:
        dist = jaccard_distance(x, k1=case["k1"], k2=case["k2"])
        t1 = time.perf_counter()
        labels = dbscan_pseudo_labels(dist, case["eps"])
        stored = dist.nnz / case["n"]
    t2 = time.perf_counter()
    result = {
        **warm,
        "cpu_s": time.process_time() - c0,
        "jaccard_s": t1 - t0,
        "dbscan_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
        "clusters": int(labels.max()) + 1,
        "outliers": int(np.sum(labels < 0)),
        "stored_per_row": stored,
    }
    del dist  # the breakdown re-runs every step (after the peak RSS was read)
    result["steps"] = time_steps(x, case) if case.get("breakdown") and case["impl"] == "sparse" else {}
    return result


def format_line(case: dict[str, Any], result: dict[str, Any]) -> str:
    return (
        f"pseudo_labels N={case['n']} D={case['dim']} device={case['device']} impl={case['impl']} "
        f"jaccard_s={result['jaccard_s']:.2f} dbscan_s={result['dbscan_s']:.2f} "
        f"total_s={result['total_s']:.2f} peak_rss_mb={result['peak_rss_mb']:.0f} "
        f"clusters={result['clusters']} outliers={result['outliers']} "
        f"cpu_s={result['cpu_s']:.1f} stored_per_row={result['stored_per_row']:.0f} "
        f"rss_before_mb={result['rss_before_mb']:.0f}"
        + (f" warmup_s={result['warmup_s']:.2f} jit={result['jit']}" if "warmup_s" in result else "")
        + "".join(
            f"\n    step {name}: wall_s={wall:.2f} cpu_s={cpu:.2f}"
            for name, (wall, cpu) in result["steps"].items()
        )
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 34000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--per-centre", type=int, default=20)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--background", type=float, default=0.05)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", action="store_true", help="also time the dense loop reference (CPU)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="after the timed step, time each step once more (private API)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: JSON case for the child process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(run_case(case)))
        return 0
    devices = args.devices
    if devices is None:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    base = {
        "dim": args.dim,
        "per_centre": args.per_centre,
        "noise": args.noise,
        "background": args.background,
        "k1": args.k1,
        "k2": args.k2,
        "eps": args.eps,
        "seed": args.seed,
        "breakdown": args.breakdown,
    }
    cases = [{**base, "n": n, "device": d, "impl": "sparse"} for n in args.sizes for d in devices]
    if args.reference:
        cases += [{**base, "n": n, "device": "cpu", "impl": "reference"} for n in args.sizes]
    print(
        f"# cpus={os.cpu_count()} threads={os.environ.get('OMP_NUM_THREADS', 'default')} "
        f"loadavg={' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    for case in cases:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(
                f"pseudo_labels N={case['n']} device={case['device']} impl={case['impl']} FAILED: "
                f"{proc.stderr.strip().splitlines()[-1:]}",
                flush=True,
            )
            continue
        print(format_line(case, json.loads(proc.stdout.strip().splitlines()[-1])), flush=True)
    print(f"# loadavg after={' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
