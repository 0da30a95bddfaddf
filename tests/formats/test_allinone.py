import json
import math
import warnings

import numpy as np
import pytest

from workbench.errors import DataError, SubmissionError, WorkbenchError, WorkbenchWarning
from workbench.formats import get_format, polygon_roundtrip_miou


def test_roundtrip_is_exact(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    paths = fmt.write(submission, tmp_path)
    assert paths == [tmp_path / "submission.json"]
    back = fmt.read(tmp_path, seg_sizes=seg_sizes, cls_classes=submission.cls_classes, seg_num_classes=6,
                    det_image_ids=submission.det_image_ids)
    assert back == submission  # cls, boxes (ids mapped back to names) and every mask, pixel for pixel
    assert back.seg["scene.png"].dtype == np.uint8 and back.seg["scene.png"].shape == (96, 128)
    assert polygon_roundtrip_miou(submission.seg, 6) == 1.0


def test_layout_is_what_the_organisers_scorer_reads(tmp_path, submission):
    get_format("allinone-json").write(submission, tmp_path)
    doc = json.loads((tmp_path / "submission.json").read_text())
    assert list(doc) == ["cls", "dec", "seg"]
    # cls: a list of one-entry objects
    assert doc["cls"] == [{"c1.jpg": 0}, {"c2.jpg": 2}, {"c,3.jpg": 1}]
    # dec: COCO results with the organisers' integer image ids
    assert doc["dec"][0] == {"image_id": 11, "category_id": 3, "bbox": [10.5, 20.25, 30.0, 40.125], "score": 0.9}
    assert [d["image_id"] for d in doc["dec"]] == [11, 11, 4]
    # seg: a list of one-entry objects {"<stem>.png": {class id: [[[x, y], ...], ...]}}, class 0 not written
    assert [list(e) for e in doc["seg"]] == [["convex.png"], ["hole.png"], ["island.png"], ["border.png"],
                                             ["thin.png"], ["scene.png"]]
    hole = doc["seg"][1]["hole.png"]
    assert set(hole) == {"1", "2"}
    # class 1 (the square rows/cols 5..24 with a hole at 10..19): its outer border through the centres
    # of its corner pixels (4 points), and the border of its hole through the centres of the pixels
    # 4-adjacent to the hole: rows/columns 9 and 20, the corner pixels (9, 9) ... left out (8 points)
    outer, inner = sorted(hole["1"], key=len)
    assert sorted(map(tuple, outer)) == [(5, 5), (5, 24), (24, 5), (24, 24)]
    assert sorted(map(tuple, inner)) == sorted([(10, 9), (19, 9), (20, 10), (20, 19), (19, 20), (10, 20),
                                                (9, 19), (9, 10)])
    assert all(len(p) >= 3 and all(len(pt) == 2 for pt in p) for p in hole["1"] + hole["2"])


def test_no_temp_files_left_and_failed_write_writes_nothing(tmp_path, submission):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.json"]
    bad_dir = tmp_path / "bad"
    submission.det[0]["score"] = math.nan
    with pytest.raises(SubmissionError):
        fmt.write(submission, bad_dir)
    assert not bad_dir.exists() or list(bad_dir.iterdir()) == []


def test_writing_needs_the_organisers_ids_and_distinct_stems(tmp_path, submission):
    fmt = get_format("allinone-json")
    del submission.det_image_ids["d2.jpg"]
    with pytest.raises(SubmissionError, match=r"d2\.jpg.*test_info"):
        fmt.write(submission, tmp_path)
    submission.det_image_ids["d2.jpg"] = 4
    submission.seg["thin.jpg"] = submission.seg["thin.png"]
    with pytest.raises(SubmissionError, match=r"thin\.png"):
        fmt.write(submission, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_reading_needs_sizes_and_ids(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    with pytest.raises(WorkbenchError, match="test image ids"):
        fmt.read(tmp_path, seg_sizes=seg_sizes)
    with pytest.raises(WorkbenchError, match="seg_sizes"):
        fmt.read(tmp_path, det_image_ids=submission.det_image_ids)
    del seg_sizes["thin.png"]
    with pytest.raises(DataError, match=r"seg\[4\] \(thin\.png\): no test image of that stem"):
        fmt.read(tmp_path, seg_sizes=seg_sizes, det_image_ids=submission.det_image_ids)
    with pytest.raises(DataError, match=r"dec\[2\] \(image 4\): image_id 4 is not in the test image list"):
        fmt.read(tmp_path, seg_sizes=dict(submission_sizes(submission)), det_image_ids={"d1.jpg": 11})


def submission_sizes(submission):
    return {name: mask.shape for name, mask in submission.seg.items()}


def test_seg_num_classes_inferred_when_not_given(tmp_path, submission, seg_sizes):
    fmt = get_format("allinone-json")
    fmt.write(submission, tmp_path)
    assert fmt.read(tmp_path, seg_sizes=seg_sizes, det_image_ids=submission.det_image_ids).seg_num_classes == 6


def write_doc(tmp_path, doc):
    (tmp_path / "submission.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_reader_names_every_bad_entry(tmp_path):
    fmt = get_format("allinone-json")
    write_doc(tmp_path, {"cls": [{"a.jpg": 1}, {"b.jpg": "cat"}, {"a.jpg": 3}, {"c.jpg": 1, "d.jpg": 2}],
                         "dec": [{"image_id": "road1.jpg", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
                                 {"image_id": 5, "bbox": [0, 0, 1, 1], "score": 0.5}],
                         "seg": [{"c.png": {"1": [[0, 0, 1]]}}, {"e.png": {}}]})
    with pytest.raises(DataError) as info:
        fmt.read(tmp_path, seg_sizes={"c.jpg": (4, 4)}, det_image_ids={"road1.jpg": 5})
    message = str(info.value)
    for expected in ["cls[1] (image b.jpg): class id 'cat' is not an integer",
                     "cls[2] (image a.jpg): given more than once",
                     "cls[3]: not a one-entry object",
                     "dec[0] (image road1.jpg): image_id 'road1.jpg' is not an integer image id",
                     "dec[1] (image 5): missing category_id",
                     "seg[0] (c.png): class 1: polygon 0 is not a list of [x, y] pairs",
                     "seg[1] (e.png): no test image of that stem"]:
        assert expected in message
    write_doc(tmp_path, '{"cls": [{"a.jpg": 1}], "cls": [], "dec": [], "seg": []}')
    with pytest.raises(DataError, match="cls: appears more than once"):
        fmt.read(tmp_path)
    write_doc(tmp_path, {"cls": [], "det": [], "seg": []})
    with pytest.raises(DataError, match="'dec'"):
        fmt.read(tmp_path)
    with pytest.raises(DataError, match="not found"):
        fmt.read(tmp_path / "nowhere")


def test_a_jpg_mask_name_is_read_as_the_scorer_saves_it(tmp_path, simple_masks):
    # the scorer cv2.imwrite()s the painted mask under the submitted name: a .jpg is JPEG-compressed
    from workbench.formats.polygons import mask_to_polygons
    mask = simple_masks["hole.png"]
    polys = {str(c): p for c, p in mask_to_polygons(mask).items()}
    write_doc(tmp_path, {"cls": [], "dec": [], "seg": [{"hole.jpg": polys}]})
    with pytest.warns(WorkbenchWarning, match=r"saved as \.jpg"):
        back = get_format("allinone-json").read(tmp_path, seg_sizes={"hole.jpg": mask.shape})
    assert (back.seg["hole.jpg"] != mask).any()  # compression moved labels
    write_doc(tmp_path, {"cls": [], "dec": [], "seg": [{"hole.png": polys}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = get_format("allinone-json").read(tmp_path, seg_sizes={"hole.jpg": mask.shape})
    np.testing.assert_array_equal(back.seg["hole.jpg"], mask)


def test_the_earlier_layout_is_read_with_a_warning(tmp_path):
    # the workbench's earlier layout: objects keyed by image name, file names as image_id, flat pixel-edge polygons
    earlier = {"cls": {"a.jpg": 2},
               "dec": [{"image_id": "road1.jpg", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}],
               "seg": {"s.jpg": {"0": [[0, 0, 4, 0, 4, 3, 0, 3]], "2": [[1, 1, 3, 1, 3, 2, 1, 2]]}}}
    write_doc(tmp_path, earlier)
    with pytest.warns(WorkbenchWarning, match="earlier allinone-json layout"):
        back = get_format("allinone-json").read(tmp_path, seg_sizes={"s.jpg": (3, 4)})
    assert back.cls == {"a.jpg": 2}
    assert back.det == [{"image": "road1.jpg", "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    expected = np.zeros((3, 4), np.uint8)
    expected[1, 1:3] = 2  # pixel-edge square x 1..3, y 1..2: row 1, columns 1 and 2
    np.testing.assert_array_equal(back.seg["s.jpg"], expected)
