"""``vireid evaluate``: score a training checkpoint on a benchmark test protocol (methods.md §C).

Examples::

    vireid evaluate --checkpoint runs/sysu/checkpoints/last.pt --dataset sysu --root DATA/SYSU-MM01 \
        --mode both
    vireid evaluate --checkpoint s1.pt s2.pt --dataset regdb --root /data/RegDB --trial 1 2

Writes ``results.json``, ``cmc.png`` and ``rank_list.png`` under ``--out`` and prints a summary table.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATASET_CHOICES = ("sysu", "regdb", "llcm")
MODE_CHOICES = ("all", "indoor", "both")
DEFAULT_GALLERY_TRIALS = 10
DEFAULT_BATCH_SIZE = 64
#: Test-time CMFP neighbourhood size per dataset (methods.md §A.6: 30 SYSU, 8 RegDB; LLCM uses SYSU's).
CMFP_K = {"sysu": 30, "regdb": 8, "llcm": 30}
#: Where the SALCR helper is expected to publish test-time CMFP: ``fn(q_feats, g_feats, *, k) -> distmat``.
CMFP_PROVIDER = ("vireid.training.methods", "test_time_cmfp")
_HASH_CHUNK = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``evaluate`` subcommand to the ``vireid`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on SYSU-MM01, RegDB or LLCM",
        description="Score a checkpoint on a test protocol; writes results.json, cmc.png, rank_list.png.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        type=Path,
        help="checkpoint file(s); for RegDB one per --trial split (the paper trains one model per split)",
    )
    parser.add_argument("--dataset", required=True, choices=DATASET_CHOICES)
    parser.add_argument("--root", required=True, type=Path, help="dataset root in its raw layout")
    parser.add_argument("--mode", default="all", choices=MODE_CHOICES, help="SYSU search mode (default all)")
    parser.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_GALLERY_TRIALS,
        help="SYSU/LLCM single-shot gallery trials 0..N-1 (default 10)",
    )
    parser.add_argument(
        "--trial", type=int, nargs="+", default=[1], help="RegDB split number(s) 1..10 (default 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default eval-results/...)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    parser.add_argument("--no-flip", action="store_true", help="skip flip averaging (not the protocol)")
    parser.add_argument(
        "--cmfp", action="store_true", help="also report SALCR test-time CMFP separately, if available"
    )
    parser.set_defaults(handler=_run)


def _file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (the checkpoint's model version)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _cmfp_hook(dataset: str) -> Callable[[Any, Any], Any] | None:
    import importlib

    module_name, attr = CMFP_PROVIDER
    fn = getattr(importlib.import_module(module_name), attr, None)
    if fn is None:
        logger.warning("--cmfp: %s.%s is not available yet; reporting plain results only", *CMFP_PROVIDER)
        return None
    k = CMFP_K[dataset]
    return lambda q, g: fn(q, g, k=k)


def _pairs(args: argparse.Namespace) -> list[tuple[Path, list[int]]]:
    """(checkpoint, trials) runs: RegDB pairs checkpoints with splits; other datasets take one checkpoint."""
    checkpoints = list(args.checkpoint)
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.dataset != "regdb":
        if len(checkpoints) != 1:
            raise ValueError(f"{args.dataset} takes one --checkpoint, got {len(checkpoints)}")
        return [(checkpoints[0], list(range(args.trials)))]
    if len(checkpoints) == 1:
        return [(checkpoints[0], list(args.trial))]
    if len(checkpoints) != len(args.trial):
        raise ValueError(
            f"{len(checkpoints)} checkpoints but {len(args.trial)} --trial splits; pair them one to one"
        )
    return [(ckpt, [split]) for ckpt, split in zip(checkpoints, args.trial, strict=True)]


def _evaluate_one(
    args: argparse.Namespace, checkpoint: Path, trials: list[int], out_dir: Path | None
) -> dict[str, Any]:
    from vireid.training.engine import load_model_from_checkpoint
    from vireid.training.evaluation import evaluate_model, resolve_device

    device = resolve_device(args.device)
    model, ckpt = load_model_from_checkpoint(checkpoint, map_location=device)
    metadata = {
        "checkpoint": str(checkpoint),
        "model_version": _file_digest(checkpoint),
        "method": ckpt.get("method"),
        "variant": ckpt.get("variant"),
        "epoch": ckpt.get("epoch"),
        "stage": ckpt.get("stage"),
    }
    return evaluate_model(
        model,
        dataset=args.dataset,
        root=args.root,
        mode=args.mode,
        trials=trials,
        out_dir=out_dir,
        batch_size=args.batch_size,
        device=str(device),
        flip=not args.no_flip,
        num_workers=args.workers,
        postprocess=_cmfp_hook(args.dataset) if args.cmfp else None,
        metadata=metadata,
    )


def _emit(line: str) -> None:
    """Command output (the summary table) goes to stdout; diagnostics go through logging."""
    sys.stdout.write(line + "\n")


def _print_table(results: dict[str, Any]) -> None:
    sections = [("plain", results["results"])]
    sections += [(name, block) for name, block in results.get("postprocessed", {}).items()]
    _emit(f"{'setting':<34}{'R1':>7}{'R5':>7}{'R10':>7}{'R20':>7}{'mAP':>7}{'mINP':>7}{'runs':>6}")
    for label, block in sections:
        for name, entry in block.items():
            m = entry["mean"]
            row = [100 * m.get(key, m["cmc"][-1]) for key in ("r1", "r5", "r10", "r20")]
            row += [100 * m["mAP"], 100 * m["mINP"]]
            cells = "".join(f"{v:>7.2f}" for v in row)
            label_text = name if label == "plain" else f"{name} [{label}]"
            _emit(f"{label_text:<34}{cells}{len(entry['trials']):>6}")


def _run(args: argparse.Namespace) -> int:
    from vireid.training.evaluation import merge_results, plot_cmc, write_results_json

    runs = _pairs(args)
    out_dir: Path = args.out or Path("eval-results") / f"{args.dataset}-{runs[0][0].stem}"
    if len(runs) == 1:
        results = _evaluate_one(args, runs[0][0], runs[0][1], out_dir)
    else:
        per_split = [
            _evaluate_one(args, ckpt, trials, out_dir / f"split{trials[0]}") for ckpt, trials in runs
        ]
        results = merge_results(per_split)
        curves = {name: entry["mean"]["cmc"] for name, entry in results["results"].items()}
        plot_cmc(curves, out_dir / "cmc.png", title=f"{args.dataset} CMC (mean over splits)")
        write_results_json(results, out_dir / "results.json")
    _print_table(results)
    _emit(f"results: {out_dir / 'results.json'}")
    return 0
