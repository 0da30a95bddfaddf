"""The numbers a report shows: members' predictions, score rows, confusion, precision-recall curves, IoU."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix as cls_confusion_matrix

from workbench.data.spec import DatasetSpec
from workbench.ensemble.members import member_predictions, member_tasks
from workbench.ensemble.spec import blend_spec
from workbench.errors import DataError, WorkbenchError
from workbench.io import read_mask
from workbench.metrics.det import ap50_from_eval, evaluate_detections
from workbench.metrics.scoring import score, score_predictions
from workbench.metrics.seg import SegEvaluator
from workbench.records import GroundTruth, Predictions, Submission
from workbench.records.ensemble import Member
from workbench.records.tasks import TASKS
from workbench.report.targets import ReportConfig, Target
from workbench.score import score_submission


TEST_ROW = "test (sealed truth)"


@dataclass(frozen=True)
class PRCurves:
    """COCOeval's interpolated precision at IoU 0.5: recall (R,), precision (R, K) with -1 where a
    category has no ground truth, category ids (K,), AP50 per category id (NaN without ground truth)."""

    recall: np.ndarray
    precision: np.ndarray
    category_ids: list[int]
    ap50: dict[int, float]


# -- predictions and scores ------------------------------------------------------------------
def build_member_predictions(target: Target, config: ReportConfig, progress: bool) -> dict[Member, Predictions]:
    """Each member's predictions on the report's split (from the run's cache when it is valid)."""
    return dict(zip(target.members, member_predictions(target.members, config.data, config.split, config.device,
                                                       progress)))


def build_primary(target: Target, preds: dict[Member, Predictions]) -> Predictions:
    """The predictions the figures show: the blend of an ensemble, the run's own otherwise."""
    if target.ensemble is None:
        return preds[target.members[0]]
    return blend_spec(target.ensemble, preds)


def list_tasks(target: Target) -> tuple[str, ...]:
    """Tasks the figures cover: every task for a blend, the run's own tasks for a run."""
    return TASKS if target.ensemble is not None else member_tasks(target.members[0])


def build_score_rows(target: Target, preds: dict[Member, Predictions], primary: Submission, truth: GroundTruth,
                     spec: DatasetSpec) -> list[tuple[str, dict]]:
    """(label, metrics) rows: each member on the tasks it serves, then the blend (ensembles only).

    The run of a run target is labelled by its folder name, members by `Member.label`.
    """
    if target.ensemble is None:
        return [(target.path.name, score(primary, truth, tasks=list_tasks(target)))]
    rows = [(m.label, score_predictions(p, truth, tasks=member_tasks(m))) for m, p in preds.items()]
    rows.append(("blend", score(primary, truth)))
    return rows


def check_request(target: Target, config: ReportConfig) -> None:
    """Refuse, before any prediction, what cannot be reported: an unlabelled split, a test score of a non-submission."""
    if config.split not in ("train", "val"):
        raise DataError(config.data, f"the report scores predictions: use a labelled split (val or train), "
                                     f"not {config.split!r}")
    if config.score_test and target.kind != "submission":
        raise WorkbenchError(f"{target.path}: a test score needs a submission folder, this is a {target.kind}")


def score_test_row(target: Target, data: str) -> tuple[str, dict]:
    """The submission's score on the sealed test truth (through `workbench.score`, the only reader of truth/)."""
    return TEST_ROW, score_submission(target.path, data)


# -- per-task analyses -----------------------------------------------------------------------
def count_confusion(sub: Submission, truth: GroundTruth, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts of the split's images, rows = true class, columns = predicted class."""
    names = list(truth.cls)
    return cls_confusion_matrix([truth.cls[n] for n in names], [sub.cls.get(n, -1) for n in names],
                                labels=list(range(num_classes)))


def find_most_confused(cm: np.ndarray, classes: list[str], top: int = 5) -> list[tuple[str, str, int, float]]:
    """The `top` off-diagonal cells with most images: (true name, predicted name, count, share of the true class).

    Ties keep (true, predicted) index order; cells with no image are left out.
    """
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = cm.sum(axis=1)
    out = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        out.append((classes[i], classes[j], int(off[i, j]), float(off[i, j] / rows[i])))
    return out


def compute_pr_curves(sub: Submission, truth: GroundTruth) -> PRCurves | None:
    """Precision-recall at IoU 0.5 per category from pycocotools; None when there is no detection.

    Args:
        sub: its `det` holds {"image": file name, "category_id", "bbox": [x, y, w, h] pixels, "score"}.
        truth: its `det` is the split's COCO ground truth (file_name identifies an image).
    """
    ids = {im["file_name"]: im["id"] for im in truth.det["images"]}
    results = [{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
               for d in sub.det if d["image"] in ids]
    evaluator = evaluate_detections(truth.det, results)
    if evaluator is None:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
    params = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    # precision: (T iou thresholds, R recall points, K categories, A area ranges ("all" first), M max dets)
    precision = evaluator.eval["precision"][t, :, :, 0, -1]
    return PRCurves(np.asarray(params.recThrs), precision, [int(c) for c in params.catIds], ap50_from_eval(evaluator))


def evaluate_seg(sub: Submission, truth: GroundTruth) -> SegEvaluator:
    """A SegEvaluator that has processed every image of the split (its confusion gives IoU per class)."""
    ev = SegEvaluator(truth.seg_num_classes, truth.ignore_index)
    for name, mask_path in truth.seg.items():
        ev.process(sub.seg[name], read_mask(mask_path))
    return ev


# -- worst samples first ---------------------------------------------------------------------
def rank_cls_worst(samples: list, probs: dict) -> list:
    """Mistakes first, the most confident first (the predicted class's probability, highest first); then
    the correct images, the least sure first (the true class's probability, lowest first); ties by name."""
    def key(s):
        p = np.asarray(probs[s.name])
        k = int(np.argmax(p))
        return (0, -float(p[k]), s.name) if k != s.label else (1, float(p[s.label]), s.name)
    return sorted(samples, key=key)


def det_image_errors(pred_xyxy: np.ndarray, pred_labels, pred_scores, true_xywh: np.ndarray, true_labels,
                     iou_threshold: float = 0.5) -> tuple[int, int]:
    """(missed true boxes, false predicted boxes) of one image: the predictions (pixels, xyxy), highest
    score first, each matched to the unmatched true box of its class with the highest IoU >= the threshold
    (COCO's greedy rule at IoU 0.5)."""
    import torch
    from torchvision.ops import box_iou
    true_xyxy = np.asarray(true_xywh, np.float32).reshape(-1, 4).copy()
    true_xyxy[:, 2:] += true_xyxy[:, :2]
    pred_xyxy = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)
    if not len(pred_xyxy) or not len(true_xyxy):
        return len(true_xyxy), len(pred_xyxy)
    iou = box_iou(torch.from_numpy(pred_xyxy), torch.from_numpy(true_xyxy)).numpy()
    iou[np.asarray(pred_labels)[:, None] != np.asarray(true_labels)[None, :]] = 0.0
    taken = np.zeros(len(true_xyxy), bool)
    false = 0
    for i in np.argsort(-np.asarray(pred_scores, np.float64), kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            taken[j] = True
        else:
            false += 1
    return int((~taken).sum()), false


def rank_det_worst(samples: list, preds: Predictions, threshold: float) -> list:
    """Images with the most errors at score >= threshold (missed + false boxes) first; ties by name."""
    def key(s):
        d = preds.det[s.name]
        h, w = preds.sizes["det"][s.name]
        keep = d.scores >= threshold
        missed, false = det_image_errors(d.boxes[keep] * np.array([w, h, w, h], np.float32), d.labels[keep],
                                         d.scores[keep], s.boxes, s.labels)
        return (-(missed + false), s.name)
    return sorted(samples, key=key)


def rank_seg_worst(samples: list, masks: dict, num_classes: int, ignore_index: int) -> list:
    """Lowest per-image mIoU first (over the classes in the image's truth or prediction); ties by name.
    `masks`: name -> (predicted mask, true mask)."""
    def key(s):
        ev = SegEvaluator(num_classes, ignore_index)
        ev.process(*masks[s.name])
        return (ev.evaluate()["miou"], s.name)
    return sorted(samples, key=key)
