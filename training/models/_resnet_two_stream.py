"""SALCR backbone: two-stream ResNet-50 with GeM, BN-neck and the FGSAL part head (methods.md §A.1).

Layout (names chosen so the torchvision ImageNet keys map one to one, see ``_weights.py``):

* ``visible_stem`` / ``thermal_stem``: conv1 7x7/2 → bn1 → ReLU → maxpool 3x3/2, separate weights.
* ``trunk``: shared Bottleneck ``layer1``–``layer4``; ``layer4`` has stride 1.
* global branch: GeM (p = 3, fixed) → ``bottleneck`` (BN-neck, bias frozen) → ``f_g``.
* part branch: ``part_pool`` (SAFL, instance-adaptive prototypes) → parameter-free query attention →
  ``bottleneck_part`` (one shared BN over the P·C part vector, bias frozen).

Training forward (``forward_train``): the batch is three equal blocks ``[V; A; R]`` of n rows (RGB plain view,
RGB channel-augmented view, IR), row j of every block being the same pseudo identity. It returns

* ``f_g`` (3n, C), ``f_pg`` / ``f_pg1`` / ``f_pg2`` (3n, (P+1)·C) = [part0 | … | part P-1 | global], where the
  prototypes of ``[V; A; R]`` query the maps ``[V; A; R]`` (own), ``[R; R; V]`` and ``[A; V; A]`` respectively
  (methods.md §A.1 item 3); all BN outputs, not normalised;
* ``feature_map`` (3n, C, H4, W4), the shared-trunk output.

Eval forward: ``forward(x, modality) -> (norm(f_g), norm(f_pg))`` with own-map parts;
``extract(x, modality) = norm(f_g)`` (the test embedding before flip averaging).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    ExtractModule,
    bn_neck,
    check_eval,
    check_images,
    check_modality,
    checkpointed_call,
    contract_cfg,
)

logger = logging.getLogger(__name__)

EXPANSION = 4


@dataclass(frozen=True)
class TwoStreamResNetConfig:
    """Architecture of :class:`TwoStreamResNet50`.

    Attributes:
        variant: ``"full"`` or ``"tiny"`` (recorded in ``default_cfg``).
        input_size: (H, W) in pixels the model is meant for.
        stem_channels: conv1 output channels.
        widths: Bottleneck inner widths of layer1..layer4 (output = 4 × width).
        blocks: number of Bottleneck blocks in layer1..layer4.
        layer_strides: strides of layer1..layer4 (layer4 = 1, ``last_conv_stride=1``).
        num_parts: P, horizontal stripes of the part head.
        gem_p: GeM exponent (fixed, not learnt).
        gem_eps: added to the mean before the 1/p root.
        neck_std: BN-neck weight init ~ N(1, neck_std).
    """

    variant: str = "full"
    input_size: tuple[int, int] = (288, 144)
    stem_channels: int = 64
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    layer_strides: tuple[int, int, int, int] = (1, 2, 2, 1)
    num_parts: int = 3
    gem_p: float = 3.0
    gem_eps: float = 1e-12
    neck_std: float = 0.01

    @property
    def out_channels(self) -> int:
        """C, the channel count of the layer4 map (2048 for the full model)."""
        return self.widths[-1] * EXPANSION


SALCR_VARIANTS: dict[str, TwoStreamResNetConfig] = {
    "full": TwoStreamResNetConfig(),
    "tiny": TwoStreamResNetConfig(
        variant="tiny",
        input_size=(96, 48),
        stem_channels=8,
        widths=(8, 16, 32, 64),
        blocks=(1, 1, 1, 1),
    ),
}


def conv2d(in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv, padding k//2, initialised once: kaiming-normal (fan_out, ReLU) as torchvision.

    Built with ``skip_init`` so the default init does not run first (keeps building the full model fast).
    """
    conv: nn.Conv2d = torch.nn.utils.skip_init(  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        nn.Conv2d, in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class Bottleneck(nn.Module):
    """torchvision-style ResNet Bottleneck (stride on the 3x3 conv), key names as in torchvision."""

    def __init__(self, in_channels: int, width: int, *, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = conv2d(in_channels, width, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv2d(width, width, kernel_size=3, stride=stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv2d(width, out_channels, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                conv2d(in_channels, out_channels, kernel_size=1, stride=stride),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, 4·width, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


class Stem(nn.Module):
    """conv1 7x7/2 → bn1 → ReLU → maxpool 3x3/2; one per modality."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv2d(3, channels, kernel_size=7, stride=2)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, channels, H/4, W/4)."""
        out: Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return out


class Trunk(nn.Module):
    """Shared ResNet layer1–layer4 (``base_resnet``)."""

    def __init__(self, cfg: TwoStreamResNetConfig) -> None:
        super().__init__()
        in_channels = cfg.stem_channels
        layers = []
        for width, count, stride in zip(cfg.widths, cfg.blocks, cfg.layer_strides, strict=True):
            blocks = [Bottleneck(in_channels, width, stride=stride)]
            in_channels = width * EXPANSION
            blocks += [Bottleneck(in_channels, width) for _ in range(count - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        """(B, stem, H/4, W/4) → (B, C, H4, W4); 288×144 input gives (B, 2048, 18, 9).

        With ``grad_checkpointing`` (training mode, autograd on) each Bottleneck's activations are
        recomputed in the backward instead of kept (:func:`checkpointed_call`; same outputs, gradients
        and BatchNorm statistics).
        """
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in layer:
                    x = checkpointed_call(block, x)
            return x
        out: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return out


def gem_pool(x: Tensor, *, p: float, eps: float) -> Tensor:
    """Generalised-mean pooling with a fixed exponent: ``(mean_hw(x^p) + eps)^(1/p)`` (methods.md §A.1).

    Args:
        x: (B, C, H, W) float, non-negative (post-ReLU; no clamp is applied).
        p: exponent (3 in SALCR).
        eps: added to the mean before the root (1e-12 in SALCR).

    Returns:
        (B, C) pooled features.
    """
    return (x.pow(p).mean(dim=(2, 3)) + eps).pow(1.0 / p)


def split_stripes(feature_map: Tensor, num_parts: int) -> Tensor:
    """Cut a feature map into P horizontal stripes of row-major tokens.

    Stripe i holds tokens ``[i·L, (i+1)·L)`` of the row-major flattening, L = (H/P)·W, i.e. H/P full rows.

    Args:
        feature_map: (B, C, H, W) float.
        num_parts: P; must divide H.

    Returns:
        (B, P, L, C) tokens.

    Raises:
        ValueError: when P does not divide H.
    """
    b, c, h, w = feature_map.shape
    if h % num_parts != 0:
        raise ValueError(f"feature-map height {h} is not divisible by num_parts={num_parts}")
    tokens = feature_map.flatten(2).transpose(1, 2)  # (B, H·W, C), row-major
    return tokens.reshape(b, num_parts, (h // num_parts) * w, c)


class PartPrototypes(nn.Module):
    """SAFL instance-adaptive part prototypes (``attn_pool``, methods.md §A.1 item 1).

    For stripe i: ``a = sigmoid(T_i · X_iᵀ)``, ``a ← a / Σ a``, prototype ``q_i = a · X_i``.
    (SALCR's unused, zero positional-embedding parameter is not reproduced.)
    """

    def __init__(self, num_parts: int, channels: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(num_parts, channels))
        nn.init.kaiming_normal_(self.tokens)  # std = sqrt(2 / channels)

    def forward(self, stripes: Tensor) -> Tensor:
        """(B, P, L, C) stripe tokens → (B, P, C) prototypes."""
        attn = torch.sigmoid(torch.einsum("bplc,pc->bpl", stripes, self.tokens))
        attn = attn / attn.sum(dim=-1, keepdim=True)
        return torch.einsum("bpl,bplc->bpc", attn, stripes)


def query_attention(prototypes: Tensor, stripes: Tensor) -> Tensor:
    """Parameter-free query-guided attention (``QueryAttention``, methods.md §A.1 item 2).

    For stripe i: ``w = softmax(Q_i · Y_iᵀ / sqrt(C))`` over the L tokens, part feature ``p_i = w · Y_i``.

    Args:
        prototypes: (B, P, C) queries Q.
        stripes: (B, P, L, C) stripe tokens of the target maps Y (row b of Y is queried by row b of Q).

    Returns:
        (B, P, C) part features.
    """
    scale = 1.0 / math.sqrt(prototypes.shape[-1])
    weights = torch.softmax(torch.einsum("bpc,bplc->bpl", prototypes, stripes) * scale, dim=-1)
    return torch.einsum("bpl,bplc->bpc", weights, stripes)


class TwoStreamResNet50(nn.Module):
    """SALCR two-stream ResNet-50 with global (GeM + BN-neck) and FGSAL part heads (methods.md §A.1).

    Args:
        cfg: architecture; ``SALCR_VARIANTS["full"]`` (288×144 input, 18×9×2048 layer4 map) when None.
    """

    def __init__(self, cfg: TwoStreamResNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else SALCR_VARIANTS["full"]
        channels = self.cfg.out_channels
        self.visible_stem, self.thermal_stem, self.trunk = self._backbone()
        self.bottleneck = bn_neck(channels, weight_std=self.cfg.neck_std)
        self.part_pool = PartPrototypes(self.cfg.num_parts, channels)
        self.bottleneck_part = bn_neck(self.cfg.num_parts * channels, weight_std=self.cfg.neck_std)
        self.default_cfg = contract_cfg(
            "salcr",
            self.cfg.variant,
            input_size=self.cfg.input_size,
            interpolation="bilinear",
            embed_dim=channels,
        )

    def _backbone(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(visible stem, thermal stem, shared trunk); subclasses swap the backbone, keeping the heads."""
        return Stem(self.cfg.stem_channels), Stem(self.cfg.stem_channels), Trunk(self.cfg)

    @property
    def embed_dim(self) -> int:
        """D of ``extract`` (= C, 2048 for the full model)."""
        return self.cfg.out_channels

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing over the shared trunk's Bottleneck blocks (timm's method name).

        Trades compute (one more trunk forward per step) for activation memory; docs/benchmarks.md
        "Activation checkpointing" has the measured saving. ``method_options.grad_checkpointing`` of SALCR.

        Raises:
            ValueError: the backbone has no Bottleneck trunk (the MobileNetV2 ``mobile`` variant).
        """
        if not isinstance(self.trunk, Trunk):
            raise ValueError(
                f"grad_checkpointing is implemented for the ResNet-50 trunk; {type(self).__name__} has "
                f"{type(self.trunk).__name__} (set grad_checkpointing: false)"
            )
        self.trunk.grad_checkpointing = enable
        logger.info("activation checkpointing %s on the ResNet trunk", "on" if enable else "off")

    def reset_part_head(self) -> None:
        """Re-create SAFL (``part_pool``) and ``bottleneck_part`` (stage-2 start, methods.md §A.1).

        The new modules live on the device and dtype of the old ones; build the optimizer afterwards.
        """
        ref = self.part_pool.tokens
        channels = self.cfg.out_channels
        self.part_pool = PartPrototypes(self.cfg.num_parts, channels).to(device=ref.device, dtype=ref.dtype)
        neck = bn_neck(self.cfg.num_parts * channels, weight_std=self.cfg.neck_std)
        self.bottleneck_part = neck.to(device=ref.device, dtype=ref.dtype)
        logger.info("SALCR part head re-initialised (part_pool, bottleneck_part)")

    def forward_features(self, x: Tensor, modality: str) -> Tensor:
        """Stem of ``modality`` then the shared trunk.

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` (visible stem) or ``"infrared"`` (thermal stem).

        Returns:
            (B, C, H/16, W/16) layer4 map ((B, 2048, 18, 9) for the full model at 288×144).

        Raises:
            ValueError: bad modality or input shape.
        """
        check_images(x)
        stem = self.visible_stem if check_modality(modality) == "visible" else self.thermal_stem
        feature_map: Tensor = self.trunk(stem(x))
        return feature_map

    def _global(self, feature_map: Tensor) -> Tensor:
        """(B, C, H, W) → f_g (B, C): GeM then BN-neck."""
        f_g: Tensor = self.bottleneck(gem_pool(feature_map, p=self.cfg.gem_p, eps=self.cfg.gem_eps))
        return f_g

    def _parts(self, prototypes: Tensor, stripes: Tensor) -> Tensor:
        """Query ``stripes`` (B, P, L, C) with ``prototypes`` (B, P, C) → (B, P·C) after the part BN."""
        parts: Tensor = self.bottleneck_part(query_attention(prototypes, stripes).flatten(1))
        return parts

    def forward_train(self, x_rgb: Tensor, x_ir: Tensor, *, with_parts: bool = True) -> dict[str, Tensor]:
        """Training forward over the paired batch ``[V; A; R]`` (methods.md §A.1 items 3–4).

        Args:
            x_rgb: (2n, 3, H, W) float32, the RGB plain views V (rows 0..n-1) then the augmented views A.
            x_ir: (n, 3, H, W) float32, the IR views R; row j of V, A and R is one pseudo identity.
                Without parts any row counts are accepted (the stage-1 batch is not paired).
            with_parts: also compute the part features (the cross-querying needs the 2n / n layout).

        Returns:
            ``feature_map`` (3n, C, H4, W4) and ``f_g`` (3n, C); with parts also ``f_pg`` (own maps),
            ``f_pg1`` (maps [R; R; V]) and ``f_pg2`` (maps [A; V; A]), each (3n, (P+1)·C) laid out
            [part0 | … | part P-1 | global]. All BN outputs, not normalised; rows are [V; A; R].

        Raises:
            ValueError: bad shapes, or ``with_parts`` and ``len(x_rgb) != 2 * len(x_ir)``.
        """
        check_images(x_rgb, name="x_rgb")
        check_images(x_ir, name="x_ir")
        if x_rgb.shape[2:] != x_ir.shape[2:]:
            raise ValueError(
                f"x_rgb and x_ir sizes differ: {tuple(x_rgb.shape[2:])} vs {tuple(x_ir.shape[2:])}"
            )
        n = x_ir.shape[0]
        if with_parts and x_rgb.shape[0] != 2 * n:
            raise ValueError(
                f"with_parts needs x_rgb = [V; A] with 2n rows for n IR rows, got {x_rgb.shape[0]} and {n}"
            )
        feature_map = self.trunk(torch.cat([self.visible_stem(x_rgb), self.thermal_stem(x_ir)]))
        f_g = self._global(feature_map)
        out = {"feature_map": feature_map, "f_g": f_g}
        if not with_parts:
            return out
        stripes = split_stripes(feature_map, self.cfg.num_parts)
        prototypes = self.part_pool(stripes)
        v, a, r = (torch.arange(k * n, (k + 1) * n, device=x_ir.device) for k in range(3))
        maps = {"f_pg": None, "f_pg1": torch.cat([r, r, v]), "f_pg2": torch.cat([a, v, a])}
        for key, index in maps.items():
            target = stripes if index is None else stripes.index_select(0, index)
            out[key] = torch.cat([self._parts(prototypes, target), f_g], dim=1)
        return out

    def forward(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Eval forward (``mode='RGB'/'IR'`` in SALCR).

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` or ``"infrared"`` (picks the stem).

        Returns:
            ``norm(f_g)`` (B, C) and ``norm(f_pg)`` (B, (P+1)·C) with own-map parts, both float32, unit rows.

        Raises:
            ValueError: bad modality or input shape.
        """
        feature_map = self.forward_features(x, modality)
        f_g = self._global(feature_map)
        stripes = split_stripes(feature_map, self.cfg.num_parts)
        f_pg = torch.cat([self._parts(self.part_pool(stripes), stripes), f_g], dim=1)
        return F.normalize(f_g, dim=1), F.normalize(f_pg, dim=1)

    def extract(self, x: Tensor, modality: str) -> Tensor:
        """Per-view test embedding ``norm(f_g)`` (Contract 1; methods.md §A.1 "test embedding").

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` or ``"infrared"``.

        Returns:
            (B, C) float32, L2-normalised rows (C = 2048 full).

        Raises:
            ValueError: bad modality or input shape.
            RuntimeError: the model is in training mode.
        """
        check_eval(self)
        return F.normalize(self._global(self.forward_features(x, modality)), dim=1)

    def export_module(self, modality: str) -> nn.Module:
        """Module whose ``forward(x)`` is ``self.extract(x, modality)`` (what the exporter traces).

        Raises:
            ValueError: bad modality.
        """
        return ExtractModule(self, modality)
