"""``export_model``: a trained (or randomly initialised) model → ONNX graphs + ``manifest.json``."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from vireid.serving.export._graph import GraphCheck, export_graph, fold_and_check, verify_graph
from vireid.serving.runtime import MANIFEST_FILENAME, MODALITIES, InputSpec, Manifest

__all__ = ["EXPORT_METHODS", "EXPORT_VARIANTS", "ExportResult", "export_model", "model_version_of"]

logger = logging.getLogger(__name__)

EXPORT_METHODS: tuple[str, ...] = ("salcr", "sdcl")
EXPORT_VARIANTS: tuple[str, ...] = ("full", "tiny", "mobile")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
_CFG_KEYS = ("method", "variant", "input_size", "mean", "std", "interpolation", "flip_average", "embed_dim")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        out_dir: The published model directory.
        manifest: The manifest written to ``out_dir / "manifest.json"``.
        graph_paths: Modality → ONNX file in ``out_dir``.
        exporter: ``"dynamo"`` or ``"torchscript"``: the torch exporter used.
        checks: Per-modality verification numbers (ONNX Runtime vs PyTorch, batch 1 vs batch N).
    """

    out_dir: Path
    manifest: Manifest
    graph_paths: Mapping[str, Path]
    exporter: str
    checks: Mapping[str, GraphCheck]

    @property
    def randomly_initialised(self) -> bool:
        """True when no weights were loaded (the embeddings are meaningless)."""
        return bool(self.manifest.randomly_initialised)


def model_version_of(paths: list[Path]) -> str:
    """Content hash of graph files: first 16 hex digits of SHA-256 over their bytes in order (Contract 3)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_model(
    method: str,
    *,
    variant: str,
    checkpoint: Path | None,
    backbone_weights: Path | str | None,
) -> nn.Module:
    """Build or restore the model (Contract 1 / Contract 7); raises ValueError/FileNotFoundError.

    ``backbone_weights`` is a local file or ``"imagenet"`` (the packaged MobileNetV2, mobile variants).
    """
    if checkpoint is not None:
        from vireid.training.engine import load_model_from_checkpoint  # Contract 7

        restored: nn.Module = load_model_from_checkpoint(checkpoint, map_location="cpu")[0]
        return restored
    from vireid.training.models import build_model  # Contract 1

    if isinstance(backbone_weights, Path) and not backbone_weights.is_file():
        raise FileNotFoundError(f"backbone weights not found: {backbone_weights}")
    built: nn.Module = build_model(method, variant=variant, pretrained=backbone_weights)
    return built


def _checked_cfg(model: nn.Module, *, method: str, variant: str) -> dict[str, Any]:
    cfg = getattr(model, "default_cfg", None)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{type(model).__name__} has no default_cfg dict (Contract 1)")
    missing = [k for k in _CFG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"model default_cfg lacks {missing} (Contract 1)")
    if cfg["method"] != method:
        raise ValueError(f"the model is a {cfg['method']!r} model, but --method {method!r} was asked for")
    if cfg["variant"] != variant:
        raise ValueError(f"the model is variant {cfg['variant']!r}, but variant {variant!r} was asked for")
    size = tuple(cfg["input_size"])
    if len(size) != 3 or int(size[0]) != 3:
        raise ValueError(f"default_cfg input_size must be (3, H, W), got {cfg['input_size']}")
    return dict(cfg)


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _build_manifest(
    cfg: Mapping[str, Any],
    *,
    graphs: dict[str, str],
    model_version: str,
    opset: int,
    sources: tuple[Path | None, Path | str | None],
) -> Manifest:
    _, height, width = (int(v) for v in cfg["input_size"])
    try:
        package_version = version("vireid")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        package_version = "0.0.0"
    checkpoint, pretrained = sources
    return Manifest(
        method=str(cfg["method"]),
        variant=str(cfg["variant"]),
        embedding_dim=int(cfg["embed_dim"]),
        input=InputSpec(
            height=height,
            width=width,
            mean=_triple(cfg["mean"]),
            std=_triple(cfg["std"]),
            interpolation=str(cfg["interpolation"]),
        ),
        flip_average=bool(cfg["flip_average"]),
        normalize_output=True,
        graphs=graphs,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        model_version=model_version,
        source_checkpoint=str(checkpoint) if checkpoint is not None else None,
        pretrained=str(pretrained) if pretrained is not None else None,
        randomly_initialised=checkpoint is None and pretrained is None,
        precision="fp32",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        vireid_version=package_version,
        opset=opset,
    )


def _publish(tmp_dir: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir`` with renames (same filesystem)."""
    if not out_dir.exists():
        tmp_dir.rename(out_dir)
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--force) to replace it")
    backup = out_dir.with_name(f".{out_dir.name}.old-{tmp_dir.name[-8:]}")
    out_dir.rename(backup)
    try:
        tmp_dir.rename(out_dir)
    except OSError:
        backup.rename(out_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _export_all(
    model: nn.Module,
    cfg: Mapping[str, Any],
    work: Path,
    *,
    opset: int,
    verify_rows: int,
    min_cosine: float,
    seed: int,
) -> tuple[dict[str, str], str, dict[str, GraphCheck]]:
    """Export, fold, check and verify one graph per modality into ``work``."""
    _, height, width = (int(v) for v in cfg["input_size"])
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((verify_rows, 3, height, width), dtype=np.float32)
    example = torch.from_numpy(inputs[:2].copy())
    raw_dir = work / "raw"
    raw_dir.mkdir()
    graphs: dict[str, str] = {}
    checks: dict[str, GraphCheck] = {}
    exporter = ""
    names = (INPUT_NAME, OUTPUT_NAME)
    for modality in MODALITIES:
        module = cast(Any, model).export_module(modality).eval()
        raw = raw_dir / f"{modality}.onnx"
        exporter = export_graph(module, example, raw, names=names, opset=opset)
        final = work / f"{modality}.onnx"
        fold_and_check(raw, final)
        checks[modality] = verify_graph(
            module, final, modality=modality, inputs=inputs, names=names, min_cosine=min_cosine
        )
        logger.info("verified %s: %s", modality, checks[modality])
        graphs[modality] = final.name
    shutil.rmtree(raw_dir)
    return graphs, exporter, checks


def export_model(
    method: str,
    *,
    out_dir: str | Path,
    variant: str | None = None,
    checkpoint: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    opset: int = 18,
    overwrite: bool = False,
    verify_rows: int = 17,
    min_cosine: float = 0.9999,
    seed: int = 0,
) -> ExportResult:
    """Export a model to one ONNX graph per modality plus ``manifest.json`` (Contracts 1, 3).

    The model comes from ``vireid.training.models.build_model`` (optionally with ImageNet/LUPerson
    backbone weights) or from a training checkpoint via
    ``vireid.training.engine.load_model_from_checkpoint``. Each graph is ``model.export_module(m)``
    (per-view embedding before flip averaging) with a dynamic batch axis, BN folded, checked with
    ``onnx.checker`` and verified against PyTorch in ONNX Runtime on random inputs: per-row cosine
    >= ``min_cosine``, and batch-1 rows equal to batch-``verify_rows`` rows. Everything is written
    into a temporary sibling directory that is renamed to ``out_dir`` only when all checks pass, so
    a failure never leaves a half-written model directory.

    Args:
        method: ``"salcr"`` or ``"sdcl"``.
        out_dir: Model directory to create.
        variant: ``"full"``, ``"tiny"`` or ``"mobile"``; default: the checkpoint's variant, else
            ``"full"``. When given together with a checkpoint it must match the checkpoint's.
        checkpoint: Training checkpoint (Contract 7); excludes ``backbone_weights``.
        backbone_weights: Pretrained backbone file passed to ``build_model(pretrained=...)``, or
            ``"imagenet"``. A ``mobile`` model with neither this nor a checkpoint is exported from the
            packaged ImageNet MobileNetV2 start (the manifest says ``pretrained: imagenet``).
        opset: ONNX opset version.
        overwrite: Replace an existing ``out_dir``.
        verify_rows: Rows of the random verification batch.
        min_cosine: Per-row cosine threshold for the verification.
        seed: Seed of the verification inputs.

    Returns:
        :class:`ExportResult`. Without any weights a full or tiny model is randomly initialised: a
        warning is logged and the manifest says ``randomly_initialised: true``.

    Raises:
        ValueError: bad method/variant/arguments, or the model disagrees with them.
        FileNotFoundError: missing checkpoint or weights file.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        ExportError: exporter failure, ``onnx.checker`` rejection or failed verification.
    """
    if method not in EXPORT_METHODS:
        raise ValueError(f"method must be one of {EXPORT_METHODS}, got {method!r}")
    if variant is not None and variant not in EXPORT_VARIANTS:
        raise ValueError(f"variant must be one of {EXPORT_VARIANTS}, got {variant!r}")
    if checkpoint is not None and backbone_weights is not None:
        raise ValueError("give either checkpoint or backbone_weights, not both")
    if verify_rows < 2:
        raise ValueError(f"verify_rows must be >= 2, got {verify_rows}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--force) to replace it")
    from vireid.training.models import IMAGENET  # the packaged ImageNet MobileNetV2 start (Contract 1)

    ckpt = Path(checkpoint) if checkpoint is not None else None
    weights: Path | str | None = None
    if str(backbone_weights) == IMAGENET or (
        backbone_weights is None and ckpt is None and variant == "mobile"
    ):
        weights = IMAGENET
    elif backbone_weights is not None:
        weights = Path(backbone_weights)
    model = _load_model(method, variant=variant or "full", checkpoint=ckpt, backbone_weights=weights).eval()
    if variant is None:
        variant = str(getattr(model, "default_cfg", {}).get("variant", "full"))
    cfg = _checked_cfg(model, method=method, variant=variant)
    if ckpt is None and weights is None:
        logger.warning(
            "exporting a RANDOMLY INITIALISED %s/%s model: its embeddings are meaningless", method, variant
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        graphs, exporter, checks = _export_all(
            model, cfg, work, opset=opset, verify_rows=verify_rows, min_cosine=min_cosine, seed=seed
        )
        version_hash = model_version_of([work / graphs[m] for m in MODALITIES])
        manifest = _build_manifest(
            cfg, graphs=graphs, model_version=version_hash, opset=opset, sources=(ckpt, weights)
        )
        (work / MANIFEST_FILENAME).write_text(manifest.to_json(), encoding="utf-8")
        _publish(work, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("exported %s/%s model %s to %s", method, variant, manifest.model_version, out)
    return ExportResult(
        out_dir=out,
        manifest=manifest,
        graph_paths={m: out / name for m, name in graphs.items()},
        exporter=exporter,
        checks=checks,
    )
