"""blend: members' Predictions fused image by image, task by task."""
import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.fuse import blend
from workbench.records.ensemble import FusionConfig
from workbench.fuse.seg import softmax
from workbench.records.predictions import DetBoxes, Predictions


def member(p_cls, box, score, seg):
    p = Predictions()
    p.cls = {"c.jpg": np.array(p_cls, np.float32)}
    p.det = {"d.jpg": DetBoxes(np.array([box], np.float32), np.array([score], np.float32), np.array([5], np.int64)),
             "e.jpg": DetBoxes.empty()}
    p.seg = {"s.png": np.array(seg, np.float32)}
    p.sizes = {"cls": {}, "det": {"d.jpg": (40, 80), "e.jpg": (8, 8)}, "seg": {"s.png": (4, 8)}}
    return p


A = member([0.8, 0.2], [0.1, 0.1, 0.5, 0.5], 0.8, [[[0.0, 0.0]], [[0.0, np.log(3)]]])
B = member([0.2, 0.8], [0.12, 0.14, 0.52, 0.5], 0.6, [[[0.0, 0.0]], [[np.log(3), 0.0]]])


def test_blend_by_hand():
    out = blend([A, B], [1, 3])
    np.testing.assert_allclose(out.cls["c.jpg"], [(0.8 + 3 * 0.2) / 4, (0.2 + 3 * 0.8) / 4], rtol=1e-6)
    d = out.det["d.jpg"]
    assert d.labels.tolist() == [5]
    assert d.scores[0] == pytest.approx((0.8 * 1 + 0.6 * 3) / 4, rel=1e-5)  # WBF, see test_det.py
    assert len(out.det["e.jpg"].scores) == 0
    # class-1 probability: A (1/2 at pixel 0, 3/4 at pixel 1), B (3/4, 1/2)
    np.testing.assert_allclose(softmax(out.seg["s.png"])[1, 0], [(1 / 2 + 3 * 3 / 4) / 4, (3 / 4 + 3 * 1 / 2) / 4],
                               rtol=1e-5)
    assert out.sizes == A.sizes and out.sizes is not A.sizes


def test_blend_rejects_other_images():
    c = member([0.5, 0.5], [0.1, 0.1, 0.5, 0.5], 0.5, np.zeros((2, 1, 2)))
    c.det["f.jpg"] = DetBoxes.empty()
    with pytest.raises(WorkbenchError, match="other det images"):
        blend([A, c])


def test_blend_rejects_unknown_fusion_and_no_members():
    with pytest.raises(WorkbenchError, match="unknown fusion"):
        blend([A, B], fusion=FusionConfig(det_method="median"))
    with pytest.raises(WorkbenchError):
        blend([])
