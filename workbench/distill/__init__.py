"""Pseudo-label distillation: an ensemble (the teacher) labels unlabelled images; a student learns
from the labelled data plus those pseudo-labels, with soft targets for cls and seg.

`distill(config)` is the whole stage:

1. Guard: an unlabelled image whose content (sha256) equals a test image of any task is refused
   (competition rules forbid pseudo-labelling the test set), whatever its name; `allow_test`
   overrides and the warning is recorded.
2. The teacher predicts the routed unlabelled images (each member's prediction cached like any
   other, split "unlabeled") and the blend is taken as the EnsembleSpec says.
3. The detection score threshold is the one that maximises the teacher's pseudo-label F1 against
   the val ground truth (matches at IoU 0.5 by pycocotools' per-image matching).
4. The pseudo-labels are written as a data set in the `dataset.yaml` layout (`runs/pseudo/<name>/`):
   its train split holds the pseudo-labelled images (hard labels: argmax class, boxes above the
   threshold, argmax masks with low-confidence pixels set to ignore), val and test point to the
   original data set; soft targets beside it (`soft/cls.npz` class probabilities, `soft/seg.npz`
   segmentation logits at 1/4 resolution). `mtwb data check` reads it.
5. A student run (kind `student`, parents = the teacher's runs) trains on the original data plus the
   pseudo-labelled images (`TrainConfig.pseudo`).
"""
from workbench.distill.config import PSEUDO_DIR, DistillConfig, DistillError
from workbench.distill.guard import guard_against_test
from workbench.distill.pseudo_labels import f1_threshold, write_pseudo_dataset
from workbench.distill.student import distill

__all__ = ["PSEUDO_DIR", "DistillConfig", "DistillError", "distill", "f1_threshold", "guard_against_test",
           "write_pseudo_dataset"]
