"""SDCL configuration: ``method_options`` (:class:`SDCLConfig`), stage ``options`` (:class:`SDCLStageConfig`).

Values and their sources are methods.md §B.3–§B.5 and §D items 10–13; the presets live in
``configs/sdcl_{sysu,regdb,tiny}.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RELOAD_CHOICES", "STAGE_KINDS", "SDCLConfig", "SDCLStageConfig"]

STAGE_KINDS = ("intra", "cross")
RELOAD_CHOICES = ("last", "best_unsupervised")
_CHECKPOINT_PREFIX = "checkpoint:"


@dataclass(frozen=True)
class SDCLConfig:
    """``method_options`` of SDCL (run-wide).

    Attributes:
        clusters_per_batch: P, pseudo identities per modality per step (8, §B.2).
        num_instances: K, images per identity from the camera-aware sampler (16, §B.2); a step sees
            P·K visible images (two views each) and P·K infrared images.
        recipe: augmentation recipe of ``vireid.training.data.build_recipe`` (``"sdcl"``, §B.2).
        train_interpolation: resize of the training views (``"bilinear"``, §B.2; extraction and test use
            the model's ``default_cfg`` interpolation, bicubic).
        shallow_weight: weight of the shallow cluster-contrast terms (``lamda_sd`` = 1, §B.4.1).
        hom_deep_weight: deep weight inside L_hom (``lamda_d_neibor`` = 1).
        hom_shallow_weight: shallow weight inside L_hom and L_het (``lamda_s_neibor`` = 0.5).
        het_rgb_to_ir_scale: the extra factor on the visible → infrared direction of L_het (0.1).
        hom_start: first (global, 0-based) epoch with L_hom (``hm``: 0 SYSU, 1 RegDB).
        het_start: first epoch with L_het (``ht`` = 10); even epochs visible → infrared, odd the reverse.
        mask_ratio: CNL neighbour threshold, ``s > ratio · row max`` on both depths (0.9).
        neighbor_temperature: τ of the neighbour softmax over instance memories (0.05).
        instance_momentum: instance-memory EMA ``I ← norm(m·I + (1 − m)·f)`` (0.9, §D item 1).
        cra_topk: K of CRA's deep / shallow top-K rankings (``TOPK2``: 20 SYSU, 10 RegDB; §B.4.2).
        cra_vote: neighbours of the CRA smoothing vote, self included (5).
        cra_block_rows: rows per block of CRA's similarity matrices (bounds memory; no effect on results).
        flip_extract: flip-average the per-epoch features (True, §B.2).
        grad_checkpointing: activation checkpointing over the transformer blocks (memory for compute,
            §B.5: the full 384-image batch needs it, or bf16, on one 80 GB GPU).
    """

    clusters_per_batch: int = 8
    num_instances: int = 16
    recipe: str = "sdcl"
    train_interpolation: str = "bilinear"
    shallow_weight: float = 1.0
    hom_deep_weight: float = 1.0
    hom_shallow_weight: float = 0.5
    het_rgb_to_ir_scale: float = 0.1
    hom_start: int = 0
    het_start: int = 10
    mask_ratio: float = 0.9
    neighbor_temperature: float = 0.05
    instance_momentum: float = 0.9
    cra_topk: int = 20
    cra_vote: int = 5
    cra_block_rows: int = 2048
    flip_extract: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.clusters_per_batch < 1 or self.num_instances < 1:
            raise ValueError("method_options.clusters_per_batch and num_instances must be >= 1")
        if not 0.0 <= self.instance_momentum < 1.0:
            raise ValueError(
                f"method_options.instance_momentum must be in [0, 1), got {self.instance_momentum}"
            )
        if self.neighbor_temperature <= 0.0 or not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError("method_options.neighbor_temperature must be > 0 and mask_ratio in (0, 1]")
        if self.cra_topk < 1 or self.cra_vote < 1 or self.cra_block_rows < 1:
            raise ValueError("method_options.cra_topk, cra_vote and cra_block_rows must be >= 1")
        if self.hom_start < 0 or self.het_start < 0:
            raise ValueError("method_options.hom_start and het_start must be >= 0")


@dataclass(frozen=True)
class SDCLStageConfig:
    """``stages[i].options`` of an SDCL stage.

    Attributes:
        kind: ``"intra"`` (stage 1: per-modality memories) or ``"cross"`` (stage 2: CRA labels visible
            images into the infrared label space, one shared memory per depth; §B.3 item 5, §B.4.2).
        rgb_k1: k1 of the visible Jaccard distance in this stage (None = ``cluster.k1``; SYSU stage 2: 15).
        hom_weight: weight of L_hom in the total (1.0 stage 1, 0.1 stage 2; §B.4.1 "Total").
        het_weight: weight of L_het (0.5 stage 1, 0.1 stage 2).
        reload: weights the stage starts from (§B.4.3): ``"last"`` (keep the current weights, the default:
            no test labels needed), ``"best_unsupervised"`` (the earlier epoch end with the highest
            label-free CRA agreement score, see :func:`~vireid.training.methods.sdcl.cra_agreement`), or
            ``"checkpoint:PATH"`` (model weights of a training checkpoint; the parity option: the authors
            reload the stage-1 epoch with the best *test-set* Rank-1). The optimizer is never reset.
    """

    kind: str = "intra"
    rgb_k1: int | None = None
    hom_weight: float = 1.0
    het_weight: float = 0.5
    reload: str = "last"

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage option kind must be one of {list(STAGE_KINDS)}, got {self.kind!r}")
        if self.rgb_k1 is not None and self.rgb_k1 < 2:
            raise ValueError(f"stage option rgb_k1 must be >= 2, got {self.rgb_k1}")
        if self.reload not in RELOAD_CHOICES and not self.reload.startswith(_CHECKPOINT_PREFIX):
            raise ValueError(
                f"stage option reload must be one of {list(RELOAD_CHOICES)} or 'checkpoint:PATH', "
                f"got {self.reload!r}"
            )

    @property
    def reload_path(self) -> str | None:
        """The checkpoint path of ``reload="checkpoint:PATH"``, else None."""
        if self.reload.startswith(_CHECKPOINT_PREFIX):
            return self.reload[len(_CHECKPOINT_PREFIX) :]
        return None
