"""MobileNetV2 backbones for SALCR and SDCL (``variant: mobile``): CPU / edge hosts and learning evidence.

The trunk is the ``features`` part of MobileNetV2 (Sandler et al., CVPR 2018; width 1.0), laid out with the
original block indices so the packaged ImageNet weights (``load_mobilenetv2_imagenet``) map by name:

====  ==========================================  ======  ==========================
idx   block                                       out C   stride (cumulative)
====  ==========================================  ======  ==========================
0     conv 3x3/2 → BN → ReLU6                     32      2
1     inverted residual t=1                        16      2
2-3   inverted residual t=6                        24      4
4-6   inverted residual t=6                        32      8
7-10  inverted residual t=6                        64      16
11-13 inverted residual t=6                        96      16
14-16 inverted residual t=6 (first: stride 1)      160     16 (ImageNet: 32)
17    inverted residual t=6                        320     16
18    conv 1x1 → BN → ReLU6                        1280    16
====  ==========================================  ======  ==========================

Block 14 runs at stride 1 instead of 2 (the re-ID ``last_stride = 1`` of the ResNet-50, methods.md §A.1), so
the last map is H/16 × W/16: 288×144 gives 18×9, 192×96 gives 12×6. Blocks 0–3 (stride 4, the analogue of
the ResNet stem conv1 → maxpool) are modality-specific: one ``visible_stem`` and one ``thermal_stem``, both
initialised from the same ImageNet tensors; blocks 4–18 are shared.

* :class:`TwoStreamMobileNetV2` — SALCR (methods.md §A.1) on this backbone: the GeM / BN-neck global head
  and the 3-stripe FGSAL part head of :class:`TwoStreamResNet50`, sized to C = 1280. DAGL, FGSAL and GPCR
  are unchanged.
* :class:`MobileSDCL` — SDCL (methods.md §B.1) on this backbone. The **deep** feature is block 18's map
  (the last stage); the **shallow** feature taps block 10, the end of the first stride-16 stage (64 channels,
  the same H/16 × W/16 grid as the deep map). That is the CNN analogue of SDCL's shallow tokens: the ViT's
  ``x_s`` are the patch tokens on the same 18×9 grid as the deep tokens, taken before any transformer block;
  block 10 is the earliest map of that grid, before the 96/160/320-channel stages that make up the deep
  path. The shallow head ``b2`` is a 1×1 conv 64 → 1280 + BN + ReLU6 (block 18's shape; freshly initialised,
  as it has no ImageNet counterpart), the deep head ``b1`` is block 18 itself (ImageNet). Both heads: GeM
  (p = 3) → BN-neck (bias frozen) → ``f_d``, ``f_s`` (1280 each). Test embedding = normalised flip-averaged
  ``[f_d; f_s]`` (2560-d), as §B.6. CNL and CRA are unchanged. Unlike SDCL's ``b2``, the shallow head does
  not see the deep cls token: a CNN has none, and feeding deep features in would make ``f_s`` a deep feature.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import (
    ExtractModule,
    bn_neck,
    check_eval,
    check_images,
    check_modality,
    contract_cfg,
)
from ._resnet_two_stream import TwoStreamResNet50, gem_pool

logger = logging.getLogger(__name__)

# (expansion t, output channels c, repeats n, stride s) of MobileNetV2's inverted-residual stages.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280
NUM_BLOCKS = 19  # features.0 … features.18


@dataclass(frozen=True)
class MobileNetV2Config:
    """Architecture of the MobileNetV2 two-stream models.

    Attributes:
        variant: recorded in ``default_cfg`` (``"mobile"``).
        input_size: (H, W) in pixels; H/16 must be divisible by ``num_parts`` for SALCR.
        stem_blocks: blocks ``features.0 … features.{stem_blocks-1}`` are modality-specific (4: stride 4).
        last_stride: stride of block 14 (1 keeps the last map at H/16; 2 is ImageNet's H/32).
        shallow_block: SDCL only: index of the block whose output feeds the shallow head (10).
        num_parts: P, horizontal stripes of the SALCR part head.
        gem_p: GeM exponent (fixed).
        gem_eps: added to the mean before the 1/p root.
        neck_std: BN-neck weight init ~ N(1, neck_std).
    """

    variant: str = "mobile"
    input_size: tuple[int, int] = (288, 144)
    stem_blocks: int = 4
    last_stride: int = 1
    shallow_block: int = 10
    num_parts: int = 3
    gem_p: float = 3.0
    gem_eps: float = 1e-12
    neck_std: float = 0.01

    @property
    def out_channels(self) -> int:
        """C of the last map (1280)."""
        return LAST_CHANNELS


MOBILE_VARIANTS: dict[str, MobileNetV2Config] = {"mobile": MobileNetV2Config()}


def _conv_bn(in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """conv (bias-free) → BN → ReLU6, keys ``0.*``, ``1.*`` as in MobileNetV2."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: [1×1 expand →] 3×3 depthwise → 1×1 linear projection (+ identity).

    Submodule names (``conv.0`` … ``conv.7``) follow the original MobileNetV2 code, so its ImageNet state dict
    loads by name.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out")
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H/stride, W/stride)."""
        out: Tensor = self.conv(x)
        return x + out if self.use_residual else out


def mobilenet_v2_blocks(*, last_stride: int = 1) -> list[nn.Module]:
    """The 19 ``features`` blocks of MobileNetV2 (width 1.0), block 14 at stride ``last_stride``.

    Args:
        last_stride: 1 (re-ID, last map at H/16) or 2 (ImageNet, H/32).

    Returns:
        ``features.0`` … ``features.18`` as a list (randomly initialised).

    Raises:
        ValueError: ``last_stride`` not in {1, 2}.
    """
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    blocks: list[nn.Module] = [_conv_bn(3, FIRST_CHANNELS, kernel_size=3, stride=2)]
    channels = FIRST_CHANNELS
    for t, c, n, s in _STAGES:
        for i in range(n):
            stride = s if i == 0 else 1
            if len(blocks) == 14:
                stride = last_stride
            blocks.append(InvertedResidual(channels, c, stride=stride, expand_ratio=t))
            channels = c
    blocks.append(_conv_bn(channels, LAST_CHANNELS, kernel_size=1))
    return blocks


def _indexed(blocks: list[nn.Module], start: int, stop: int) -> nn.Sequential:
    """``nn.Sequential`` of ``blocks[start:stop]`` whose children keep their MobileNetV2 indices as names."""
    return nn.Sequential(OrderedDict((str(i), blocks[i]) for i in range(start, stop)))


class TwoStreamMobileNetV2(TwoStreamResNet50):
    """SALCR on MobileNetV2: separate ``visible_stem`` / ``thermal_stem`` (blocks 0–3), shared ``trunk``
    (blocks 4–18, stride 16), and the heads, forwards and ``extract`` of :class:`TwoStreamResNet50`
    (methods.md §A.1) with C = 1280.

    Args:
        cfg: architecture; ``MOBILE_VARIANTS["mobile"]`` (288×144 → 18×9×1280) when None.

    Raises:
        ValueError: H is not a multiple of 16 with H/16 divisible by ``cfg.num_parts``, or W not a
            multiple of 8 (the last map is H/16 × ceil(W/16)).
    """

    imagenet_parts: tuple[str, ...] = ("visible_stem", "thermal_stem", "trunk")

    def __init__(self, cfg: MobileNetV2Config | None = None) -> None:
        mobile = cfg if cfg is not None else MOBILE_VARIANTS["mobile"]
        h, w = mobile.input_size
        if h % 16 or w % 8 or (h // 16) % mobile.num_parts:
            raise ValueError(
                f"input size {h}x{w}: H must be a multiple of 16 with H/16 divisible by num_parts="
                f"{mobile.num_parts}, W a multiple of 8 (e.g. 288x144, 192x96 or 144x72)"
            )
        super().__init__(mobile)  # type: ignore[arg-type]  # duck-typed config: same head fields

    def _backbone(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        cfg: MobileNetV2Config = self.cfg  # type: ignore[assignment]
        blocks = mobilenet_v2_blocks(last_stride=cfg.last_stride)
        stem = _indexed(blocks, 0, cfg.stem_blocks)
        return stem, copy.deepcopy(stem), _indexed(blocks, cfg.stem_blocks, NUM_BLOCKS)


class MobileSDCL(nn.Module):
    """SDCL on MobileNetV2 with deep (block 18) and shallow (block 10) heads (see the module docstring).

    Interface as :class:`ViTICS`: ``forward_train(x_rgb, x_ir) -> {"f_d", "f_s", "split"}``,
    ``forward(x, modality) -> (f_d, f_s)`` (BN outputs, not normalised), ``extract`` = raw ``[f_d; f_s]``;
    ``cfg.embed_dim`` is the per-head width D = 1280.

    Args:
        cfg: architecture; ``MOBILE_VARIANTS["mobile"]`` when None.

    Raises:
        ValueError: H is not a multiple of 16 or W of 8, or ``shallow_block`` is not inside the trunk.
    """

    imagenet_parts: tuple[str, ...] = ("visible_stem", "thermal_stem", "trunk_shallow", "trunk_deep", "b1")

    def __init__(self, cfg: MobileNetV2Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else MOBILE_VARIANTS["mobile"]
        h, w = self.cfg.input_size
        if h % 16 or w % 8:
            raise ValueError(f"input size {h}x{w}: H must be a multiple of 16 and W of 8")
        tap, stem_end = self.cfg.shallow_block, self.cfg.stem_blocks
        if not stem_end <= tap < NUM_BLOCKS - 2:
            raise ValueError(f"shallow_block must be in [{stem_end}, {NUM_BLOCKS - 3}], got {tap}")
        blocks = mobilenet_v2_blocks(last_stride=self.cfg.last_stride)
        self.visible_stem = _indexed(blocks, 0, stem_end)
        self.thermal_stem = copy.deepcopy(self.visible_stem)
        self.trunk_shallow = _indexed(blocks, stem_end, tap + 1)
        self.trunk_deep = _indexed(blocks, tap + 1, NUM_BLOCKS - 1)
        self.b1 = _indexed(blocks, NUM_BLOCKS - 1, NUM_BLOCKS)
        shallow_channels = self._channels_after(blocks, tap)
        self.b2 = _conv_bn(shallow_channels, LAST_CHANNELS, kernel_size=1)
        self.bottleneck = bn_neck(LAST_CHANNELS)
        self.bottleneck_shallow = bn_neck(LAST_CHANNELS)
        self.default_cfg = contract_cfg(
            "sdcl",
            self.cfg.variant,
            input_size=self.cfg.input_size,
            interpolation="bilinear",
            embed_dim=2 * LAST_CHANNELS,
        )

    @staticmethod
    def _channels_after(blocks: list[nn.Module], index: int) -> int:
        """Output channels of ``blocks[index]`` (its last BatchNorm's width)."""
        norms = [m for m in blocks[index].modules() if isinstance(m, nn.BatchNorm2d)]
        return int(norms[-1].num_features)

    @property
    def embed_dim(self) -> int:
        """D of ``extract`` = 2 × 1280."""
        return 2 * LAST_CHANNELS

    def _pool(self, feature_map: Tensor) -> Tensor:
        return gem_pool(feature_map, p=self.cfg.gem_p, eps=self.cfg.gem_eps)

    def _maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Stem output (B, 24, H/4, W/4) → (deep map (B, 1280, H/16, W/16), shallow map (B, 1280, ...))."""
        shallow = self.trunk_shallow(x)
        return self.b1(self.trunk_deep(shallow)), self.b2(shallow)

    def _heads(self, deep_map: Tensor, shallow_map: Tensor) -> tuple[Tensor, Tensor]:
        f_d: Tensor = self.bottleneck(self._pool(deep_map))
        f_s: Tensor = self.bottleneck_shallow(self._pool(shallow_map))
        return f_d, f_s

    def forward_features(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Deep and shallow maps of one modality.

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` or ``"infrared"`` (picks the stem).

        Returns:
            (deep map, shallow map), each (B, 1280, H/16, W/16) float32, after ReLU6.

        Raises:
            ValueError: bad modality or input shape.
        """
        check_images(x)
        stem = self.visible_stem if check_modality(modality) == "visible" else self.thermal_stem
        return self._maps(stem(x))

    def forward_train(self, x_rgb: Tensor, x_ir: Tensor) -> dict[str, object]:
        """Training forward: RGB rows through ``visible_stem``, IR rows through ``thermal_stem``, then
        jointly.

        Args:
            x_rgb: (B_rgb, 3, H, W) float32.
            x_ir: (B_ir, 3, H, W) float32.

        Returns:
            ``f_d`` and ``f_s``, each (B_rgb + B_ir, 1280) BN outputs with rows [rgb; ir], and ``split``.

        Raises:
            ValueError: bad input shapes.
        """
        check_images(x_rgb, name="x_rgb")
        check_images(x_ir, name="x_ir")
        stems = torch.cat([self.visible_stem(x_rgb), self.thermal_stem(x_ir)])
        f_d, f_s = self._heads(*self._maps(stems))
        return {"f_d": f_d, "f_s": f_s, "split": (x_rgb.shape[0], x_ir.shape[0])}

    def forward(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Eval forward: ``(f_d, f_s)``, each (B, 1280) float32 BN outputs, not normalised.

        Raises:
            ValueError: bad modality or input shape.
        """
        return self._heads(*self.forward_features(x, modality))

    def extract(self, x: Tensor, modality: str) -> Tensor:
        """Per-view test embedding: raw ``[f_d; f_s]`` (B, 2560) float32; normalise after flip averaging.

        Raises:
            ValueError: bad modality or input shape.
            RuntimeError: the model is in training mode.
        """
        check_eval(self)
        return torch.cat(self.forward(x, modality), dim=1)

    def export_module(self, modality: str) -> nn.Module:
        """Module whose ``forward(x)`` is ``self.extract(x, modality)`` (what the exporter traces)."""
        return ExtractModule(self, modality)
