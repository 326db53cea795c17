"""Learning evidence: do SALCR and SDCL learn across modalities from the packaged ImageNet start?

For each method and seed, trains the method's mobile preset (``configs/<method>_mobile.yaml``: both stages in
one ``vireid train``) on a synthetic set generated with that seed (160 identities, 4 images per camera,
256x128; trained on its 120 train identities only), then scores three models with the standard evaluation
(``vireid.training.evaluation.evaluate_cross_modality``: held-out infrared queries -> visible gallery,
flip-averaged, identities the model never trained on):

* ``start``  - the ImageNet-initialised model (``build_model(..., pretrained="imagenet")``), no training;
* ``stage1`` - ``<run>/checkpoints/intra.pt`` (end of the intra-modality stage);
* ``stage2`` - ``<run>/checkpoints/cross.pt`` (end of the cross-modality stage); ``stage2_onnx_mAP`` scores
  the same model exported to ONNX (``<run>/model``) and embedded by the serving runtime.

Target (issue #10), on every seed: stage1 >= start + 0.02 and stage2 >= stage1 + 0.03 (mAP); aim: stage2 >=
4 x start. With ``--sysu ROOT`` both presets are also trained on a SYSU-MM01 tree's train split and scored on
its test split (all-search, 10 gallery trials) next to the ImageNet start: a report, not a gate.

Usage::

    python benchmarks/learning.py --seeds 101 102 103                 # both methods, 3 seeds each
    python benchmarks/learning.py --methods salcr --seeds 7 --work /tmp/learning
    python benchmarks/learning.py --methods salcr sdcl --seeds --sysu ../shared/data/sysu-mm01-sample

Prints one line per case, e.g. ``learning method=salcr seed=101 start_mAP=0.081 stage1_mAP=0.140
stage2_mAP=0.260 ... train_s=610 target=met``, and writes ``<work>/learning.json``. Runs that already
finished (``cross.pt`` present) are evaluated again without retraining.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vireid.training.engine import Callback

REPO = Path(__file__).resolve().parents[1]
STAGES = ("intra", "cross")
STAGE1_GAIN = 0.02
STAGE2_GAIN = 0.03


class Diagnostics(Callback):
    """Trainer callback: per-epoch pseudo-label quality against the ground truth the method never sees.

    Reads ``identities.csv`` of the training tree (path -> identity; at the first epoch, once the trainer
    has generated the tree) and, after each ``refresh``, records
    per modality the clustered fraction and cluster purity (share of clustered images whose cluster's
    majority identity is their own), and, where the stage associates the modalities (``cross_labels``), the
    association accuracy: share of images with a cross label whose label's cluster in the other modality
    has their identity as majority.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.truth: dict[str, str] | None = None
        self.rows: list[dict[str, Any]] = []

    def _pids(self, records: list[Any]) -> np.ndarray:
        if self.truth is None:
            self.root = self.root.resolve()
            with (self.root / "identities.csv").open(newline="") as fh:
                self.truth = {row["path"]: row["pid"] for row in csv.DictReader(fh)}
        rel = [Path(r.path).resolve().relative_to(self.root).as_posix() for r in records]
        return np.array([self.truth.get(p, "") for p in rel])

    @staticmethod
    def _majority(labels: np.ndarray, pids: np.ndarray) -> dict[int, str]:
        out = {}
        for label in np.unique(labels[labels >= 0]):
            values, counts = np.unique(pids[labels == label], return_counts=True)
            out[int(label)] = str(values[np.argmax(counts)])
        return out

    def before_epoch(self, trainer: Any) -> None:
        labels = trainer.labels
        pids = {m: self._pids(trainer.records[m]) for m in ("visible", "infrared")}
        majority = {m: self._majority(np.asarray(labels.labels[m]), pids[m]) for m in pids}
        row: dict[str, Any] = {"epoch": trainer.state.epoch, "stage": trainer.ctx.stage.name}
        for m, lab in labels.labels.items():
            lab = np.asarray(lab)
            kept = lab >= 0
            pure = [majority[m][int(c)] == p for c, p in zip(lab[kept], pids[m][kept], strict=True)]
            row[f"{m}_clustered"] = round(float(kept.mean()), 3)
            row[f"{m}_purity"] = round(float(np.mean(pure)) if pure else 0.0, 3)
        for m, cross in labels.cross_labels.items():
            other = "infrared" if m == "visible" else "visible"
            cross = np.asarray(cross)
            kept = cross >= 0
            right = [
                majority[other].get(int(c)) == p for c, p in zip(cross[kept], pids[m][kept], strict=True)
            ]
            row[f"{m}_assoc_acc"] = round(float(np.mean(right)) if right else 0.0, 3)
            row[f"{m}_assoc_cover"] = round(float(kept.mean()), 3)
        self.rows.append(row)
        logging.getLogger("learning").info("diagnostics %s", row)


def _train(method: str, run_dir: Path, overrides: list[str], truth_root: Path | None) -> tuple[float, list]:
    """Train the method's mobile preset in this process; (wall seconds, per-epoch diagnostics).

    A run whose ``cross.pt`` exists is not trained again (0 s, no diagnostics).
    """
    from vireid.training.engine import load_config, train

    if (run_dir / "checkpoints" / "cross.pt").is_file():
        return 0.0, []
    cfg = load_config(REPO / "configs" / f"{method}_mobile.yaml", overrides)
    callbacks = []
    if truth_root is not None:
        callbacks.append(Diagnostics(truth_root))
    handler = logging.FileHandler(run_dir.parent / f"{run_dir.name}.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    previous = root_logger.level
    root_logger.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        train(cfg, run_dir=run_dir, resume=True, extra_callbacks=callbacks)
    finally:
        root_logger.setLevel(previous)
        root_logger.removeHandler(handler)
    diagnostics = callbacks[0].rows if callbacks else []
    return time.perf_counter() - start, diagnostics


def _models(method: str, run_dir: Path) -> dict[str, Any]:
    """The three models of one run: ImageNet start (at the run's input size), stage 1, stage 2 (eval mode)."""
    from vireid.training.engine import load_model_from_checkpoint
    from vireid.training.models import build_model

    trained = {
        name: load_model_from_checkpoint(run_dir / "checkpoints" / f"{stage}.pt")[0]
        for name, stage in zip(("stage1", "stage2"), STAGES, strict=True)
    }
    _, height, width = trained["stage2"].default_cfg["input_size"]
    start = build_model(method, variant="mobile", pretrained="imagenet", input_size=(height, width))
    return {"start": start.eval(), **trained}


def _exported_mAP(method: str, run_dir: Path, query: list[Any], gallery: list[Any]) -> float:
    """mAP of ``cross.pt`` exported to ONNX (``vireid export``'s code) and embedded by the serving runtime.

    The same records and metric code (``cross_modality_result``) as the PyTorch evaluation; the ONNX Runtime
    embedder preprocesses and flip-averages as the service does.
    """
    from PIL import Image

    from vireid.serving.export import export_model
    from vireid.serving.runtime import OnnxEmbedder
    from vireid.training.evaluation._protocols import cross_modality_result

    out = run_dir / "model"
    export_model(method, out_dir=out, checkpoint=run_dir / "checkpoints" / "cross.pt", overwrite=True)
    embedder = OnnxEmbedder(out, device="cpu")

    def embed(records: list[Any], modality: str) -> np.ndarray:
        images = []
        for record in records:
            with Image.open(record.path) as image:
                images.append(image.convert("RGB"))
        return embedder.embed(images, modality)

    q, g = embed(query, "infrared"), embed(gallery, "visible")
    return float(cross_modality_result(q, g, query, gallery, max_rank=20).mAP)


def _synthetic_case(method: str, seed: int, work: Path, extra: list[str]) -> dict[str, Any]:
    from vireid.training.data import camera_folders
    from vireid.training.evaluation import evaluate_cross_modality

    run_dir = work / f"{method}-seed{seed}"
    root = run_dir / "data" / "synthetic"  # generated by the trainer (data.synthetic, this seed)
    overrides = [f"seed={seed}", f"data.synthetic.seed={seed}", "eval.every=0", *extra]
    train_s, diagnostics = _train(method, run_dir, overrides, root)
    held_out = [r for r in camera_folders(root, split="test") if r.pid is not None]
    query = [r for r in held_out if r.modality == "infrared"]
    gallery = [r for r in held_out if r.modality == "visible"]
    row: dict[str, Any] = {"method": method, "seed": seed, "train_s": round(train_s, 1)}
    for name, model in _models(method, run_dir).items():
        result = evaluate_cross_modality(model, query, gallery, flip=True)
        row[f"{name}_mAP"] = round(float(result.mAP), 4)
        row[f"{name}_R1"] = round(float(result.cmc[0]), 4)
    row["stage2_onnx_mAP"] = round(_exported_mAP(method, run_dir, query, gallery), 4)
    row["queries"], row["gallery"] = len(query), len(gallery)
    met = (
        row["stage1_mAP"] >= row["start_mAP"] + STAGE1_GAIN
        and row["stage2_mAP"] >= row["stage1_mAP"] + STAGE2_GAIN
    )
    row["target"] = "met" if met else "missed"
    row["stage2_over_start"] = round(row["stage2_mAP"] / max(row["start_mAP"], 1e-9), 2)
    last = {d["stage"]: d for d in diagnostics}
    for stage, d in last.items():  # pseudo-label quality at the last epoch of each stage
        for key, value in d.items():
            if key not in ("epoch", "stage"):
                row[f"{stage}_{key}"] = value
    row["diagnostics"] = diagnostics
    return row


def _sysu_case(method: str, root: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    from vireid.training.evaluation import evaluate_model

    run_dir = work / f"{method}-sysu"
    overrides = ["data.dataset=sysu", f"data.root={root}", "eval.every=0", *extra]
    train_s, _ = _train(method, run_dir, overrides, None)
    row: dict[str, Any] = {"method": method, "dataset": "sysu-all-search", "train_s": round(train_s, 1)}
    models = _models(method, run_dir)
    for name in ("start", "stage2"):
        results = evaluate_model(models[name], dataset="sysu", root=root, mode="all", trials=10)
        mean = results["results"]["all"]["mean"]
        row[f"{name}_R1"], row[f"{name}_mAP"] = round(mean["r1"], 4), round(mean["mAP"], 4)
    return row


def _line(row: dict[str, Any]) -> str:
    return "learning " + " ".join(f"{key}={value}" for key, value in row.items() if key != "diagnostics")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=["salcr", "sdcl"], choices=("salcr", "sdcl"))
    parser.add_argument("--seeds", nargs="*", type=int, default=[101, 102, 103], help="synthetic seeds")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "learning", help="run folders")
    parser.add_argument("--sysu", type=Path, help="also train/evaluate on this SYSU-MM01 tree (report)")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. cluster.k1=8")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console keeps warnings; run logs get INFO
        handler.setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            rows.append(_synthetic_case(method, seed, args.work, args.overrides))
            print(_line(rows[-1]), flush=True)
        if args.sysu is not None:
            rows.append(_sysu_case(method, args.sysu.resolve(), args.work, args.overrides))
            print(_line(rows[-1]), flush=True)
    (args.work / "learning.json").write_text(json.dumps(rows, indent=2) + "\n")
    missed = [r for r in rows if r.get("target") == "missed"]
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
