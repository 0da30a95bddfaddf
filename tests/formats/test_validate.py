import math

import numpy as np
import pytest

from workbench.errors import SubmissionError
from workbench.formats import validate_submission
from workbench.records import Submission

SIZES = {"det": {"d1.jpg": (100, 200), "d2.jpg": (100, 200)}, "seg": {"s1.png": (4, 6), "s2.png": (4, 6)}}
EXPECTED = {"cls": ["c1.jpg", "c2.jpg"], "det": ["d1.jpg", "d2.jpg"], "seg": ["s1.png", "s2.png"]}


def good() -> Submission:
    return Submission(
        cls={"c1.jpg": 0, "c2.jpg": 2},
        det=[{"image": "d1.jpg", "category_id": 3, "bbox": [10.0, 10.0, 20.0, 30.0], "score": 0.5},
             {"image": "d1.jpg", "category_id": 7, "bbox": [-0.5, 0.0, 200.9, 100.0], "score": 1.0}],  # 1 px slack
        seg={"s1.png": np.zeros((4, 6), np.uint8), "s2.png": np.full((4, 6), 4, np.uint8)},
        cls_classes=["a", "b", "c"],
        seg_num_classes=5,
    )


def check(sub):
    validate_submission(sub, EXPECTED, cls_num_classes=3, det_category_ids={3, 7}, seg_num_classes=5,
                        image_sizes=SIZES)


def problems_of(sub) -> str:
    with pytest.raises(SubmissionError) as info:
        check(sub)
    return str(info.value)


def test_good_submission_passes():
    check(good())  # d2.jpg has no boxes: allowed


def test_missing_and_extra_images():
    sub = good()
    del sub.cls["c2.jpg"]
    sub.cls["zz.jpg"] = 1
    del sub.seg["s1.png"]
    sub.det.append({"image": "other.jpg", "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.1})
    msg = problems_of(sub)
    assert "cls: image c2.jpg: missing" in msg
    assert "cls: image zz.jpg: not in the test image list" in msg
    assert "seg: image s1.png: missing" in msg
    assert "det: image other.jpg: 1 box(es) on an image not in the test image list" in msg
    assert msg.startswith("submission has 4 problem(s)")


def test_duplicate_image_in_the_list_given():
    # a Submission's dicts cannot repeat a key; duplicates in files are caught by the readers
    # (tests/formats/test_allinone.py, test_coco.py). Here the check itself is exercised directly.
    from workbench.formats.validate import _check_coverage
    assert _check_coverage("cls", ["c1.jpg", "c1.jpg", "c2.jpg"], ["c1.jpg", "c2.jpg"]) == [
        "cls: image c1.jpg: given 2 times"]


def test_class_ids_out_of_range():
    sub = good()
    sub.cls["c1.jpg"] = 3
    sub.cls["c2.jpg"] = 1.0
    sub.det[0]["category_id"] = 5
    sub.seg["s2.png"][0, 0] = 5
    msg = problems_of(sub)
    assert "cls: image c1.jpg: class id 3" in msg
    assert "cls: image c2.jpg: class id 1.0" in msg
    assert "det[0] (image d1.jpg): category_id 5 is not one of [3, 7]" in msg
    assert "seg: image s2.png: mask values 4..5 outside 0..4" in msg


@pytest.mark.parametrize("bbox, words", [
    ([math.nan, 0.0, 5.0, 5.0], "is not finite"),
    ([0.0, 0.0, math.inf, 5.0], "is not finite"),
    ([10.0, 10.0, 0.0, 5.0], "no positive width"),
    ([150.0, 10.0, 52.0, 5.0], "outside the 200x100 image"),  # right edge 202 > 200 + 1
    ([10.0, -1.5, 5.0, 5.0], "outside the 200x100 image"),
    ([1.0, 2.0, 3.0], "is not 4 numbers"),
])
def test_bad_boxes(bbox, words):
    sub = good()
    sub.det[1]["bbox"] = bbox
    msg = problems_of(sub)
    assert "det[1] (image d1.jpg): bbox" in msg and words in msg


@pytest.mark.parametrize("score", [1.5, -0.1, math.nan, "0.5"])
def test_bad_scores(score):
    sub = good()
    sub.det[0]["score"] = score
    assert "det[0] (image d1.jpg): score" in problems_of(sub)


def test_bad_masks():
    sub = good()
    sub.seg["s1.png"] = np.zeros((6, 4), np.uint8)
    sub.seg["s2.png"] = np.zeros((4, 6), np.float32)
    msg = problems_of(sub)
    assert "seg: image s1.png: mask of shape (6, 4), the image is (4, 6)" in msg
    assert "seg: image s2.png: mask is not a 2-D integer array" in msg


def test_every_problem_listed_one_per_line():
    sub = good()
    for box in sub.det:
        box["score"] = 2.0
    sub.cls["c1.jpg"] = -1
    lines = problems_of(sub).splitlines()
    assert len(lines) == 1 + 3
    assert all("image" in line for line in lines[1:])
