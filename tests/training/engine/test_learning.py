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
# moment: with pseudo labels the tiny random-init backbone stays near the untrained level on the synthetic
# data (issue #3 stays open); see the docstring for what was found and measured.
@pytest.mark.slow
def test_baseline_raises_heldout_cross_modality_map(tmp_path) -> None:
    """Done-when of issue 3 for the baseline (tiny SALCR, synthetic set of ``baseline_synthetic.yaml``).

    Found (2-core CPU, seed 1, 40 identities, 10 held out; study of 2026-12-06):

    * With the full §A.2 recipe (ColorJitter hue 0.5, channel erasing, LinearTransform, Pad(10) at 96 px)
      the tiny from-scratch model learns nothing in 240 steps even from ground-truth labels: *training*
      intra-modality mAP stays at its untrained level (vis→vis 0.28, ir→ir 0.28), loss ≈ 4.7 per term
      (> ln 30). Without those steps (``recipe=tiny``) the same loop reaches training vis→vis 0.98 and
      held-out vis→vis 0.28 → 0.78, ir→ir 0.40 → 0.60 in 480 steps, so the model *can* learn.
    * Cross-modality needs an infrared rendition that follows the visible material: with IR levels drawn
      independently of the colours, held-out IR→visible mAP stayed at 0.14 after 480 ground-truth steps;
      with the dye response of ``_synth_render._nir_response`` it went 0.14 → 0.22 (ground truth).
    * With DBSCAN pseudo labels (this test) the cluster count collapses after the first epoch (e.g.
      visible 30 → 13 clusters, outliers 134 → 218 of 480) and held-out IR→visible mAP stays at
      0.13–0.16 after 10 × 40 steps (``recipe=tiny``, 4 or 8 images per camera): still no gain.
    * The baseline has no cross-modality objective, and that caps it here: 20 × 40 steps with
      ``recipe=tiny``, 8 images per camera, lifted held-out IR→visible mAP only 0.130 → 0.162 even from
      ground-truth per-modality labels (intra-modality 0.24 → 0.55), and 0.130 → 0.165 from DBSCAN labels.
      A +0.10 cross-modality gain from scratch needs a working cross-modality stage (SALCR DAGL, SDCL CRA)
      or pretrained weights.

    Found in the second study (2026-12-06, tiny two-stream ResNet widened to 16..128, ``recipe=tiny``,
    Adam 1e-3, 4 × 4 pairs per step, 2000 steps unless said):

    * 30 training identities are too few to generalise across modalities even with ground-truth labels
      *shared* across modalities (``method=supervised``): training IR→visible mAP 0.05 → 0.76, held-out
      0.13 → 0.12–0.19 (noise). With 150 training identities (200 generated) the same supervised run
      generalises: held-out 0.04 → 0.20 (2000 steps), 0.24 (6000 steps).
    * With 150 training identities, ground-truth *per-modality* labels (the best the baseline's objective
      can do) still give no cross-modality transfer: held-out 0.040 → 0.027; also with a small common
      clothing palette (colour a weak cue) 0.037 → 0.031, and with a random colour-to-grey tone curve on
      the augmented views 0.040 → 0.035, and with one stem shared by both modalities 0.040 → 0.030. Each
      modality's pathway learns its own identity cues. An ImageNet-like start made from *visible* labels
      only (one shared stem, that tone curve on every augmented view) gives none either: 0.040 → 0.040.
    * Warm start (``model.init_from``) from that supervised model on a disjoint 100-identity synthetic
      target, SALCR 4 + 4 epochs × 40 steps, 3 seeds: held-out 0.236 at start, 0.180 / 0.187 / 0.180 after
      stage 1, 0.197 / 0.186 / 0.189 after stage 2. DAGL's cross labels are right for only 16–20 % of the
      infrared images (nearest-centroid association: 12–21 %), so stage 2 cannot add much.

    So the blocker is the start, not the trainer: unsupervised cross-modality learning needs features
    that already relate the modalities (ImageNet / LUPerson in the papers), and we found no way to make
    such a start here without identity labels.

    This test therefore fails today; it states the target, it is not tuned to pass.
    """
    cfg = load_config(
        CONFIG,
        [
            "eval.every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            "method_options.share_stem_init=true",
            "method_options.recipe=tiny",
            "stages.0.epochs=10",
            "stages.0.iters=40",
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
