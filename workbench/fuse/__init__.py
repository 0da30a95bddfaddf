"""Fuse stage: class probabilities (`cls`), boxes (`det`, ensemble-boxes), segmentation (`seg`), and
the blend of several members' Predictions (`blend`)."""
from workbench.fuse.blend import blend
from workbench.fuse.cls import fuse_probs
from workbench.fuse.det import fuse_boxes
from workbench.fuse.seg import fuse_seg_logits

__all__ = ["blend", "fuse_boxes", "fuse_probs", "fuse_seg_logits"]
