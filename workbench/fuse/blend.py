"""Blend several members' Predictions of one split into one Predictions, image by image."""
from __future__ import annotations

from typing import Sequence

from workbench.errors import WorkbenchError
from workbench.records.tasks import TASKS
from workbench.fuse.cls import fuse_probs
from workbench.fuse.det import fuse_boxes, list_fusions
from workbench.fuse.seg import fuse_seg_logits
from workbench.records.ensemble import FusionConfig
from workbench.records.predictions import Predictions


def blend(members: Sequence[Predictions], weights: Sequence[float] | None = None,
          fusion: FusionConfig = FusionConfig(), tasks: Sequence[str] = TASKS) -> Predictions:
    """Blend members image by image: mean class probabilities, fused boxes, mean seg probabilities.

    Every member must cover the same images of each task (they were predicted on the same split).
    Tasks not in `tasks` are left empty in the result.
    """
    if not members:
        raise WorkbenchError("nothing to blend: no members")
    first = members[0]
    for task in tasks:
        names = set(getattr(first, task))
        for i, m in enumerate(members[1:], start=2):
            if set(getattr(m, task)) != names:
                raise WorkbenchError(f"member {i} predicted other {task} images than member 1")
    if fusion.det_method not in list_fusions():
        raise WorkbenchError(f"unknown fusion {fusion.det_method!r}; known: {', '.join(list_fusions())}")
    out = Predictions(sizes={t: dict(first.sizes[t]) for t in TASKS})
    if "cls" in tasks:
        out.cls = {n: fuse_probs([m.cls[n] for m in members], weights) for n in first.cls}
    if "det" in tasks:
        out.det = {n: fuse_boxes([m.det[n] for m in members], weights, fusion.det_method, fusion.iou_thr,
                                 fusion.skip_box_thr) for n in first.det}
    if "seg" in tasks:
        out.seg = {n: fuse_seg_logits([m.seg[n] for m in members], weights) for n in first.seg}
    return out
