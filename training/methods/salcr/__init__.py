"""SALCR (IJCV 2025): semantic-aligned learning with collaborative refinement (methods.md §A).

``SALCRMethod`` plugs into the shared Trainer (``METHODS["salcr"]``); the association (CMFP, Sinkhorn OT,
label re-assignment), the losses (DAGL, FGSAL, GPCR) and the test-time CMFP post-processing are pure
functions usable on their own. Options: :class:`SALCRConfig` (``method_options``). See docs/salcr.md.
"""

from vireid.training.methods.salcr._association import (
    Association,
    SinkhornResult,
    associate,
    beta_change,
    cmfp,
    fused_centroids,
    ot_cross_labels,
    reassign_labels,
    sinkhorn,
)
from vireid.training.methods.salcr._config import (
    A_TO_R_CHOICES,
    BOOL_FLAG_CHOICES,
    PART_MEMORY_LABEL_CHOICES,
    PHASES,
    SALCRConfig,
)
from vireid.training.methods.salcr._losses import (
    PartBlocks,
    dagl_loss,
    dagl_targets,
    fgsal_loss,
    gpcr_global_masks,
    gpcr_part_masks,
    masked_nll,
    normalized_logits,
    part_blocks,
)
from vireid.training.methods.salcr._method import SALCRMethod, reset_part_head_in_place
from vireid.training.methods.salcr._postprocess import CMFPPostprocess, test_time_cmfp

__all__ = [
    "A_TO_R_CHOICES",
    "BOOL_FLAG_CHOICES",
    "PART_MEMORY_LABEL_CHOICES",
    "PHASES",
    "Association",
    "CMFPPostprocess",
    "PartBlocks",
    "SALCRConfig",
    "SALCRMethod",
    "SinkhornResult",
    "associate",
    "beta_change",
    "cmfp",
    "dagl_loss",
    "dagl_targets",
    "fgsal_loss",
    "fused_centroids",
    "gpcr_global_masks",
    "gpcr_part_masks",
    "masked_nll",
    "normalized_logits",
    "ot_cross_labels",
    "part_blocks",
    "reassign_labels",
    "reset_part_head_in_place",
    "sinkhorn",
    "test_time_cmfp",
]
