"""Detection metric: COCO AP at IoU 0.5 (mAP50), computed by pycocotools.

Conventions, all inherited from COCOeval (iouType "bbox"):
- a detection matches a ground-truth box when IoU >= 0.5; at most 100 detections per image
  (the highest scoring) are counted; crowd boxes (`iscrowd: 1`) are ignored regions;
- AP is the mean of the 101-point interpolated precision (recall 0, 0.01, ..., 1) and mAP50 the mean
  of AP over the categories that have ground truth: categories with no ground-truth box are left out.
Edge cases decided here:
- no detections at all (but some ground truth): 0.0 (pycocotools' `loadRes` raises on an empty list);
- no ground-truth box at all: NaN. There is nothing to find, so the score is undefined (COCOeval
  itself returns -1). NaN rather than 0.0 so that a misconfigured validation set poisons the mean
  score visibly instead of reading as "the model found nothing".
Backends: "pycocotools" (the reference: `mtwb score` and training use it) and "faster-coco-eval" (the
same matching and accumulation in C++, the same AP to the last digit, about 10x faster; ensemble
search scores its candidate blends with it). tests/metrics/test_det.py shows they agree.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _build_gt(gt: dict) -> dict:
    """Copy a COCO ground-truth dict, filling the keys COCOeval needs (area, iscrowd, id)."""
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"ground truth has no {key!r} list")
    annotations = []
    for i, ann in enumerate(gt["annotations"]):
        ann = dict(ann)
        x, y, w, h = (float(v) for v in ann["bbox"])
        ann["bbox"] = [x, y, w, h]
        ann.setdefault("area", w * h)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", i + 1)
        annotations.append(ann)
    return {
        "images": [dict(img) for img in gt["images"]],
        "annotations": annotations,
        "categories": [dict(cat) for cat in gt["categories"]],
    }


def _build_results(gt: dict, detections: list[dict]) -> list[dict]:
    """Copy detections as plain Python numbers (loadRes mutates its input), checking their ids."""
    image_ids = {img["id"] for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    results = []
    for i, det in enumerate(detections):
        image_id, category_id = int(det["image_id"]), int(det["category_id"])
        if image_id not in image_ids:
            raise ValueError(f"detection {i}: image_id {image_id} is not in the ground truth")
        if category_id not in category_ids:
            raise ValueError(f"detection {i}: category_id {category_id} is not in the ground truth")
        results.append({
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [float(v) for v in det["bbox"]],
            "score": float(det["score"]),
        })
    return results


def evaluate_detections(gt: dict, detections: list[dict]) -> COCOeval | None:
    """Run pycocotools' per-image matching (`COCOeval.evaluate`) once, silently.

    Args:
        gt: COCO ground truth, as for `map50`. Not modified.
        detections: COCO results [{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}].
    Returns:
        The evaluated COCOeval (not accumulated), or None when there are no detections.
    """
    gt = _build_gt(gt)
    results = _build_results(gt, detections)
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
    return evaluator


def _evaluate_faster(gt: dict, detections: list[dict]):
    """faster-coco-eval's COCOeval_faster, evaluated (not accumulated); None when there are no detections."""
    from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster  # imported where used: a C++ extension

    gt = _build_gt(gt)
    results = _build_results(gt, detections)
    if not results:
        return None
    coco_gt = FasterCOCO(gt)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iouType="bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    return evaluator


BACKENDS = {"pycocotools": evaluate_detections, "faster-coco-eval": _evaluate_faster}


def _run_cocoeval(gt: dict, detections: list[dict], backend: str = "pycocotools"):
    """Evaluate, accumulate and summarise silently; None when there are no detections."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown mAP backend {backend!r}; known: {', '.join(BACKENDS)}")
    evaluator = BACKENDS[backend](gt, detections)
    if evaluator is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
            evaluator.summarize()
    return evaluator


def ap50_from_eval(evaluator: COCOeval) -> dict[int, float]:
    """Read AP at IoU 0.5 per category from COCOeval's precision array."""
    params = evaluator.params
    assert params.iouThrs[0] == 0.5 and params.maxDets[-1] == 100
    # precision: (T iou thresholds, R recall points, K categories, A area ranges, M max dets)
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # (R, K), -1 where a category has no gt
    out = {}
    for k, cat_id in enumerate(params.catIds):
        p = precision[:, k]
        out[int(cat_id)] = float(p.mean()) if (p > -1).all() else float("nan")
    return out


def _has_gt(gt: dict) -> bool:
    return any(not ann.get("iscrowd", 0) for ann in gt["annotations"])


def _evaluate(gt: dict, detections: list[dict], backend: str = "pycocotools") -> tuple[float, dict[int, float]]:
    """Return (mAP50, {category_id: AP50}) following the module's edge-case rules."""
    cat_ids = [int(c["id"]) for c in gt["categories"]]
    if not _has_gt(gt):
        return float("nan"), {c: float("nan") for c in cat_ids}
    evaluator = _run_cocoeval(gt, detections, backend)
    if evaluator is None:
        counted = {int(a["category_id"]) for a in gt["annotations"] if not a.get("iscrowd", 0)}
        return 0.0, {c: (0.0 if c in counted else float("nan")) for c in cat_ids}
    return float(evaluator.stats[1]), ap50_from_eval(evaluator)


def map50(gt: dict, detections: list[dict], backend: str = "pycocotools") -> float:
    """Return COCO AP at IoU 0.5 averaged over categories with ground truth.

    Args:
        gt: COCO ground truth {"images": [{"id": int, ...}], "annotations": [{"image_id", "category_id",
            "bbox": [x, y, w, h] pixels, optional "iscrowd", "area", "id"}], "categories": [{"id", ...}]}.
            Not modified.
        detections: COCO results [{"image_id": int, "category_id": int, "bbox": [x, y, w, h] pixels,
            "score": float}]. Not modified.
        backend: "pycocotools" (the reference) or "faster-coco-eval" (same value, about 10x faster).

    Returns:
        mAP50 in [0, 1] (COCOeval's stats[1]); 0.0 with no detections; NaN with no ground-truth box.

    Raises:
        ValueError: a detection names an image or category absent from `gt`, or an unknown backend.
    """
    return _evaluate(gt, detections, backend)[0]


def ap50_per_category(gt: dict, detections: list[dict]) -> dict[int, float]:
    """Return AP at IoU 0.5 of each category (same arguments and rules as `map50`).

    Returns:
        {category_id: AP50}; NaN for a category without ground-truth boxes.
    """
    return _evaluate(gt, detections)[1]


class DetEvaluator:
    """Accumulate images with their boxes, then report mAP50 through pycocotools.

    Args:
        categories: the data set's COCO categories [{"id": int, "name": str, ...}].

    After `evaluate()`, `ap50_per_category` holds {category_id: AP50} (NaN without ground truth).
    """

    def __init__(self, categories: list[dict]):
        self.categories = [dict(c) for c in categories]
        self._category_ids = {int(c["id"]) for c in self.categories}
        self.reset()

    def reset(self) -> None:
        """Forget every image processed so far."""
        self._images: list[dict] = []
        self._ids: dict[str, int] = {}
        self._annotations: list[dict] = []
        self._detections: list[dict] = []
        self.ap50_per_category: dict[int, float] = {}

    def _check_labels(self, labels: np.ndarray, what: str, image_id: str) -> None:
        unknown = sorted(set(labels.tolist()) - self._category_ids)
        if unknown:
            raise ValueError(f"DetEvaluator: image {image_id}: {what} category ids {unknown} are not known")

    def process(self, image_id: str, width: int, height: int, gt_boxes, gt_labels,
                pred_boxes, pred_scores, pred_labels) -> None:
        """Add one image.

        Args:
            image_id: the image's file name (unique; integer ids are assigned internally).
            width, height: image size in pixels.
            gt_boxes: (N, 4) ground-truth boxes, x, y, w, h in pixels.
            gt_labels: (N,) COCO category ids of the ground-truth boxes.
            pred_boxes: (M, 4) predicted boxes, x1, y1, x2, y2 in pixels.
            pred_scores: (M,) confidences.
            pred_labels: (M,) COCO category ids of the predictions.
        """
        if image_id in self._ids:
            raise ValueError(f"DetEvaluator: image {image_id} processed twice")
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels).reshape(-1).astype(np.int64)
        pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        pred_labels = np.asarray(pred_labels).reshape(-1).astype(np.int64)
        if len(gt_boxes) != len(gt_labels):
            raise ValueError(f"DetEvaluator: image {image_id}: {len(gt_boxes)} gt boxes, {len(gt_labels)} labels")
        if not len(pred_boxes) == len(pred_scores) == len(pred_labels):
            raise ValueError(
                f"DetEvaluator: image {image_id}: {len(pred_boxes)} boxes, {len(pred_scores)} scores, "
                f"{len(pred_labels)} labels"
            )
        self._check_labels(gt_labels, "ground-truth", image_id)
        self._check_labels(pred_labels, "predicted", image_id)
        coco_id = len(self._images) + 1
        self._ids[image_id] = coco_id
        self._images.append({"id": coco_id, "file_name": image_id, "width": int(width), "height": int(height)})
        for box, label in zip(gt_boxes.tolist(), gt_labels.tolist()):
            self._annotations.append({
                "id": len(self._annotations) + 1, "image_id": coco_id, "category_id": label,
                "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
            })
        xywh = np.concatenate([pred_boxes[:, :2], pred_boxes[:, 2:] - pred_boxes[:, :2]], axis=1)
        for box, score, label in zip(xywh.tolist(), pred_scores.tolist(), pred_labels.tolist()):
            self._detections.append({"image_id": coco_id, "category_id": label, "bbox": box, "score": score})

    def evaluate(self) -> dict[str, float]:
        """Return {"map50": float} over every image processed (rules of `map50`)."""
        gt = {"images": self._images, "annotations": self._annotations, "categories": self.categories}
        value, self.ap50_per_category = _evaluate(gt, self._detections)
        return {"map50": value}
