"""POST every infrared query crop of a dataset to a running vireid service and print the matches.

Used by ``scripts/demo.sh``. For a SYSU-MM01 tree the queries are the infrared test crops (cams 3, 6) and
a match is correct when it shows the same identity folder; for a camera-folder tree they are the infrared
crops, checked against ``identities.csv`` when the tree has one.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import httpx
import yaml


def _sysu_queries(root: Path) -> dict[Path, str]:
    test_ids = {int(x) for x in (root / "exp" / "test_id.txt").read_text().replace("\n", ",").split(",") if x}
    return {
        path: path.parent.name
        for cam in ("cam3", "cam6")
        for path in sorted((root / cam).glob("*/*.jpg"))
        if int(path.parent.name) in test_ids
    }


def _folder_queries(root: Path) -> dict[Path, str | None]:
    cameras = yaml.safe_load((root / "cameras.yaml").read_text())
    cameras = cameras.get("cameras", cameras)
    truth: dict[str, str] = {}
    if (root / "identities.csv").is_file():
        with (root / "identities.csv").open() as fh:
            truth = {row["path"]: row["pid"] for row in csv.DictReader(fh)}
    queries: dict[Path, str | None] = {}
    for cam, modality in cameras.items():
        if str(modality).lower() in ("infrared", "ir", "thermal", "nir"):
            for path in sorted((root / cam).rglob("*.jpg")):
                queries[path] = truth.get(path.relative_to(root).as_posix())
    return queries


def _identity(source: str | None, layout: str, root: Path, truth: dict[str, str]) -> str | None:
    if not source:
        return None
    path = Path(source)
    if layout == "sysu":
        return path.parent.name
    try:
        return truth.get(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return None


def _wait_ready(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit("demo: the service did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--layout", choices=("sysu", "cameras"), required=True)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--show", type=int, default=3, help="queries whose match lists are printed")
    args = parser.parse_args()
    queries = _sysu_queries(args.dataset) if args.layout == "sysu" else _folder_queries(args.dataset)
    truth = {}
    if args.layout == "cameras" and (args.dataset / "identities.csv").is_file():
        with (args.dataset / "identities.csv").open() as fh:
            truth = {row["path"]: row["pid"] for row in csv.DictReader(fh)}
    hits = judged = 0
    with httpx.Client(base_url=args.url, timeout=60.0) as client:
        _wait_ready(client)
        for n, (path, identity) in enumerate(queries.items()):
            with path.open("rb") as fh:
                files = {"image": (path.name, fh, "image/jpeg")}
                response = client.post("/search", files=files, data={"modality": "infrared", "k": args.k})
            response.raise_for_status()
            body = response.json()
            found = [_identity(m["source"], args.layout, args.dataset, truth) for m in body["matches"]]
            if identity is not None and found:
                judged += 1
                hits += found[0] == identity
            if n < args.show:
                print(
                    f"\nquery {path} (identity {identity}) -> {len(body['matches'])} matches "
                    f"in {body['took_ms']:.1f} ms, model {body['model']['method']} {body['model']['version']}"
                )
                for rank, (match, ident) in enumerate(zip(body["matches"], found, strict=True), start=1):
                    mark = "=" if ident == identity else " "
                    print(
                        f"  {rank:2d} {mark} score={match['score']:.4f} id={match['id']} "
                        f"camera={match['camera']} identity={ident} source={match['source']}"
                    )
    print(f"\n{len(queries)} infrared queries answered with up to {args.k} visible matches each.")
    if judged:
        print(
            f"top-1 match shows the query's identity for {hits}/{judged} queries "
            f"({100 * hits / judged:.1f} %)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
