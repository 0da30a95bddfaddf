"""Tests of workbench/score: a submission equal to the truth scores 1.0; a wrong one scores by hand."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.data.spec import DatasetSpec
from workbench.io import read_mask
from workbench.formats import get_format
from workbench.records import Submission
from workbench.score import detect_format, score_submission


def truth_submission(spec: DatasetSpec) -> Submission:
    """The sealed truth of the tiny data set, as a submission (every box with score 1)."""
    names = {im["id"]: im["file_name"] for im in spec.truth_det()["images"]}
    det = [{"image": names[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
           for a in spec.truth_det()["annotations"]]
    seg = {n: read_mask(spec.truth_seg() / n.replace(".jpg", ".png")) for n in spec.test_names("seg")}
    seg = {n: np.where(m == 255, 0, m).astype(np.uint8) for n, m in seg.items()}  # ignore pixels don't count
    return Submission(cls=dict(spec.truth_cls()), det=det, seg=seg, cls_classes=spec.cls_classes,
                      seg_num_classes=len(spec.seg_classes), det_image_ids=spec.det_test_ids())


@pytest.mark.parametrize("fmt", ["allinone-json", "coco"])
def test_truth_as_submission_scores_one(tiny_data, tmp_path, fmt):
    spec = DatasetSpec(tiny_data)
    get_format(fmt).write(truth_submission(spec), tmp_path)
    assert detect_format(tmp_path) == fmt
    assert score_submission(tmp_path, tiny_data) == pytest.approx(
        {"cls_top1": 1.0, "det_map50": 1.0, "seg_miou": 1.0, "score": 1.0})


def test_wrong_half_of_the_classes(tiny_data, tmp_path):
    spec = DatasetSpec(tiny_data)
    sub = truth_submission(spec)
    names = sorted(sub.cls)
    wrong = names[: len(names) // 2]
    for n in wrong:
        sub.cls[n] = (sub.cls[n] + 1) % len(spec.cls_classes)
    sub.det = []  # no detections: AP 0
    get_format("coco").write(sub, tmp_path)
    scores = score_submission(tmp_path, tiny_data)
    top1 = (len(names) - len(wrong)) / len(names)
    assert scores["cls_top1"] == pytest.approx(top1)
    assert scores["det_map50"] == 0.0
    assert scores["score"] == pytest.approx((top1 + 0.0 + 1.0) / 3)

