"""Supervised cluster contrast: ground-truth identities shared across modalities (a source model).

Not one of the two papers' methods: the labelled counterpart of :mod:`._baseline`, for users who hold a
labelled dataset (SYSU-MM01 / RegDB / LLCM train identities, or their own) and want a model to start the
unsupervised methods from (``model.init_from``), the way they start from ImageNet / LUPerson weights; and
the supervised reference point of the synthetic studies (docs/salcr.md).

Loss (methods.md §0.4 memory, one memory for both modalities)::

    L = CE(m(f_V), y) + CE(m(f_A), y) + CE(m(f_R), y)

with ``y`` the identity of the image, the same label space for visible and infrared. Every epoch
(:meth:`SupervisedMethod.refresh`) the memory is rebuilt from the normalised identity centroids of both
modalities together; batches, views and the sequential momentum updates are the baseline's (§A.2, §0.4).
Identities seen in one modality only are trained in that modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vireid.training.methods._base import MODALITIES, PseudoLabels, RefreshContext
from vireid.training.methods._baseline import BaselineMethod

__all__ = ["SupervisedMethod", "identity_labels"]


def identity_labels(records: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Contiguous labels of the records' ground-truth identities, one label space for all modalities.

    Args:
        records: modality → records with an integer ``pid`` (Contract 8).

    Returns:
        modality → (N_m,) int64 labels in ``[0, number of distinct pids)``, ordered by pid.

    Raises:
        ValueError: a record without identity (e.g. unlabeled camera folders).
    """
    pids: dict[str, list[int]] = {}
    for modality in MODALITIES:
        missing = [r.path for r in records[modality] if r.pid is None]
        if missing:
            raise ValueError(
                f"the supervised method needs identities, but {len(missing)} {modality} training records "
                f"have none (e.g. {missing[0]}); use a labelled dataset (sysu, regdb, synthetic, or camera "
                "folders with identities.csv)"
            )
        pids[modality] = [int(r.pid) for r in records[modality]]
    index = {pid: i for i, pid in enumerate(sorted({p for values in pids.values() for p in values}))}
    return {m: np.array([index[p] for p in values], dtype=np.int64) for m, values in pids.items()}


class SupervisedMethod(BaselineMethod):
    """The ``supervised`` :class:`~vireid.training.methods.ReIDMethod` (see the module docstring).

    ``method_options`` are the baseline's (:class:`~vireid.training.methods.BaselineConfig`).

    Raises:
        ValueError (at the first refresh): training records without identities.
    """

    name = "supervised"
    #: Asks the trainer to keep the training records' ground-truth identities.
    uses_identities = True

    def refresh(self, ctx: RefreshContext) -> PseudoLabels:
        """Identity labels and one cluster memory of identity centroids over both modalities."""
        labels = identity_labels(ctx.records)
        feats = torch.cat([ctx.extract(m, flip=False) for m in MODALITIES])
        memory = self._centroid_memory(
            feats,
            np.concatenate([labels[m] for m in MODALITIES]),
            ctx.momentum(self.cfg.memory.momentum),
            ctx.device,
        )
        self.memories = dict.fromkeys(MODALITIES, memory)
        self.labels = PseudoLabels(labels)
        return self.labels

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the memory (one object again for both modalities) and the labels."""
        super().load_state_dict(state)
        if "visible" in self.memories:
            self.memories = dict.fromkeys(MODALITIES, self.memories["visible"])
