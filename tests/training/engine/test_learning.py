"""Issue 3 done-when: training the tiny backbone on synthetic data lifts held-out cross-modality mAP.

The baseline learns only per-modality clusters; the gain across modalities comes from the shared trunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vireid.training.engine import build_trainer, load_config, prepare_data
from vireid.training.evaluation import evaluate_cross_modality
from vireid.training.methods import DistInfo

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"
MARGIN = 0.10  # absolute mAP (fraction); see the docstring of the test for the measured numbers


# Minutes of CPU training, so outside the default suite (run with -m slow). Known to FAIL at the
# moment: the tiny random-init backbone stays at chance on the synthetic data (issue #3 stays open).
@pytest.mark.slow
def test_baseline_raises_heldout_cross_modality_map(tmp_path) -> None:
    """Done-when of issue 3 for the baseline (tiny SALCR, synthetic set of ``baseline_synthetic.yaml``).

    Measured (2-core CPU): held-out IR→visible mAP 0.142 untrained; after training 0.13–0.16 over six
    settings (eps 0.5/0.6, k1 6/10, lr 3.5e-4–2e-3, 6–12 epochs × 20–60 steps, shared stem init), i.e.
    no gain yet — even ground-truth per-modality labels do not lift held-out retrieval in 600 steps.
    This test therefore fails today; it states the target, it is not tuned to pass.
    """
    cfg = load_config(
        CONFIG,
        [
            "eval.every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            "method_options.share_stem_init=true",
        ],
    )
    trainer = build_trainer(cfg, run_dir=tmp_path)
    data = prepare_data(cfg.data, run_dir=tmp_path, dist_info=DistInfo())
    assert data.eval_query and data.eval_gallery

    def score() -> float:
        return evaluate_cross_modality(trainer.model, data.eval_query, data.eval_gallery, batch_size=64).mAP

    before = score()
    trainer.fit()
    after = score()
    print(f"held-out IR->visible mAP before {before:.4f} after {after:.4f}")
    assert after >= before + MARGIN
