"""Predictions on disk (round trip), seg logits -> masks, and hard decisions for a submission."""
import numpy as np
import pytest

from workbench.records.predictions import DetBoxes, Predictions, reduced_size, seg_logits_to_mask, to_submission


def make_predictions() -> Predictions:
    rng = np.random.default_rng(0)
    p = Predictions()
    p.cls = {"c1.jpg": np.array([0.1, 0.7, 0.2], np.float32), "c2.jpg": np.array([0.5, 0.2, 0.3], np.float32)}
    p.det = {"d1.jpg": DetBoxes(np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32),
                                np.array([0.9, 0.3], np.float32), np.array([3, 7], np.int64)),
             "d2.jpg": DetBoxes.empty(),  # an image without boxes, between two with boxes
             "d3.jpg": DetBoxes(np.array([[0.25, 0.25, 0.75, 0.5]], np.float32), np.array([0.6], np.float32),
                                np.array([7], np.int64))}
    p.seg = {"s1.png": rng.normal(size=(4, 3, 5)).astype(np.float16),
             "s2.png": rng.normal(size=(4, 2, 2)).astype(np.float16)}
    p.sizes = {"cls": {}, "det": {"d1.jpg": (300, 400), "d2.jpg": (10, 10), "d3.jpg": (64, 32)},
               "seg": {"s1.png": (12, 20), "s2.png": (7, 5)}}
    return p


def test_save_load_round_trip(tmp_path):
    p = make_predictions()
    p.save(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cls.npz", "det.npz", "seg.npz"]  # no temp files left
    q = Predictions.load(tmp_path, p.sizes)
    assert list(q.cls) == list(p.cls)
    for n in p.cls:
        np.testing.assert_array_equal(q.cls[n], p.cls[n])
    assert list(q.det) == list(p.det)
    for n, d in p.det.items():
        np.testing.assert_array_equal(q.det[n].boxes, d.boxes)
        np.testing.assert_array_equal(q.det[n].scores, d.scores)
        np.testing.assert_array_equal(q.det[n].labels, d.labels)
        assert q.det[n].boxes.shape == (len(d.scores), 4)
    assert q.det["d2.jpg"].labels.dtype == np.int64
    assert sorted(q.seg) == sorted(p.seg)
    for n in p.seg:
        assert q.seg[n].dtype == np.float16
        np.testing.assert_array_equal(q.seg[n], p.seg[n])
    assert q.sizes == p.sizes


def test_load_only_the_tasks_asked(tmp_path):
    p = make_predictions()
    p.save(tmp_path, tasks=("det",))
    assert [f.name for f in tmp_path.iterdir()] == ["det.npz"]
    q = Predictions.load(tmp_path, p.sizes, tasks=("cls", "det"))
    assert q.cls == {} and q.seg == {} and list(q.det) == list(p.det)


def test_empty_predictions_round_trip(tmp_path):
    Predictions().save(tmp_path)
    q = Predictions.load(tmp_path, {})
    assert q.cls == {} and q.det == {} and q.seg == {}


def test_reduced_size_is_ceil_quarter():
    assert reduced_size((480, 360)) == (120, 90)
    assert reduced_size((13, 17)) == (4, 5)  # ceil(13/4), ceil(17/4)


def test_seg_mask_of_constant_argmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    logits[2] = logits.max(0) + 1.0  # class 2 wins at every pixel, by a margin that bilinear keeps
    mask = seg_logits_to_mask(logits.astype(np.float16), (13, 17))
    assert mask.shape == (13, 17) and mask.dtype == np.uint8
    assert (mask == 2).all()


def test_seg_mask_boundary_by_hand():
    # 4 columns: class 0 wins on columns 0-1, class 1 on 2-3. Upsampling x4 (align_corners=False) samples
    # output column j at x = (j + 0.5) / 4 - 0.5; the logits cross at x = 1.5, i.e. j = 7.5.
    logits = np.zeros((2, 1, 4), np.float32)
    logits[0, :, :2] = 1.0
    logits[1, :, 2:] = 1.0
    mask = seg_logits_to_mask(logits, (2, 16))
    assert mask.tolist() == [[0] * 8 + [1] * 8] * 2


def test_to_submission_by_hand():
    p = make_predictions()
    sub = to_submission(p, ["a", "b", "c"], seg_num_classes=4)
    assert sub.cls == {"c1.jpg": 1, "c2.jpg": 0}
    h, w = 300, 400
    x1, y1, x2, y2 = 0.1, 0.2, 0.5, 0.6
    first = sub.det[0]
    assert first["image"] == "d1.jpg" and first["category_id"] == 3
    assert first["bbox"] == pytest.approx([x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h])
    assert first["bbox"] == pytest.approx([40, 60, 160, 120])
    assert first["score"] == pytest.approx(0.9)
    assert sub.det[1]["bbox"] == pytest.approx([0, 0, 400, 300])
    # d3: 64 rows x 32 columns -> [0.25 * 32, 0.25 * 64, 0.5 * 32, 0.25 * 64]
    assert sub.det[2]["image"] == "d3.jpg" and sub.det[2]["category_id"] == 7
    assert sub.det[2]["bbox"] == pytest.approx([8, 16, 16, 16])
    assert len(sub.det) == 3  # d2 contributes nothing
    assert {n: m.shape for n, m in sub.seg.items()} == {"s1.png": (12, 20), "s2.png": (7, 5)}
    assert sub.cls_classes == ["a", "b", "c"] and sub.seg_num_classes == 4
