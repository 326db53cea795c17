"""Library entry points: evaluate a model on a benchmark protocol or on labelled camera-folder data.

Results are a JSON-ready dict (schema below), optionally written to ``out_dir`` with two pictures::

    {
      "schema_version": 1,
      "dataset": "sysu" | "regdb" | "llcm" | "cross_modality",
      "config": {"dataset", "root", "modes", "trials", "flip", "max_rank", "batch_size", "device",
                 "model": {method, variant, embed_dim}, ... caller metadata (checkpoint, model_version)},
      "results": {setting: {"mean": {r1, r5, r10, r20, mAP, mINP, num_valid_queries, cmc},
                            "trials": [{"trial": t, ...same keys}, ...]}},
      "postprocessed": {name: {same shape as "results"}},        # only with a postprocess hook
      "timing": {"features_s" (listing + embedding), "metrics_s", "total_s", "images_embedded"},
      "files": {"results_json", "cmc_png", "rank_list_png"}       # only with out_dir
    }

All metric values are fractions in [0, 1].
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vireid.training.evaluation._features import (
    DEFAULT_BATCH_SIZE,
    FeatureStore,
    RecordLike,
    Transform,
    negative_dot_distance,
)
from vireid.training.evaluation._metrics import RankResult, mean_results, ranked_gallery
from vireid.training.evaluation._plots import plot_cmc, plot_rank_list, select_queries
from vireid.training.evaluation._protocols import (
    DATASETS,
    SYSU_MODES,
    EvalSetting,
    Postprocess,
    cross_modality_mask,
    cross_modality_result,
    exclusion_mask,
    llcm_settings,
    make_store,
    record_pids,
    regdb_settings,
    run_settings,
    summarise,
    sysu_settings,
)

__all__ = [
    "DEFAULT_TRIALS",
    "SCHEMA_VERSION",
    "evaluate_cross_modality",
    "evaluate_model",
    "merge_results",
    "write_results_json",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Gallery trials of the SYSU/LLCM single-shot protocol (§C.1).
DEFAULT_TRIALS = 10
#: RegDB split used when the caller names none.
DEFAULT_REGDB_SPLIT = 1
#: Queries drawn in a rank-list picture and gallery items shown per query.
RANK_LIST_QUERIES = 6
RANK_LIST_TOP_K = 10
RESULTS_JSON, CMC_PNG, RANK_LIST_PNG = "results.json", "cmc.png", "rank_list.png"


def write_results_json(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``results`` as indented JSON atomically (temp file in the same folder, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _trial_list(dataset: str, trials: int | Sequence[int] | None) -> list[int]:
    if trials is None:
        return [DEFAULT_REGDB_SPLIT] if dataset == "regdb" else list(range(DEFAULT_TRIALS))
    if isinstance(trials, int):
        if trials < 1:
            raise ValueError(f"trials must be >= 1, got {trials}")
        return list(range(1, trials + 1)) if dataset == "regdb" else list(range(trials))
    out = [int(t) for t in trials]
    if not out:
        raise ValueError("empty trial list")
    return out


def _settings(dataset: str, root: str | Path, *, mode: str, trials: list[int]) -> list[EvalSetting]:
    if dataset == "sysu":
        modes = list(SYSU_MODES) if mode == "both" else [mode]
        return sysu_settings(root, modes=modes, trials=trials)
    if dataset == "regdb":
        return regdb_settings(root, splits=trials)
    return llcm_settings(root, trials=trials)


def _model_info(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "default_cfg", None) or {}
    return {key: cfg.get(key) for key in ("method", "variant", "embed_dim") if key in cfg}


def _write_pictures(
    out_dir: Path,
    store: FeatureStore,
    setting: EvalSetting,
    *,
    title: str,
    curves: Mapping[str, np.ndarray],
    exclude: np.ndarray | None,
) -> dict[str, str]:
    """CMC curves + a rank list of a few queries of ``setting`` (camera filter applied)."""
    cmc_path = plot_cmc(curves, out_dir / CMC_PNG, title=f"{title} CMC (mean over trials)")
    q_feats = store.get(setting.query, setting.query_modality)
    g_feats = store.get(setting.gallery, setting.gallery_modality)
    shown = select_queries(len(setting.query), RANK_LIST_QUERIES)
    ranked = ranked_gallery(
        negative_dot_distance(q_feats[shown], g_feats),
        top_k=RANK_LIST_TOP_K,
        exclude=None if exclude is None else exclude[shown],
    )
    rank_path = plot_rank_list(
        [setting.query[i].path for i in shown],
        record_pids(setting.query)[shown].tolist(),
        [r.path for r in setting.gallery],
        record_pids(setting.gallery).tolist(),
        ranked,
        out_dir / RANK_LIST_PNG,
        title=f"{title} {setting.name}, trial {setting.trial} (green = same identity)",
    )
    return {"cmc_png": str(cmc_path), "rank_list_png": str(rank_path)}


def evaluate_model(
    model: nn.Module,
    *,
    dataset: str,
    root: str | Path,
    mode: str = "all",
    trials: int | Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    transform: Transform | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    flip: bool = True,
    num_workers: int = 0,
    max_rank: int = 20,
    postprocess: Postprocess | None = None,
    postprocess_name: str = "cmfp",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on a benchmark's test protocol (methods.md §C) and return the results dict.

    Args:
        model: model with ``extract(x, modality)`` and ``default_cfg`` (Contract 1).
        dataset: ``"sysu"``, ``"regdb"`` or ``"llcm"``.
        root: dataset root in its raw layout (read through ``vireid.training.data``).
        mode: SYSU only — ``"all"``, ``"indoor"`` or ``"both"``.
        trials: SYSU/LLCM gallery trials (an int N means 0..N-1; default 10); RegDB split numbers (an int N
            means 1..N; default split 1). All RegDB splits are scored with this one model.
        out_dir: when given, writes ``results.json``, ``cmc.png`` and ``rank_list.png`` there.
        transform: PIL → tensor eval transform; default from ``model.default_cfg`` (Contract 2).
        batch_size, device, flip, num_workers: feature extraction options (:func:`extract_features`).
        max_rank: CMC length.
        postprocess: optional ``(q_feats, g_feats) -> (Q, G) distmat`` (e.g. SALCR test-time CMFP, §A.6),
            scored as well and reported separately under ``"postprocessed"[postprocess_name]``.
        postprocess_name: key of the post-processed results.
        metadata: extra entries for ``results["config"]`` (checkpoint path, model version, epoch...).

    Returns:
        The results dict described in the module docstring.

    Raises:
        ValueError: unknown dataset/mode, bad trials, or data without identities.
        FileNotFoundError: the dataset layout is missing (from the readers).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}")
    if dataset == "sysu" and mode not in (*SYSU_MODES, "both"):
        raise ValueError(f"mode must be one of {[*SYSU_MODES, 'both']}, got {mode!r}")
    started = time.perf_counter()
    trial_list = _trial_list(dataset, trials)
    settings = _settings(dataset, root, mode=mode, trials=trial_list)
    store = make_store(
        model, transform=transform, batch_size=batch_size, device=device, flip=flip, num_workers=num_workers
    )
    plain, post, metric_s = run_settings(
        store, settings, dataset=dataset, max_rank=max_rank, postprocess=postprocess
    )
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "config": {
            "dataset": dataset,
            "root": str(root),
            "modes": sorted(plain),
            "trials": trial_list,
            "flip": flip,
            "max_rank": max_rank,
            "batch_size": batch_size,
            "device": str(device),
            "model": _model_info(model),
            **(metadata or {}),
        },
        "results": summarise(plain),
    }
    if post:
        results["postprocessed"] = {postprocess_name: summarise(post)}
    total_s = time.perf_counter() - started
    results["timing"] = {
        "features_s": round(total_s - metric_s, 3),
        "metrics_s": round(metric_s, 3),
        "total_s": round(total_s, 3),
        "images_embedded": store.num_embedded,
    }
    _log_summary(results)
    if out_dir is not None:
        _write_outputs(Path(out_dir), results, store, settings[0], dataset=dataset, plain=plain, post=post)
    return results


def _write_outputs(
    out_dir: Path,
    results: dict[str, Any],
    store: FeatureStore,
    first: EvalSetting,
    *,
    dataset: str,
    plain: Mapping[str, Sequence[tuple[int, RankResult]]],
    post: Mapping[str, Sequence[tuple[int, RankResult]]],
) -> None:
    curves = {name: mean_results([r for _, r in runs]).cmc for name, runs in plain.items()}
    curves.update({f"{name} + post": mean_results([r for _, r in runs]).cmc for name, runs in post.items()})
    files = _write_pictures(
        out_dir, store, first, title=dataset, curves=curves, exclude=exclusion_mask(dataset, first)
    )
    results["files"] = {"results_json": str(out_dir / RESULTS_JSON), **files}
    write_results_json(results, out_dir / RESULTS_JSON)
    logger.info("evaluation results written to %s", out_dir)


def _log_summary(results: Mapping[str, Any]) -> None:
    sections = [("", results["results"])]
    sections += [(f" [{k}]", v) for k, v in results.get("postprocessed", {}).items()]
    for suffix, block in sections:
        for name, entry in block.items():
            m = entry["mean"]
            logger.info(
                "%s %s%s: R1 %.2f R10 %.2f mAP %.2f mINP %.2f (%d trials)",
                results["dataset"],
                name,
                suffix,
                100 * m["r1"],
                100 * m.get("r10", m["cmc"][-1]),
                100 * m["mAP"],
                100 * m["mINP"],
                len(entry["trials"]),
            )


def evaluate_cross_modality(
    model: nn.Module,
    query_records: Sequence[RecordLike],
    gallery_records: Sequence[RecordLike],
    *,
    transform: Transform | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    flip: bool = True,
    max_rank: int = 20,
    out_dir: str | Path | None = None,
) -> RankResult:
    """Cross-modality retrieval on labelled records, e.g. synthetic held-out identities (IR query → visible).

    Standard (not deduplicated) CMC; gallery items with the query's identity *and* camera name are removed
    (the generic re-ID rule; a no-op when query and gallery cameras differ).

    Args:
        model: model with ``extract`` (Contract 1).
        query_records: records of one modality, with identities. gallery_records: likewise.
        transform, batch_size, device, flip: feature extraction options.
        max_rank: CMC length.
        out_dir: when given, also writes ``results.json``, ``cmc.png`` and ``rank_list.png`` there.

    Returns:
        :class:`RankResult` (fractions).

    Raises:
        ValueError: empty sets, mixed modalities within a set, missing identities, or no query with a match.
    """
    q_mod, g_mod = _single_modality(query_records, "query"), _single_modality(gallery_records, "gallery")
    store = make_store(model, transform=transform, batch_size=batch_size, device=device, flip=flip)
    q_feats, g_feats = store.get(query_records, q_mod), store.get(gallery_records, g_mod)
    result = cross_modality_result(q_feats, g_feats, query_records, gallery_records, max_rank=max_rank)
    if out_dir is not None:
        setting = EvalSetting(
            f"{q_mod}_to_{g_mod}", 0, tuple(query_records), tuple(gallery_records), q_mod, g_mod
        )
        results = {
            "schema_version": SCHEMA_VERSION,
            "dataset": "cross_modality",
            "config": {"flip": flip, "max_rank": max_rank, "model": _model_info(model)},
            "results": summarise({setting.name: [(0, result)]}),
        }
        files = _write_pictures(
            Path(out_dir),
            store,
            setting,
            title="cross-modality",
            curves={setting.name: result.cmc},
            exclude=cross_modality_mask(query_records, gallery_records),
        )
        results["files"] = {"results_json": str(Path(out_dir) / RESULTS_JSON), **files}
        write_results_json(results, Path(out_dir) / RESULTS_JSON)
    return result


def _single_modality(records: Sequence[RecordLike], role: str) -> str:
    if not records:
        raise ValueError(f"no {role} records")
    modalities = {r.modality for r in records}
    if len(modalities) != 1:
        raise ValueError(f"{role} records mix modalities {sorted(modalities)}; pass one modality per set")
    return modalities.pop()


def merge_results(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine result dicts of separate runs (e.g. ten RegDB splits, one model each) into one.

    Per setting, the trial lists are concatenated and the means recomputed over all of them; configs are
    kept as a list and timings summed.

    Raises:
        ValueError: no runs, or runs of different datasets.
    """
    if not runs:
        raise ValueError("merge_results needs at least one run")
    datasets = {run["dataset"] for run in runs}
    if len(datasets) != 1:
        raise ValueError(f"cannot merge runs of different datasets: {sorted(datasets)}")
    merged: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": datasets.pop(),
        "config": {"runs": [run["config"] for run in runs]},
    }
    for section in ("results", "postprocessed"):
        blocks = [run[section] for run in runs if section in run]
        if not blocks:
            continue
        if section == "results":
            merged[section] = _merge_block(blocks)
        else:
            names = {name for block in blocks for name in block}
            merged[section] = {n: _merge_block([b[n] for b in blocks if n in b]) for n in sorted(names)}
    merged["timing"] = {
        key: round(sum(run.get("timing", {}).get(key, 0) for run in runs), 3)
        for key in ("features_s", "metrics_s", "total_s", "images_embedded")
    }
    return merged


def _merge_block(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    per_setting: dict[str, list[tuple[int, RankResult]]] = {}
    for block in blocks:
        for name, entry in block.items():
            for trial in entry["trials"]:
                per_setting.setdefault(name, []).append((trial["trial"], RankResult.from_dict(trial)))
    return summarise(per_setting)
