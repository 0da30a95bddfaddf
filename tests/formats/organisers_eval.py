"""A port of the organisers' AllInOne scorer: proof that `allinone-json` scores as on the leaderboard.

Source: Open-TransMind (github.com/Traffic-X/Open-TransMind) `track1/tools/eval.py`, the scorer of
the CVPR 2023 foundation-model challenge track 1 (the same file scored the 2022 Pazhou AllInOne
contest as `PAZHOU/base/tools/eval.py`; the 2nd-place CVPR 2023 team kept it verbatim in
fenfenfenfan/OneForAll_top2 `track1/tools/eval.py`), with the two functions it calls:
`evaluation/coco_utils.py` `cocoapi_eval` (from PaddleDetection) and PaddleSeg
`paddleseg/utils/metrics.py` `calculate_area` and `mean_iou`. Written here from reading that source.

Kept as in the original: `cls` and `seg` iterated as LISTS of one-entry dicts; Top-1 = correct /
entries submitted, comparing `str(class id)` with the ground-truth file's text; `dec` through
pycocotools `loadRes` on the annotation file and COCOeval, mAP50 = stats[1]; polygons of 2 points or
fewer dropped, the rest cast to int32 and painted per class with `cv2.fillPoly` in file order onto
zeros; `category == 0` compared with the JSON STRING key (so it never skips); the painted mask
saved with `cv2.imwrite` under the submitted name and read back with PIL; prediction and truth
masks paired by sorted file name; mIoU over every class, a class absent from both counting 0.

Changed, and why:
- PaddlePaddle tensors -> NumPy (the same integer counts).
- The canvas is the truth mask's size; the original hard-codes (720, 1280), the size of every image
  of the organisers' data (on smaller truth the original stops at PaddleSeg's shape check).
- The number of classes is the data set's; the original hard-codes 19.
- Masks are painted into a folder the caller names, instead of ./polygon2mask/.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


# classification
def eval_cls(gt_path, classification):
    """Top-1 over the submitted entries; gt_path has lines "<image name> <class id>"."""
    with open(gt_path) as f:
        gts = f.readlines()
    gt_dict = {}
    for gt in gts:
        line = gt.strip().split()
        gt_dict[line[0]] = line[1]
    correct = 0
    total_cls = 0
    for cls in classification:
        for key in cls.keys():
            if gt_dict[key] == str(cls[key]):
                correct += 1
        total_cls += 1
    return correct * 1.0 / total_cls


# detection
def cocoapi_eval(jsonfile, anno_file):
    """COCOeval 'bbox' statistics of results `jsonfile` (a list or a file) against `anno_file`."""
    coco_gt = COCO(anno_file)
    coco_dt = coco_gt.loadRes(jsonfile)
    coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


def eval_dec(gt_det, pred_det):
    """mAP at IoU 0.5: COCOeval stats[1]."""
    return cocoapi_eval(pred_det, anno_file=gt_det)[1]


# segmentation
def polygon2mask(polygons, save_path, canvas_sizes):
    """Paint every image's class polygons and save the masks under their submitted names.

    Args:
        canvas_sizes: mask stem -> (H, W) of the truth mask (the original: always (720, 1280)).
    """
    os.makedirs(save_path, exist_ok=True)
    for img_info in polygons:
        img_name = None
        for img_name in img_info.keys():
            cls_polygons = img_info[img_name]
        mask = np.zeros(canvas_sizes[Path(img_name).stem], dtype=np.uint8)
        for category in cls_polygons.keys():
            polys = []
            if category == 0:  # a JSON key is a string: never true, class 0 is painted like the others
                continue
            for poly in cls_polygons[category]:
                if len(poly) <= 2:
                    continue
                polys.append(np.array(poly, dtype=np.int32))
            cv2.fillPoly(mask, polys, int(category))
        cv2.imwrite(os.path.join(save_path, img_name), mask)


def calculate_area(pred, label, num_classes, ignore_index=255):
    """PaddleSeg: per-class intersection, prediction and label pixel counts (label == ignore skipped in pred)."""
    if pred.shape != label.shape:
        raise ValueError(f"Shape of `pred` and `label should be equal, but there are {pred.shape} and {label.shape}.")
    mask = label != ignore_index
    intersect, pred_area, label_area = [], [], []
    for i in range(num_classes):
        pred_i = np.logical_and(pred == i, mask)
        label_i = label == i
        intersect.append(int(np.logical_and(pred_i, label_i).sum()))
        pred_area.append(int(pred_i.sum()))
        label_area.append(int(label_i.sum()))
    return np.array(intersect), np.array(pred_area), np.array(label_area)


def mean_iou(intersect_area, pred_area, label_area):
    """PaddleSeg: IoU per class, 0 where the union is empty; the plain mean over all classes."""
    union = pred_area + label_area - intersect_area
    class_iou = [0 if union[i] == 0 else intersect_area[i] / union[i] for i in range(len(intersect_area))]
    return np.array(class_iou), np.mean(class_iou)


def eval_seg(gt_file, pred_file, num_classes):
    """mIoU of the painted masks in `pred_file` against the truth masks in `gt_file`, paired by sorted name."""
    intersect_all = np.zeros(num_classes, np.int64)
    pred_all = np.zeros(num_classes, np.int64)
    label_all = np.zeros(num_classes, np.int64)
    pred_files = sorted(os.listdir(pred_file))
    gt_files = sorted(os.listdir(gt_file))
    for i, name in enumerate(gt_files):
        label = np.asarray(Image.open(os.path.join(gt_file, name))).astype("int64")
        pred = np.asarray(Image.open(os.path.join(pred_file, pred_files[i]))).astype("int32")
        a, p, lab = calculate_area(pred, label, num_classes, ignore_index=255)
        intersect_all += a
        pred_all += p
        label_all += lab
    return mean_iou(intersect_all, pred_all, label_all)[1]


def main(pred_file, cls_gt_file, dec_gt_file, seg_gt_file, num_classes, work_dir):
    """Score one submission.json: [Top-1, mAP50, mIoU, their mean rounded to 4 places]."""
    with open(pred_file) as f:
        obj_json = json.load(f)
    classification = obj_json["cls"]
    detection = obj_json["dec"]
    segmentation = obj_json["seg"]
    acc = eval_cls(cls_gt_file, classification)
    mAP = eval_dec(dec_gt_file, detection)
    sizes = {Path(n).stem: np.asarray(Image.open(os.path.join(seg_gt_file, n))).shape for n in os.listdir(seg_gt_file)}
    painted = os.path.join(work_dir, "polygon2mask")
    polygon2mask(segmentation, painted, sizes)
    mIoU = eval_seg(seg_gt_file, painted, num_classes)
    average_score = round(sum([acc, mAP, mIoU]) / 3.0, 4)
    return [acc, mAP, mIoU, average_score]


# ---- the organisers' ground-truth files from a workbench data set ------------------------------

def write_cls_truth(labels: dict[str, int], path: Path) -> Path:
    """The organisers' classification truth: one "<image name> <class id>" line per image."""
    Path(path).write_text("".join(f"{name} {label}\n" for name, label in labels.items()))
    return Path(path)


def score_like_organisers(sub_dir, data, work_dir) -> dict[str, float]:
    """Score a written allinone-json submission with the port, against a data set's sealed truth."""
    from workbench.data.spec import DatasetSpec  # the truth files as the organisers hold them

    spec = DatasetSpec(data)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    cls_gt = write_cls_truth(spec.truth_cls(), Path(work_dir) / "cls_gt.txt")
    det_gt = Path(work_dir) / "det_gt.json"
    det_gt.write_text(json.dumps(spec.truth_det()))
    acc, ap, miou, _ = main(Path(sub_dir) / "submission.json", cls_gt, str(det_gt), spec.truth_seg(),
                            len(spec.seg_classes), work_dir)
    return {"cls_top1": acc, "det_map50": float(ap), "seg_miou": float(miou), "score": (acc + ap + miou) / 3}


if __name__ == "__main__":  # python tests/formats/organisers_eval.py SUBMISSION_DIR DATASET_YAML
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(score_like_organisers(sys.argv[1], sys.argv[2], tmp)))
