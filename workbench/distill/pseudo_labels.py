"""The teacher's pseudo-labels: its blended predictions, the F1-maximising box threshold, and the
pseudo-labelled data set on disk (`runs/pseudo/<name>/`, the dataset.yaml layout)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.data.spec import DatasetSpec
from workbench.distill.config import DistillConfig
from workbench.ensemble.members import member_predictions
from workbench.ensemble.spec import blend_spec
from workbench.io import atomic_dir, write_json, write_yaml
from workbench.metrics.det import evaluate_detections
from workbench.records import Predictions, seg_logits_to_mask
from workbench.records.tasks import TASKS


def f1_threshold(gt: dict, detections: list[dict]) -> tuple[float, float]:
    """The score threshold that maximises F1 of detections against ground truth (IoU 0.5).

    Detections are matched as pycocotools matches them (per image and category, highest score first,
    IoU >= 0.5, crowd boxes ignored); a detection's match does not depend on lower-scoring ones, so
    the F1 of every cut-off follows from one evaluation: keeping the detections with score >= t,
    F1 = 2 TP / (2 TP + FP + FN).

    Returns:
        (threshold, its F1): the threshold is a detection score (all detections at or above it are
        kept); (1.0, 0.0) when there is nothing to match.
    """
    evaluator = evaluate_detections(gt, detections)
    if evaluator is None:
        return 1.0, 0.0
    pe = evaluator._paramsEval
    t = int(np.flatnonzero(pe.iouThrs == 0.5)[0])
    a = pe.areaRngLbl.index("all")
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    scores, hits, n_gt = [], [], 0
    for k in range(len(pe.catIds)):
        for i in range(n_img):
            e = evaluator.evalImgs[k * n_area * n_img + a * n_img + i]
            if e is None:
                continue
            keep = ~np.asarray(e["dtIgnore"][t], bool)
            scores.append(np.asarray(e["dtScores"], np.float64)[keep])
            hits.append(np.asarray(e["dtMatches"][t])[keep] != 0)
            n_gt += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
    scores, hits = np.concatenate(scores), np.concatenate(hits)
    if not len(scores) or n_gt == 0:
        return 1.0, 0.0
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    f1 = 2 * tp / (2 * tp + fp + (n_gt - tp))
    # ties: a cut-off can only fall after the last detection of a given score
    last = np.r_[scores[1:] != scores[:-1], True]
    best = int(np.flatnonzero(last)[np.argmax(f1[last])])
    return float(scores[best]), float(f1[best])


def teacher_predictions(config: DistillConfig, split: str, route=None) -> Predictions:
    """The teacher's blended predictions of a split (members predicted or read from their caches)."""
    members = config.ensemble.members()
    preds = member_predictions(members, config.data, split, config.device, progress=True, route=route,
                               unlabeled=config.unlabeled if split == "unlabeled" else None)
    return blend_spec(config.ensemble, dict(zip(members, preds)))


def soft_probs(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 (class axis) in float32."""
    z = logits.astype(np.float32)
    z = np.exp(z - z.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


def link_image(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symlinks: copy
        dst.write_bytes(src.read_bytes())


def write_pseudo_dataset(out: Path, spec: DatasetSpec, preds: Predictions, unlabeled: DatasetSpec,
                         det_threshold: float, seg_confidence: float, meta: dict) -> Path:
    """Write the pseudo-labels as a data set folder (atomically); returns its dataset.yaml.

    Images are symlinked (copied where links are impossible); val and test entries point to the
    original data set, so `mtwb data check` and training read it like any other.
    """
    with atomic_dir(out) as tmp:
        # the teacher may pick no image of some class: not a fault of the set (`mtwb data check` passes it)
        entry = {"name": f"{spec.name}-pseudo", "cls": {"classes": str(spec.classes_file("cls")),
                                                         "allow_empty_classes": True},
                 "det": {}, "seg": {"classes": str(spec.classes_file("seg")), "ignore_index": spec.ignore_index}}
        for task in TASKS:  # val and test: the original data set's
            for split in ("val", "test"):
                if spec.has_split(task, split):
                    paths = spec.split_paths(task, split)
                    entry[task][split] = ({k: str(v) for k, v in paths.items()} if isinstance(paths, dict)
                                          else str(paths))
        # cls: ImageFolder by the teacher's argmax, soft probabilities beside
        cls_samples = unlabeled.cls_samples("unlabeled")
        for s in cls_samples:
            label = spec.cls_classes[int(np.argmax(preds.cls[s.name]))]
            link_image(s.path, tmp / "cls" / "train" / label / s.name)
        if cls_samples:
            entry["cls"]["train"] = "cls/train"
        names = [s.name for s in cls_samples]
        np.savez(tmp / "soft_cls.npz", names=np.array(names),
                 probs=np.stack([preds.cls[n] for n in names]).astype(np.float32) if names else np.zeros((0, 0), np.float32))
        # det: COCO boxes above the threshold
        images, annotations = [], []
        for i, s in enumerate(unlabeled.det_samples("unlabeled"), start=1):
            link_image(s.path, tmp / "det" / "images" / s.name)
            images.append({"id": i, "file_name": s.name, "width": s.width, "height": s.height})
            d = preds.det[s.name]
            for (x1, y1, x2, y2), score, cat in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()):
                if score >= det_threshold and x2 > x1 and y2 > y1:
                    annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(cat),
                                        "bbox": [x1 * s.width, y1 * s.height, (x2 - x1) * s.width, (y2 - y1) * s.height],
                                        "area": (x2 - x1) * s.width * (y2 - y1) * s.height, "iscrowd": 0,
                                        "score": round(float(score), 4)})
        write_json(tmp / "det" / "train.json", {"images": images, "annotations": annotations,
                                                "categories": spec.det_categories})
        if images:
            entry["det"]["train"] = {"annotations": "det/train.json", "images": "det/images"}
        # seg: argmax masks, low-confidence pixels ignored; logits beside
        seg_samples = unlabeled.seg_samples("unlabeled")
        for s in seg_samples:
            link_image(s.path, tmp / "seg" / "images" / s.name)
            logits = preds.seg[s.name]
            h, w = preds.sizes["seg"][s.name]
            mask = seg_logits_to_mask(logits, (h, w)).astype(np.uint8)
            confident = soft_probs(logits).max(axis=0) >= seg_confidence
            up = np.asarray(Image.fromarray(confident.astype(np.uint8)).resize((w, h), Image.NEAREST), bool)
            mask[~up] = spec.ignore_index
            (tmp / "seg" / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(tmp / "seg" / "masks" / f"{Path(s.name).stem}.png")
        if seg_samples:
            entry["seg"]["train"] = {"images": "seg/images", "masks": "seg/masks"}
        np.savez(tmp / "soft_seg.npz", **{s.name: preds.seg[s.name].astype(np.float16) for s in seg_samples})
        write_yaml(tmp / "dataset.yaml", entry)
        write_json(tmp / "meta.json", {**meta, "counts": {"cls": len(cls_samples), "det_images": len(images),
                                                         "det_boxes": len(annotations), "seg": len(seg_samples)}})
    return out / "dataset.yaml"
