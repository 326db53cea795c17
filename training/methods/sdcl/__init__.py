"""SDCL (CVPR 2024): shallow-deep collaborative learning with CNL and CRA (methods.md §B).

``SDCLMethod`` follows the ``ReIDMethod`` protocol; its building blocks are pure functions tested on their
own: :func:`joint_neighbor_mask` / :func:`neighbor_loss` / :class:`CNLSchedule` (CNL, §B.4.1),
:func:`collaborative_ranking_association` (CRA, §B.4.2) and the P×K streams (§B.2). The cluster and instance
memories (§0.4, §B.3) are the shared :class:`~vireid.training.memory.ClusterMemory` and
:class:`~vireid.training.memory.InstanceMemory`.
"""

from vireid.training.methods.sdcl._cnl import CNLSchedule, joint_neighbor_mask, neighbor_loss
from vireid.training.methods.sdcl._config import RELOAD_CHOICES, STAGE_KINDS, SDCLConfig, SDCLStageConfig
from vireid.training.methods.sdcl._cra import (
    CRAResult,
    collaborative_ranking_association,
    cra_agreement,
    stable_topk,
)
from vireid.training.methods.sdcl._features import enable_activation_checkpointing, extract_raw_features
from vireid.training.methods.sdcl._method import SDCLMethod
from vireid.training.methods.sdcl._sampling import pk_stream, shard_stream

__all__ = [
    "RELOAD_CHOICES",
    "STAGE_KINDS",
    "CNLSchedule",
    "CRAResult",
    "SDCLConfig",
    "SDCLMethod",
    "SDCLStageConfig",
    "collaborative_ranking_association",
    "cra_agreement",
    "enable_activation_checkpointing",
    "extract_raw_features",
    "joint_neighbor_mask",
    "neighbor_loss",
    "pk_stream",
    "shard_stream",
    "stable_topk",
]
