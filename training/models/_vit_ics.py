"""SDCL backbone: TransReID-style ViT-B/16 with the ICS conv stem and deep / shallow heads (methods.md §B.1).

Layout (state-dict names follow TransReID-SSL so its checkpoint maps by name, see ``_weights.py``):

* ``patch_embed`` (RGB) and ``patch_embed2`` (IR): ICS stem ``conv`` = conv 7x7/2 → IBN → ReLU →
  conv 3x3 → IBN → ReLU → conv 3x3 → BN → ReLU, then ``proj`` (kernel = stride = patch/2).
  288×144 → 18×9 = 162 tokens.
* ``cls_token``, ``pos_embed`` (1, 1 + tokens, D), ``blocks`` (depth pre-norm blocks), ``norm``.
  The backbone runs ``blocks[:-1]`` only; ``blocks[-1]`` and ``norm`` stay (their weights are the source
  of the head copies) but no output uses them, so they are frozen (``requires_grad=False``).
* ``b1`` = copy of (``blocks[-1]``, ``norm``) on Z → deep cls; ``b2`` = another copy on ``[Z_cls; x_s]``
  → shallow cls; ``bottleneck`` / ``bottleneck_shallow``: BN-necks (bias frozen, weight 1, bias 0) →
  ``f_d``, ``f_s``.

Training forward: ``forward_train(x_rgb, x_ir)`` embeds each modality with its own patch embedding, runs
the rows ``[rgb; ir]`` jointly and returns ``{"f_d", "f_s", "split"}``.
Eval: ``forward(x, modality) -> (f_d, f_s)``; ``extract`` = raw ``[f_d; f_s]``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TypedDict

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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViTICSConfig:
    """Architecture of :class:`ViTICS`.

    Attributes:
        variant: ``"full"`` or ``"tiny"`` (recorded in ``default_cfg``).
        input_size: (H, W) in pixels; fixed, because the positional embedding is.
        patch_size: nominal patch (16); the stem halves the resolution, then ``proj`` has
            kernel = stride = patch/2.
        stem_channels: ICS stem width (64).
        embed_dim: token width D (768).
        depth: number of transformer blocks (12); the backbone runs depth − 1 of them.
        num_heads: attention heads (12).
        mlp_ratio: MLP hidden width / D (4).
        qkv_bias: bias on the qkv projection (True).
        drop_path_rate: stochastic depth of the last block, linear from 0 over the blocks (0.1).
        ln_eps: LayerNorm epsilon (1e-6).
        init_std: truncated-normal std of Linear weights, cls token and pos_embed (0.02).
    """

    variant: str = "full"
    input_size: tuple[int, int] = (288, 144)
    patch_size: int = 16
    stem_channels: int = 64
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    ln_eps: float = 1e-6
    init_std: float = 0.02

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (H/patch, W/patch): (18, 9) for 288×144."""
        h, w = self.input_size
        return h // self.patch_size, w // self.patch_size


SDCL_VARIANTS: dict[str, ViTICSConfig] = {
    "full": ViTICSConfig(),
    "tiny": ViTICSConfig(
        variant="tiny", input_size=(64, 32), stem_channels=16, embed_dim=64, depth=3, num_heads=4
    ),
}


def linear(in_features: int, out_features: int, *, bias: bool = True, std: float) -> nn.Linear:
    """Linear layer initialised once: weight ~ truncated N(0, std), bias 0 (TransReID ``_init_weights``).

    Built with ``skip_init`` so PyTorch's default init does not run first (keeps the full build fast).
    """
    layer: nn.Linear = torch.nn.utils.skip_init(  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        nn.Linear, in_features, out_features, bias=bias
    )
    nn.init.trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class IBN(nn.Module):
    """Instance-batch norm: InstanceNorm (affine) on the first half of the channels, BatchNorm on the rest."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split_at = channels // 2
        self.IN = nn.InstanceNorm2d(self.split_at, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.split_at)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        first, second = x[:, : self.split_at], x[:, self.split_at :]
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


class PatchEmbedICS(nn.Module):
    """ICS conv stem + projection to tokens (TransReID-SSL ``PatchEmbed(stem_conv=True)``)."""

    def __init__(self, cfg: ViTICSConfig) -> None:
        super().__init__()
        c = cfg.stem_channels
        self.conv = nn.Sequential(
            nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False),
            IBN(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            IBN(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        step = cfg.patch_size // 2
        self.proj = nn.Conv2d(c, cfg.embed_dim, step, stride=step)
        self.grid = cfg.grid

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, (H/16)·(W/16), D) tokens in row-major order."""
        tokens: Tensor = self.proj(self.conv(x))
        return tokens.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample: drop the residual branch with probability ``p`` in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) → same shape; identity in eval mode or when p = 0."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep


class Attention(nn.Module):
    """Multi-head self-attention (explicit matmul / softmax, so it exports to plain ONNX ops)."""

    def __init__(self, dim: int, *, num_heads: int, qkv_bias: bool, init_std: float) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = linear(dim, dim * 3, bias=qkv_bias, std=init_std)
        self.proj = linear(dim, dim, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) → (B, N, D)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out: Tensor = self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return out


class Mlp(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int, *, init_std: float) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden, std=init_std)
        self.act = nn.GELU()
        self.fc2 = linear(hidden, dim, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) → (B, N, D)."""
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: ``x + dp(attn(norm1(x)))`` then ``x + dp(mlp(norm2(x)))``."""

    def __init__(self, cfg: ViTICSConfig, *, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.attn = Attention(dim, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, init_std=cfg.init_std)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), init_std=cfg.init_std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) → (B, N, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        out: Tensor = x + self.drop_path(self.mlp(self.norm2(x)))
        return out


class SDCLTrainOutput(TypedDict):
    """``ViTICS.forward_train`` result: rows are ``[rgb; ir]``, ``split`` = (rows of rgb, rows of ir)."""

    f_d: Tensor
    f_s: Tensor
    split: tuple[int, int]


class ViTICS(nn.Module):
    """SDCL ViT with ICS stem, two patch embeddings and deep / shallow heads (methods.md §B.1).

    Args:
        cfg: architecture; ``SDCL_VARIANTS["full"]`` (ViT-B/16, 288×144, 162 tokens) when None.

    Raises:
        ValueError: the input size is not a multiple of the patch size, or D is not divisible by the heads.
    """

    def __init__(self, cfg: ViTICSConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else SDCL_VARIANTS["full"]
        h, w = self.cfg.input_size
        if h % self.cfg.patch_size or w % self.cfg.patch_size:
            raise ValueError(f"input size {h}x{w} is not a multiple of patch size {self.cfg.patch_size}")
        dim, grid = self.cfg.embed_dim, self.cfg.grid
        self.patch_embed = PatchEmbedICS(self.cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.cls_token, std=self.cfg.init_std)
        nn.init.trunc_normal_(self.pos_embed, std=self.cfg.init_std)
        rates = torch.linspace(0, self.cfg.drop_path_rate, self.cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(self.cfg, drop_path=rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=self.cfg.ln_eps)
        self.patch_embed2 = copy.deepcopy(self.patch_embed)
        self.b1 = nn.Sequential(copy.deepcopy(self.blocks[-1]), copy.deepcopy(self.norm))
        self.b2 = nn.Sequential(copy.deepcopy(self.blocks[-1]), copy.deepcopy(self.norm))
        # blocks[-1] and norm only hold the weights the heads are copied from: no output uses them, so they
        # are frozen (SDCL gives them no gradient either; freezing keeps DDP free of unused parameters).
        self.blocks[-1].requires_grad_(False)
        self.norm.requires_grad_(False)
        self.bottleneck = bn_neck(dim)
        self.bottleneck_shallow = bn_neck(dim)
        self.default_cfg = contract_cfg(
            "sdcl", self.cfg.variant, input_size=(h, w), interpolation="bicubic", embed_dim=2 * dim
        )

    @property
    def embed_dim(self) -> int:
        """D of ``extract`` = 2 × token width (1536 for the full model)."""
        return 2 * self.cfg.embed_dim

    @torch.no_grad()
    def copy_shared_weights(self) -> None:
        """Copy ``patch_embed`` into ``patch_embed2``, (``blocks[-1]``, ``norm``) into ``b1``, ``b2`` (§B.1).

        Values are copied in place (same effect as SDCL's deepcopy after the pretrained load, but the
        parameter objects, hence optimizer references, stay). Call after loading backbone weights.
        """
        self.patch_embed2.load_state_dict(self.patch_embed.state_dict())
        for head in (self.b1, self.b2):
            head[0].load_state_dict(self.blocks[-1].state_dict())
            head[1].load_state_dict(self.norm.state_dict())

    def _embed(self, x: Tensor, modality: str) -> Tensor:
        """(B, 3, H, W) → (B, 1 + N, D) tokens + pos_embed, with the patch embedding of ``modality``."""
        check_images(x, size=self.cfg.input_size)
        embed = self.patch_embed if check_modality(modality) == "visible" else self.patch_embed2
        tokens = embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def _backbone(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded tokens (B, 1 + N, D) → (Z after blocks[:-1], x_s = patch tokens before any block)."""
        x_s = x[:, 1:]
        for block in self.blocks[:-1]:
            x = block(x)
        return x, x_s

    def _heads(self, z: Tensor, x_s: Tensor) -> tuple[Tensor, Tensor]:
        """Deep head on Z, shallow head on [Z_cls; x_s]; cls tokens through BN-necks → (f_d, f_s), (B, D)."""
        deep = self.b1(z)[:, 0]
        shallow = self.b2(torch.cat([z[:, :1], x_s], dim=1))[:, 0]
        return self.bottleneck(deep), self.bottleneck_shallow(shallow)

    def forward_features(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Backbone of methods.md §B.1 (``local_feature=True``).

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised, H×W = ``cfg.input_size``.
            modality: ``"visible"`` (``patch_embed``) or ``"infrared"`` (``patch_embed2``).

        Returns:
            Z (B, 1 + N, D), the tokens after block depth − 1, and x_s (B, N, D), the patch tokens right after
            patch embedding + pos_embed (N = 162, D = 768 full).

        Raises:
            ValueError: bad modality or input shape.
        """
        return self._backbone(self._embed(x, modality))

    def forward_train(self, x_rgb: Tensor, x_ir: Tensor) -> SDCLTrainOutput:
        """Training forward: RGB rows through ``patch_embed``, IR rows through ``patch_embed2``, then jointly.

        Args:
            x_rgb: (B_rgb, 3, H, W) float32 (both RGB views stacked, as the method builds them).
            x_ir: (B_ir, 3, H, W) float32.

        Returns:
            ``f_d`` and ``f_s``, each (B_rgb + B_ir, D) BN outputs (not normalised) with rows [rgb; ir], and
            ``split`` = (B_rgb, B_ir).

        Raises:
            ValueError: bad input shapes.
        """
        tokens = torch.cat([self._embed(x_rgb, "visible"), self._embed(x_ir, "infrared")])
        f_d, f_s = self._heads(*self._backbone(tokens))
        return {"f_d": f_d, "f_s": f_s, "split": (x_rgb.shape[0], x_ir.shape[0])}

    def forward(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Eval forward (``modal=1`` visible, ``modal=2`` infrared in SDCL).

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` or ``"infrared"``.

        Returns:
            (f_d, f_s), each (B, D) float32 BN outputs, not normalised.

        Raises:
            ValueError: bad modality or input shape.
        """
        return self._heads(*self.forward_features(x, modality))

    def extract(self, x: Tensor, modality: str) -> Tensor:
        """Per-view test embedding: the raw concatenation ``[f_d; f_s]`` (Contract 1; methods.md §B.6).

        Args:
            x: (B, 3, H, W) float32, ImageNet-normalised.
            modality: ``"visible"`` or ``"infrared"``.

        Returns:
            (B, 2·D) float32, not normalised (1536-d full); normalise after flip averaging.

        Raises:
            ValueError: bad modality or input shape.
            RuntimeError: the model is in training mode.
        """
        check_eval(self)
        return torch.cat(self.forward(x, modality), dim=1)

    def export_module(self, modality: str) -> nn.Module:
        """Module whose ``forward(x)`` is ``self.extract(x, modality)`` (what the exporter traces).

        Raises:
            ValueError: bad modality.
        """
        return ExtractModule(self, modality)
