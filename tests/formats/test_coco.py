import csv
import json

import numpy as np
import pytest

from workbench.errors import DataError, SubmissionError, WorkbenchError
from workbench.formats import get_format
from workbench.records import Submission


def test_roundtrip_is_exact(tmp_path, submission):
    rng = np.random.default_rng(0)
    submission.seg["noise.png"] = rng.integers(0, 6, (17, 23)).astype(np.uint8)  # lossless even here
    fmt = get_format("coco")
    paths = fmt.write(submission, tmp_path)
    assert [p.name for p in paths] == ["cls.csv", "det.json", "seg.json"]
    back = fmt.read(tmp_path, cls_classes=submission.cls_classes, seg_num_classes=6,
                    det_image_ids=submission.det_image_ids)
    assert back == submission
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.csv", "det.json", "seg.json"]  # no temp files


def test_files_follow_coco_conventions(tmp_path, submission):
    get_format("coco").write(submission, tmp_path)
    with open(tmp_path / "cls.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["image", "label"], ["c1.jpg", "cat"], ["c2.jpg", "bird"], ["c,3.jpg", "dog, large"]]
    det = json.loads((tmp_path / "det.json").read_text())
    assert det[0] == {"image_id": "d1.jpg", "category_id": 3, "bbox": [10.5, 20.25, 30.0, 40.125], "score": 0.9}
    seg = json.loads((tmp_path / "seg.json").read_text())
    hole = [e for e in seg if e["image_id"] == "hole.png"]
    assert [e["category_id"] for e in hole] == [0, 1, 2]
    assert all(e["segmentation"]["size"] == [30, 30] and isinstance(e["segmentation"]["counts"], str) for e in hole)


def test_writer_needs_class_names(tmp_path):
    with pytest.raises(SubmissionError, match="a.jpg"):
        get_format("coco").write(Submission(cls={"a.jpg": 3}, cls_classes=["x", "y"]), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_reader_errors_name_the_image(tmp_path, submission):
    fmt = get_format("coco")
    fmt.write(submission, tmp_path)
    with pytest.raises(WorkbenchError, match="cls_classes"):
        fmt.read(tmp_path)
    (tmp_path / "cls.csv").write_text("image,label\na.jpg,cat\nb.jpg,cow\na.jpg,bird\n")
    with pytest.raises(DataError) as info:
        fmt.read(tmp_path, cls_classes=["cat", "bird"])
    assert "image b.jpg: label 'cow'" in str(info.value)
    assert "image a.jpg: appears more than once" in str(info.value)


def test_seg_reader_rejects_duplicates_and_overlaps(tmp_path, submission):
    fmt = get_format("coco")
    fmt.write(submission, tmp_path)
    seg = json.loads((tmp_path / "seg.json").read_text())
    thin = [e for e in seg if e["image_id"] == "thin.png"]
    (tmp_path / "seg.json").write_text(json.dumps(seg + [thin[0]]))
    with pytest.raises(DataError, match="thin.png.*appears more than once"):
        fmt.read(tmp_path, cls_classes=submission.cls_classes)
    overlap = dict(thin[0], category_id=4)  # class 0's pixels again, as class 4
    (tmp_path / "seg.json").write_text(json.dumps(seg + [overlap]))
    with pytest.raises(DataError, match="thin.png.*overlaps"):
        fmt.read(tmp_path, cls_classes=submission.cls_classes)
