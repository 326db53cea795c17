"""``vireid train --config FILE [key=value ...] [--run-dir DIR] [--resume]``.

Examples::

    vireid train --config configs/baseline_synthetic.yaml --run-dir runs/demo
    vireid train --config configs/baseline_sysu.yaml data.root=/data/SYSU-MM01 cluster.eps=0.6 optim.lr=3.5e-4
    vireid train --config configs/baseline_sysu.yaml --run-dir runs/sysu --resume   # continue last.pt
    torchrun --nproc_per_node 2 -m vireid.cli train --config ...                    # DDP
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model (baseline / supervised / SALCR / SDCL) from a YAML config",
        description="Train from a YAML config plus dotted overrides such as cluster.eps=0.6 optim.lr=3.5e-4.",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="output folder (default: runs/<config name>-<timestamp>; required with --resume)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from <run-dir>/checkpoints/last.pt when it exists",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from vireid.training.engine import last_checkpoint, load_config, train

    if args.resume and args.run_dir is None:
        raise ValueError("--resume needs --run-dir (the folder of the run to continue)")
    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume:
        last = last_checkpoint(run_dir)
        logger.info("resume requested: %s", f"found {last}" if last.is_file() else f"no {last}, fresh start")
    state = train(cfg, run_dir=run_dir, resume=args.resume)
    final = state.history[-1] if state.history else {}
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in final.items() if k.startswith("eval/"))
    logger.info("finished %d epochs in %s%s", state.epoch, run_dir, f" ({metrics})" if metrics else "")
    return 0
