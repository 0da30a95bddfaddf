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
   segmentation logits at 1/4 resolution). `wb data check` reads it.
5. A student run (kind `student`, parents = the teacher's runs) trains on the original data plus the
   pseudo-labelled images (`TrainConfig.pseudo`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.data.spec import DatasetSpec, list_images
from workbench.records.tasks import TASKS
from workbench.ensemble.members import member_predictions, member_tasks
from workbench.ensemble.spec import blend_spec
from workbench.records.ensemble import EnsembleSpec
from workbench.errors import WorkbenchError
from workbench.io import atomic_dir, hash_file, write_json, write_yaml
from workbench.metrics.det import evaluate_detections
from workbench.records import Predictions, seg_logits_to_mask, to_submission
from workbench.runs import RUNS_DIR

PSEUDO_DIR = "pseudo"


class DistillError(WorkbenchError):
    """Distillation refused (test images among the unlabelled ones, nothing to label ...)."""


@dataclass(frozen=True)
class DistillConfig:
    """A distillation: the teacher, the data, where the pseudo-labels go, and the student's TrainConfig
    fields (`train`, passed on to workbench.train.trainer.TrainConfig)."""

    ensemble: EnsembleSpec
    data: str
    name: str
    route: dict[str, str] | None = None  # task -> file-name globs of the unlabelled images it gets
    unlabeled: str | None = None  # a folder of unlabelled images (default: the data set's)
    seg_confidence: float = 0.5  # seg pixels whose teacher probability is below this are ignored
    det_threshold: float | None = None  # None: the F1-maximising threshold on val
    allow_test: bool = False
    overwrite: bool = False
    device: str = "auto"
    runs_dir: str = str(RUNS_DIR)
    train: dict = field(default_factory=dict)


def content_hashes(paths) -> dict[str, Path]:
    """sha256 of each file's bytes -> its path."""
    return {hash_file(p): Path(p) for p in paths}


def test_image_hashes(spec: DatasetSpec) -> dict[str, Path]:
    """sha256 -> path of every test image of every task (images only: no labels are read)."""
    out = {}
    for task in TASKS:
        try:
            folder = spec.split_paths(task, "test")
        except WorkbenchError:
            continue
        out.update(content_hashes(list_images(folder)))
    return out


def guard_against_test(spec: DatasetSpec, images: list[Path], allow_test: bool) -> list[str]:
    """Refuse unlabelled images whose content is a test image's (by hash, not name).

    Returns:
        Warnings (one per such image) when `allow_test`; raises DistillError otherwise.
    """
    test = test_image_hashes(spec)
    clashes = [(p, test[h]) for h, p in content_hashes(images).items() if h in test]
    if not clashes:
        return []
    lines = [f"{p} is the test image {t}" for p, t in sorted(clashes)]
    if not allow_test:
        raise DistillError(f"{len(clashes)} unlabelled image(s) are test images ({lines[0]}"
                           f"{' ...' if len(lines) > 1 else ''}): pseudo-labelling the test split is "
                           "against competition rules; --allow-test overrides")
    return [f"pseudo-labelled a test image: {line}" for line in lines]


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


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symlinks: copy
        dst.write_bytes(src.read_bytes())


def write_pseudo_dataset(out: Path, spec: DatasetSpec, preds: Predictions, unlabeled: DatasetSpec,
                         det_threshold: float, seg_confidence: float, meta: dict) -> Path:
    """Write the pseudo-labels as a data set folder (atomically); returns its dataset.yaml.

    Images are symlinked (copied where links are impossible); val and test entries point to the
    original data set, so `wb data check` and training read it like any other.
    """
    with atomic_dir(out) as tmp:
        entry = {"name": f"{spec.name}-pseudo", "cls": {"classes": str(spec.classes_file("cls"))},
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
            _link(s.path, tmp / "cls" / "train" / label / s.name)
        if cls_samples:
            entry["cls"]["train"] = "cls/train"
        names = [s.name for s in cls_samples]
        np.savez(tmp / "soft_cls.npz", names=np.array(names),
                 probs=np.stack([preds.cls[n] for n in names]).astype(np.float32) if names else np.zeros((0, 0), np.float32))
        # det: COCO boxes above the threshold
        images, annotations = [], []
        for i, s in enumerate(unlabeled.det_samples("unlabeled"), start=1):
            _link(s.path, tmp / "det" / "images" / s.name)
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
            _link(s.path, tmp / "seg" / "images" / s.name)
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


def distill(config: DistillConfig, progress: bool = True) -> tuple[Path, Path]:
    """Label the unlabelled images with the teacher, write the pseudo data set, train the student.

    Returns:
        (the pseudo data set's dataset.yaml, the student run folder).
    """
    from workbench.train.trainer import TrainConfig, train

    spec = DatasetSpec(config.data)
    unlabeled = DatasetSpec(config.data, config.route, config.unlabeled)
    routed = sorted({p for t in TASKS for p in unlabeled.unlabeled_images(t)})
    if not routed:
        raise DistillError(f"{spec.path}: no unlabelled image is routed to any task (route {config.route})")
    warnings = guard_against_test(spec, routed, config.allow_test)

    threshold, f1 = config.det_threshold, None
    if threshold is None:
        val = teacher_predictions(config, "val")
        truth = spec.ground_truth("val")
        sub = to_submission(val, spec.cls_classes, len(spec.seg_classes))
        ids = {im["file_name"]: im["id"] for im in truth.det["images"]}
        dets = [{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
                for d in sub.det if d["image"] in ids]
        threshold, f1 = f1_threshold(truth.det, dets)
    preds = teacher_predictions(config, "unlabeled", config.route)
    members = config.ensemble.members()
    meta = {"teacher": config.ensemble.to_dict(), "data": str(spec.path), "route": config.route,
            "det_threshold": threshold, "det_threshold_f1_on_val": f1, "seg_confidence": config.seg_confidence,
            "warnings": warnings, "allow_test": config.allow_test,
            "teacher_runs": sorted({Path(m.run).name for m in members}),
            "teacher_tasks": {m.ref: list(member_tasks(m)) for m in members}}
    pseudo = write_pseudo_dataset(Path(config.runs_dir) / PSEUDO_DIR / config.name, spec, preds, unlabeled,
                                  threshold, config.seg_confidence, meta)
    train_config = TrainConfig(**{"data": config.data, "name": config.name, "runs_dir": config.runs_dir,
                                  "device": config.device, **config.train, "recipe": "joint", "pseudo": str(pseudo)})
    run = train(train_config, overwrite=config.overwrite, progress=progress, kind="student", parents=meta["teacher_runs"], notes={"distill": {**meta, "pseudo": str(pseudo)}})
    return pseudo, run


__all__ = ["DistillConfig", "DistillError", "distill", "f1_threshold", "guard_against_test", "write_pseudo_dataset"]
