"""Turn ``DataConfig`` / ``EvalConfig`` into training records, a feature extractor and an evaluator."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vireid.training.engine._callbacks import EvaluateFn
from vireid.training.engine._config import DataConfig, EvalConfig
from vireid.training.engine._dist import all_gather_variable, barrier, shard_range
from vireid.training.methods._base import MODALITIES, DistInfo, ExtractFn

__all__ = ["TrainData", "make_evaluator", "make_extractor", "prepare_data"]

logger = logging.getLogger(__name__)

SYNTHETIC_SUBDIR = Path("data") / "synthetic"


@dataclass(frozen=True)
class TrainData:
    """Training records per modality (identities removed) and, when known, held-out eval sets.

    Attributes:
        root: the dataset folder actually used.
        records: modality → training ``ImageRecord`` list sorted by path, every ``pid`` set to None so no
            unsupervised method can see ground truth (kept only for a method that declares
            ``uses_identities``, i.e. ``supervised``).
        eval_query: held-out infrared records with identities (synthetic / camera folders), else None.
        eval_gallery: held-out visible records with identities, else None.
    """

    root: Path
    records: Mapping[str, Sequence[Any]]
    eval_query: Sequence[Any] | None = None
    eval_gallery: Sequence[Any] | None = None


def _synthetic_root(cfg: DataConfig, run_dir: Path, dist_info: DistInfo) -> Path:
    from vireid.training.data import generate_synthetic

    root = Path(cfg.root) if cfg.root else run_dir / SYNTHETIC_SUBDIR
    if not (root / "cameras.yaml").is_file():
        if dist_info.is_main:
            opts = cfg.synthetic
            logger.info("generating the synthetic dataset into %s", root)
            generate_synthetic(
                root,
                num_identities=opts.num_identities,
                visible_cameras=opts.visible_cameras,
                infrared_cameras=opts.infrared_cameras,
                images_per_camera=opts.images_per_camera,
                size=opts.size,
                test_fraction=opts.test_fraction,
                seed=opts.seed,
            )
        barrier()
    return root


def _folder_records(root: Path, cfg: DataConfig) -> tuple[list[Any], list[Any] | None]:
    from vireid.training.data import camera_folders

    if (root / "split.csv").is_file():
        train = camera_folders(root, cameras=cfg.cameras, split="train")
        held_out = camera_folders(root, cameras=cfg.cameras, split="test")
        return train, [r for r in held_out if r.pid is not None]
    return camera_folders(root, cameras=cfg.cameras), None


def prepare_data(
    cfg: DataConfig, *, run_dir: Path, dist_info: DistInfo, keep_identities: bool = False
) -> TrainData:
    """Read (and for ``synthetic`` generate, rank 0) the training data of ``cfg``.

    ``keep_identities`` keeps the records' ground-truth ``pid`` (the ``supervised`` method); otherwise every
    training ``pid`` is None.

    Raises:
        FileNotFoundError: a missing dataset folder or list file (from the readers).
        ValueError: a modality without training images.
    """
    from vireid.training import data as readers

    held_out: list[Any] | None = None
    if cfg.dataset in ("synthetic", "camera_folders"):
        root = _synthetic_root(cfg, run_dir, dist_info) if cfg.dataset == "synthetic" else Path(str(cfg.root))
        train, held_out = _folder_records(root, cfg)
    elif cfg.dataset == "sysu":
        root = Path(str(cfg.root))
        train = readers.sysu_mm01(root, split="train")
    else:
        root = Path(str(cfg.root))
        train = readers.regdb(root, trial=cfg.trial, split="train")
    records = {
        m: [r if keep_identities else dataclasses.replace(r, pid=None) for r in train if r.modality == m]
        for m in MODALITIES
    }
    for modality, items in records.items():
        if not items:
            raise ValueError(f"no {modality} training images in {root} ({cfg.dataset})")
    query = [r for r in held_out or [] if r.modality == "infrared"] or None
    gallery = [r for r in held_out or [] if r.modality == "visible"] or None
    logger.info(
        "training data %s at %s: %d visible / %d infrared images; held-out eval: %s",
        cfg.dataset,
        root,
        len(records["visible"]),
        len(records["infrared"]),
        f"{len(query)} IR queries / {len(gallery)} visible gallery" if query and gallery else "none",
    )
    return TrainData(root, records, query if gallery else None, gallery if query else None)


def make_extractor(
    model: nn.Module,
    records: Mapping[str, Sequence[Any]],
    *,
    batch_size: int,
    device: torch.device,
    dist_info: DistInfo,
    num_workers: int = 0,
) -> ExtractFn:
    """The per-epoch :data:`ExtractFn`: L2-normalised ``model.extract`` embeddings of the training records.

    Each rank embeds its contiguous share of the records; the shares are gathered so every rank gets
    the full (N_m, D) float32 CPU tensor in record order.
    """
    from vireid.training.evaluation import extract_features

    def extract(modality: str, *, flip: bool = False) -> Tensor:
        items = records[modality]
        start, stop = shard_range(len(items), dist_info.rank, dist_info.world_size)
        local = extract_features(
            model,
            items[start:stop],
            modality=modality,
            batch_size=batch_size,
            device=device,
            flip=flip,
            num_workers=num_workers,
        )
        feats = torch.from_numpy(local)
        if dist_info.distributed:
            feats = all_gather_variable(feats.to(device), len(items)).cpu()
        return feats

    return extract


def make_evaluator(
    data: TrainData, dataset: str, cfg: EvalConfig, *, device: torch.device, trial: int = 1
) -> EvaluateFn | None:
    """The evaluation callback's function for this data, or None when there is nothing to evaluate.

    Synthetic / camera folders with held-out identities: infrared query → visible gallery
    (``evaluate_cross_modality``). SYSU / RegDB: the benchmark protocol on ``cfg.root`` when given
    (``evaluate_model``; RegDB split ``trial``). Returned metrics are fractions: mAP, mINP, R1, R5, R10.
    """
    from vireid.training import evaluation

    if cfg.every <= 0:
        return None
    if data.eval_query and data.eval_gallery:
        query, gallery = data.eval_query, data.eval_gallery

        def held_out(model: nn.Module, out_dir: Path) -> Mapping[str, float]:
            result = evaluation.evaluate_cross_modality(
                model,
                query,
                gallery,
                batch_size=cfg.batch_size,
                device=str(device),
                flip=cfg.flip,
                out_dir=out_dir if cfg.plots else None,
            )
            return _metrics(result.to_dict())

        return held_out
    if dataset in ("sysu", "regdb") and cfg.root:
        return _benchmark_evaluator(dataset, cfg, device=device, trial=trial)
    logger.info("no evaluation data for dataset %r (set eval.root for sysu / regdb)", dataset)
    return None


def _benchmark_evaluator(dataset: str, cfg: EvalConfig, *, device: torch.device, trial: int) -> EvaluateFn:
    from vireid.training import evaluation

    def benchmark(model: nn.Module, out_dir: Path) -> Mapping[str, float]:
        results = evaluation.evaluate_model(
            model,
            dataset=dataset,
            root=str(cfg.root),
            mode=cfg.mode,
            trials=cfg.trials if dataset == "sysu" else [trial],
            out_dir=out_dir,
            batch_size=cfg.batch_size,
            device=str(device),
            flip=cfg.flip,
        )
        metrics: dict[str, float] = {}
        for name, block in results["results"].items():
            metrics.update({f"{name}/{k}": v for k, v in _metrics(block["mean"]).items()})
        return metrics

    return benchmark


def _metrics(result: Mapping[str, Any]) -> dict[str, float]:
    keys = {"mAP": "mAP", "mINP": "mINP", "r1": "R1", "r5": "R5", "r10": "R10"}
    return {new: float(result[old]) for old, new in keys.items() if old in result}
