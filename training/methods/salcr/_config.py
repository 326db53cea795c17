"""``SALCRConfig``: the ``method_options`` of SALCR (methods.md §A, §D items 5–8, 12, 13, 15).

Every default is the official SALCR setting for SYSU-MM01 on one GPU; the RegDB preset changes
``k_cmfp`` / ``k_cmfp_test`` to 8. The stage schedule (40 intra + 40 cross epochs, 300 / 100 iterations)
lives in the root config's ``stages`` list; a stage's phase comes from ``stage.options["phase"]``
(``"intra"`` or ``"cross"``), or by position (the first stage is intra, later stages cross).

Decisions on the known defects of the official code (methods.md §D item 15), each a config value where
the behaviour can differ, and the documented default:

* ``a_to_r = "parity"`` (default): FGSAL's 4th RGB-prototype block and GPCR's "A→R" slot hold A→V, as the
  official slicing does (``feat11_pg1`` cut from ``feat1_pg2``), so A→V is used twice and A→R never.
  ``"intent"`` uses the A→R features the paper describes. Parity is the default because the published
  numbers (§A.7) come from that code.
* ``bool_flags = "intent"`` (default): ``fgsal`` / ``gpcr`` are real booleans, ``false`` switches the term
  off. ``"parity"`` reproduces argparse ``type=bool`` (any value given parses as True): both terms are
  forced on and a warning says so. The other untyped / mistyped arguments (``--lr``, ``--epochs`` read as
  strings, ``--k-instance`` as float) cannot recur: the config loader type-checks every value (intent).
* ``part_memory_labels = "dbscan"`` (default, parity): part and instance memories are built from the DBSCAN
  labels of the epoch while the training targets are the re-assigned labels (§A.3 item 6). ``"reassigned"``
  builds the part centroids from the re-assigned labels instead.
* ``args.test_CMFF`` vs ``test_CMFP`` (AttributeError at the first evaluation): intent — test-time CMFP is
  :func:`~vireid.training.methods.salcr.test_time_cmfp`, an evaluation ``postprocess`` always reported
  separately, with ``k_cmfp_test`` neighbours.
* ``get_device_properties(1)`` (needs two GPUs): intent — removed; one device runs both stages.
* Test-set checkpoint selection: intent — the run's ``last.pt`` is the result (methods.md §C.3).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["A_TO_R_CHOICES", "BOOL_FLAG_CHOICES", "PART_MEMORY_LABEL_CHOICES", "PHASES", "SALCRConfig"]

PHASES = ("intra", "cross")
A_TO_R_CHOICES = ("parity", "intent")
BOOL_FLAG_CHOICES = ("intent", "parity")
PART_MEMORY_LABEL_CHOICES = ("dbscan", "reassigned")


@dataclass(frozen=True)
class SALCRConfig:
    """SALCR ``method_options`` (defaults = the official SYSU-MM01 setting).

    Attributes:
        clusters_per_batch: stage 1, clusters drawn per modality per step (12, §A.2).
        num_instances: images per cluster / per anchor (12, §A.2); a step sees 144 pairs.
        anchors_per_modality: stage 2, visible and infrared anchors per step (6 + 6, §A.2).
        intra_recipe: augmentation recipe of intra stages (``salcr_stage1``: with LinearTransform).
        cross_recipe: augmentation recipe of cross stages (``salcr_stage2``: without it).
        k_cmfp: CMFP neighbours of the DAGL association (30 SYSU, 8 RegDB, §A.4.1).
        k_cmfp_test: CMFP neighbours of the test-time post-processing (30 SYSU, 8 RegDB, §A.6).
        lambda_ot: entropic OT sharpness λ (5, §A.4.1).
        ot_tol: Sinkhorn stopping tolerance on ``Σ|β_old/β_new − 1|`` (0.1).
        ot_max_iter: Sinkhorn iteration cap (500).
        ot_check_every: the error is checked on iterations 0, k, 2k, … (10).
        k_instance: GPCR top-k reliable positives (30, §A.4.3).
        lambda_gpcr: weight λ2 of ``L_gi + L_pi`` (0.5).
        fgsal: use the FGSAL loss (ablation switch).
        gpcr: use the GPCR loss (ablation switch).
        reset_part_head: re-create the part head at the start of every cross stage (§A.1, §D item 7).
        share_stem_init: before the first epoch of a fresh run, copy the visible stem into the thermal
            stem. The official runs load the same ImageNet stem into both (§A.1: "both stems start
            identical"); this gives a randomly initialised model (no ``model.pretrained``) the same start.
        a_to_r: ``"parity"`` | ``"intent"``, see the module docstring.
        bool_flags: ``"intent"`` | ``"parity"``, see the module docstring.
        part_memory_labels: ``"dbscan"`` | ``"reassigned"``, see the module docstring.
        cmfp_block_size: rows per block of the blocked CMFP product (memory bound, not a hyper-parameter).
        grad_checkpointing: activation checkpointing over the ResNet-50 trunk's Bottleneck blocks
            (``set_grad_checkpointing``): less activation memory for one more trunk forward per step, same
            gradients and BatchNorm statistics (docs/benchmarks.md "Activation checkpointing").
    """

    clusters_per_batch: int = 12
    num_instances: int = 12
    anchors_per_modality: int = 6
    intra_recipe: str = "salcr_stage1"
    cross_recipe: str = "salcr_stage2"
    k_cmfp: int = 30
    k_cmfp_test: int = 30
    lambda_ot: float = 5.0
    ot_tol: float = 0.1
    ot_max_iter: int = 500
    ot_check_every: int = 10
    k_instance: int = 30
    lambda_gpcr: float = 0.5
    fgsal: bool = True
    gpcr: bool = True
    reset_part_head: bool = True
    share_stem_init: bool = False
    a_to_r: str = "parity"
    bool_flags: str = "intent"
    part_memory_labels: str = "dbscan"
    cmfp_block_size: int = 4096
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        counts = (self.clusters_per_batch, self.num_instances, self.anchors_per_modality)
        if min(counts) < 1:
            raise ValueError("clusters_per_batch, num_instances and anchors_per_modality must be >= 1")
        if min(self.k_cmfp, self.k_cmfp_test, self.k_instance, self.cmfp_block_size) < 1:
            raise ValueError("k_cmfp, k_cmfp_test, k_instance and cmfp_block_size must be >= 1")
        if self.lambda_ot <= 0 or self.ot_tol <= 0 or self.ot_max_iter < 1 or self.ot_check_every < 1:
            raise ValueError(
                "lambda_ot > 0, ot_tol > 0, ot_max_iter >= 1 and ot_check_every >= 1 are required"
            )
        if self.lambda_gpcr < 0:
            raise ValueError(f"lambda_gpcr must be >= 0, got {self.lambda_gpcr}")
        for name, value, choices in (
            ("a_to_r", self.a_to_r, A_TO_R_CHOICES),
            ("bool_flags", self.bool_flags, BOOL_FLAG_CHOICES),
            ("part_memory_labels", self.part_memory_labels, PART_MEMORY_LABEL_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"method_options.{name} must be one of {list(choices)}, got {value!r}")

    @property
    def use_fgsal(self) -> bool:
        """Whether FGSAL is on (always on under ``bool_flags="parity"``)."""
        return self.fgsal or self.bool_flags == "parity"

    @property
    def use_gpcr(self) -> bool:
        """Whether GPCR is on (always on under ``bool_flags="parity"``)."""
        return self.gpcr or self.bool_flags == "parity"
