"""Tests of workbench/ensemble/compare.py: exact rows, pycocotools resampling, paired intervals."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.data.spec import DatasetSpec
from workbench.ensemble.compare import coco_evaluated, compare_members, resampled_map50
from workbench.ensemble.members import Member, member_predictions
from workbench.metrics.det import map50
from workbench.metrics.scoring import score, split_ground_truth
from workbench.predictions import to_submission

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def gt_of(images):
    """COCO gt: images given as lists of (category, box)."""
    anns, ims = [], []
    for i, boxes in enumerate(images, start=1):
        ims.append({"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100})
        for cat, box in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box, "area": 1, "iscrowd": 0})
    return {"images": ims, "annotations": anns, "categories": CATS}


IMAGES = [[(1, [10, 10, 20, 20])], [(1, [50, 50, 20, 20]), (2, [0, 0, 30, 30])], [(2, [60, 10, 20, 20])]]
DETS = [  # image 1: hit; image 2: a miss scoring high, the cat-1 hit low; image 3: hit
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
    {"image_id": 2, "category_id": 1, "bbox": [0, 60, 20, 20], "score": 0.95},
    {"image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.5},
    {"image_id": 3, "category_id": 2, "bbox": [60, 10, 20, 20], "score": 0.8},
]


def test_identity_resample_equals_map50():
    gt = gt_of(IMAGES)
    assert resampled_map50(coco_evaluated(gt, DETS), np.arange(3)) == pytest.approx(map50(gt, DETS))


def test_duplicated_image_equals_map50_on_really_duplicated_data():
    """Resampling image 2 twice must score as a data set that holds image 2 twice."""
    gt = gt_of(IMAGES)
    doubled = gt_of([IMAGES[0], IMAGES[1], IMAGES[1]])
    dets = [d for d in DETS if d["image_id"] in (1, 2)] + [{**d, "image_id": 3} for d in DETS if d["image_id"] == 2]
    expected = map50(doubled, dets)
    assert resampled_map50(coco_evaluated(gt, DETS), np.array([0, 1, 1])) == pytest.approx(expected)
    assert expected != pytest.approx(map50(gt, DETS))  # the resample really changes the score


def test_no_detections_scores_zero():
    assert resampled_map50(coco_evaluated(gt_of(IMAGES), []), np.arange(3)) == 0.0


def test_compare_rows_equal_the_scorer_and_intervals_are_paired(tiny_run, tiny_data, tmp_path):
    members = [Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")]
    result = compare_members(members, str(tiny_data), n_boot=50, device="cpu", out_dir=tmp_path)
    assert [label for label, _ in result.rows] == [m.label for m in members] + ["blend"]
    spec = DatasetSpec(tiny_data)
    truth = split_ground_truth(spec, "val")
    preds = member_predictions(members, str(tiny_data), "val", "cpu")
    for (label, metrics), p in zip(result.rows, preds):
        exact = score(to_submission(p, spec.cls_classes, len(spec.seg_classes)), truth)
        assert metrics == pytest.approx(exact), label
    # the best member's difference from itself is 0 in every resample
    assert result.intervals[result.best]["score"] == (0.0, 0.0)
    # cls is identical in both members (hflip applies to det and seg only): zero-width interval
    assert result.intervals[members[1].label]["cls_top1"] == (0.0, 0.0)
    assert (tmp_path / "compare.csv").read_text().count("\n") == 4
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "best member" in result.to_table()
