"""Detection fusion with ensemble-boxes, on sanitised inputs.

ensemble-boxes wants normalised boxes and misbehaves on some inputs (DESIGN.md: a NaN box silently
drops most fused boxes of its class, a weight-0 member yields NaN boxes, NMS raises on empty input):
`sanitise` removes all of those before any call.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from ensemble_boxes import nms, weighted_boxes_fusion
from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float

from workbench.records.predictions import DetBoxes

FUSIONS: dict[str, Callable] = {}


def register_fusion(name: str):
    """Register a box fusion method: f(boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr)."""
    def wrap(fn):
        FUSIONS[name] = fn
        return fn
    return wrap


def list_fusions() -> list[str]:
    return sorted(FUSIONS)


@register_fusion("wbf")
def _wbf(boxes, scores, labels, weights, iou_thr, skip_box_thr):
    return weighted_boxes_fusion(boxes, scores, labels, weights=weights, iou_thr=iou_thr,
                                 skip_box_thr=skip_box_thr, conf_type="avg")


@register_fusion("nms")
def _nms(boxes, scores, labels, weights, iou_thr, skip_box_thr):
    # nms(weights=...) rescales the caller's score arrays in place: hand it copies.
    return nms(boxes, [s.copy() for s in scores], labels, weights=weights, iou_thr=iou_thr)


@register_fusion("soft-nms")
def _soft_nms(boxes, scores, labels, weights, iou_thr, skip_box_thr):
    # ensemble-boxes' soft_nms() returns the kept boxes' undecayed scores (its kernel decays a copy):
    # run that kernel per class on our own score array, which it decays and reorders in place.
    w = np.asarray(weights, np.float64)
    boxes = np.concatenate(boxes).astype(np.float64)
    scores = np.concatenate([np.asarray(s, np.float64) * wi / w.sum() for s, wi in zip(scores, w)])
    labels = np.concatenate(labels)
    thresh = max(skip_box_thr, 1e-3)
    out_boxes, out_scores, out_labels = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, np.int64)]
    for lab in np.unique(labels):
        b, s = boxes[labels == lab], scores[labels == lab].copy()
        keep = cpu_soft_nms_float(b.copy(), s, Nt=iou_thr, sigma=0.5, thresh=thresh, method=2)
        out_boxes.append(b[keep])
        out_scores.append(s[s > thresh])  # s is now sorted like `keep` and decayed
        out_labels.append(np.full(len(keep), lab, np.int64))
    return np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels)


def sanitise(d: DetBoxes) -> DetBoxes:
    """Clip boxes to [0, 1], drop non-finite or zero-area boxes and non-finite scores, clip scores to [0, 1].

    Boxes are (M, 4) normalised x1, y1, x2, y2.
    """
    boxes = np.asarray(d.boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(d.scores, np.float32).reshape(-1)
    labels = np.asarray(d.labels, np.int64).reshape(-1)
    ok = np.isfinite(boxes).all(1) & np.isfinite(scores)
    boxes = np.clip(boxes[ok], 0.0, 1.0)
    scores, labels = np.clip(scores[ok], 0.0, 1.0), labels[ok]
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return DetBoxes(boxes[ok], scores[ok], labels[ok])


def _above(d: DetBoxes, thr: float) -> DetBoxes:
    """The boxes scoring at least thr (WBF's own test; NMS and the lone-member path have none)."""
    ok = d.scores >= thr
    return DetBoxes(d.boxes[ok], d.scores[ok], d.labels[ok])


def fuse_boxes(members: Sequence[DetBoxes], weights: Sequence[float] | None = None, method: str = "wbf",
               iou_thr: float = 0.55, skip_box_thr: float = 0.0) -> DetBoxes:
    """Fuse one image's boxes from several members.

    Args:
        members: M DetBoxes of the same image (boxes normalised x1, y1, x2, y2 in [0, 1]).
        weights: M non-negative weights (None: equal); members of weight 0 are left out.
        method: a registered fusion ("wbf", "nms", "soft-nms").
        iou_thr: IoU above which boxes of one class are merged / suppressed.
        skip_box_thr: boxes scoring below it are ignored.
    Returns:
        DetBoxes with normalised boxes, scores in [0, 1] and int64 labels, highest score first.
    """
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; known: {', '.join(list_fusions())}")
    w = [1.0] * len(members) if weights is None else [float(x) for x in weights]
    if len(w) != len(members):
        raise ValueError(f"need one weight per member, got {len(w)} for {len(members)} members")
    if not all(np.isfinite(wi) and wi >= 0 for wi in w):
        raise ValueError(f"weights must be finite and non-negative, got {w}")
    kept = [(_above(sanitise(m), skip_box_thr), wi) for m, wi in zip(members, w) if wi > 0]
    if not any(len(m.scores) for m, _ in kept):
        return DetBoxes.empty()
    if len(kept) == 1:  # a lone member: fusion would only merge its own overlapping boxes
        out = kept[0][0]
    else:
        if method != "wbf":  # (ensemble-boxes' NMS raises on an empty member; WBF needs them to down-weight
            kept = [(m, wi) for m, wi in kept if len(m.scores)]  # boxes that only some members found)
        boxes, scores, labels = FUSIONS[method]([m.boxes for m, _ in kept], [m.scores for m, _ in kept],
                                                [m.labels for m, _ in kept], [wi for _, wi in kept],
                                                iou_thr, skip_box_thr)
        out = sanitise(DetBoxes(np.asarray(boxes, np.float32), np.asarray(scores, np.float32),
                                np.asarray(labels).astype(np.int64)))
    order = np.argsort(-out.scores, kind="stable")
    return DetBoxes(out.boxes[order], out.scores[order], out.labels[order])
