import json
import math

import numpy as np
import pytest

from workbench.errors import DataError, SubmissionError, WorkbenchError
from workbench.formats import get_format, polygon_roundtrip_miou
from workbench.metrics.seg import confusion_matrix, mean_iou


def test_roundtrip(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    paths = fmt.write(submission, tmp_path)
    assert paths == [tmp_path / "submission.json"]
    back = fmt.read(tmp_path, seg_sizes=seg_sizes, cls_classes=submission.cls_classes, seg_num_classes=6)
    assert back.cls == submission.cls
    assert back.det == submission.det
    # simple shapes, holes, islands, borders and thin lines come back exactly ...
    for name in ["convex.png", "hole.png", "island.png", "border.png", "thin.png"]:
        np.testing.assert_array_equal(back.seg[name], submission.seg[name])
    # ... and the scene within the measured polygon loss
    measured = polygon_roundtrip_miou({"scene.png": submission.seg["scene.png"]}, 6)
    assert measured >= 0.995
    # the reader loses exactly what polygon_roundtrip_miou measured
    cm = confusion_matrix(back.seg["scene.png"], submission.seg["scene.png"], 6)
    assert mean_iou(cm) == pytest.approx(measured)
    assert back.seg["scene.png"].dtype == np.uint8 and back.seg["scene.png"].shape == (96, 128)
    assert back.cls_classes == submission.cls_classes and back.seg_num_classes == 6


def test_layout_is_the_challenge_one(tmp_path, submission):
    get_format("allinone-json").write(submission, tmp_path)
    doc = json.loads((tmp_path / "submission.json").read_text())
    assert list(doc) == ["cls", "dec", "seg"]
    assert doc["cls"] == {"c1.jpg": 0, "c2.jpg": 2, "c,3.jpg": 1}
    assert doc["dec"][0] == {"image_id": "d1.jpg", "category_id": 3, "bbox": [10.5, 20.25, 30.0, 40.125], "score": 0.9}
    hole = doc["seg"]["hole.png"]
    assert set(hole) == {"0", "1", "2"}
    assert all(isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 8 for p in hole["1"])


def test_no_temp_files_left_and_failed_write_writes_nothing(tmp_path, submission):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.json"]
    bad_dir = tmp_path / "bad"
    submission.det[0]["score"] = math.nan
    with pytest.raises(SubmissionError):
        fmt.write(submission, bad_dir)
    assert not bad_dir.exists() or list(bad_dir.iterdir()) == []


def test_reading_polygons_needs_sizes(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    with pytest.raises(WorkbenchError, match="seg_sizes"):
        fmt.read(tmp_path)
    del seg_sizes["thin.png"]
    with pytest.raises(DataError, match="thin.png"):
        fmt.read(tmp_path, seg_sizes=seg_sizes)


def test_seg_num_classes_inferred_when_not_given(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    assert fmt.read(tmp_path, seg_sizes=seg_sizes).seg_num_classes == 6  # the scene has class 5


def write_doc(tmp_path, text):
    (tmp_path / "submission.json").write_text(text)


def test_reader_names_duplicates_and_bad_entries(tmp_path):
    fmt = get_format("allinone-json")
    write_doc(tmp_path, '{"cls": {"a.jpg": 1, "b.jpg": 2, "a.jpg": 3}, "dec": [], "seg": {}}')
    with pytest.raises(DataError, match="a.jpg: appears more than once"):
        fmt.read(tmp_path)
    write_doc(tmp_path, '{"cls": {"a.jpg": "cat"}, "dec": [{"image_id": "b.jpg", "bbox": [0, 0, 1, 1], '
                        '"score": 0.5}], "seg": {"c.png": {"1": [[0, 0, 1]]}}}')
    with pytest.raises(DataError) as info:
        fmt.read(tmp_path, seg_sizes={"c.png": (4, 4)})
    message = str(info.value)
    assert "image a.jpg" in message and "image b.jpg" in message and "missing category_id" in message
    assert "image c.png" in message
    write_doc(tmp_path, '{"cls": {}, "det": [], "seg": {}}')
    with pytest.raises(DataError, match="'dec'"):
        fmt.read(tmp_path)
    with pytest.raises(DataError, match="not found"):
        fmt.read(tmp_path / "nowhere")
