import math

import numpy as np
import pytest

from workbench.metrics import SegEvaluator, confusion_matrix, iou_per_class, mean_iou

# 4x4 masks, 3 classes, one ignored pixel (target 255 at [3, 3], pred says 2 there).
TARGET = np.array([
    [0, 0, 1, 1],
    [0, 0, 1, 1],
    [2, 2, 1, 1],
    [2, 2, 2, 255],
])
PRED = np.array([
    [0, 0, 1, 1],
    [0, 1, 1, 1],
    [2, 0, 1, 2],
    [2, 2, 2, 2],
])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, num_classes=3)
    # rows = target, cols = pred; 15 counted pixels (the 255 one is skipped)
    expected = np.array([
        [3, 1, 0],  # target 0: (1,1) predicted 1
        [0, 5, 1],  # target 1: (2,3) predicted 2
        [1, 0, 4],  # target 2: (2,1) predicted 0
    ])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.sum() == 15


def test_iou_and_miou_by_hand():
    cm = confusion_matrix(PRED, TARGET, num_classes=3)
    # IoU_c = tp / (tp + fp + fn)
    iou0 = 3 / (3 + 1 + 1)  # fp: target 2 -> pred 0; fn: target 0 -> pred 1
    iou1 = 5 / (5 + 1 + 1)  # fp: target 0 -> pred 1; fn: target 1 -> pred 2
    iou2 = 4 / (4 + 1 + 1)  # fp: target 1 -> pred 2; fn: target 2 -> pred 0
    np.testing.assert_allclose(iou_per_class(cm), [iou0, iou1, iou2])
    assert mean_iou(cm) == pytest.approx((iou0 + iou1 + iou2) / 3)


def test_absent_class_is_nan_and_left_out_of_mean():
    target = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    cm = confusion_matrix(pred, target, num_classes=4)  # classes 2 and 3 appear nowhere
    iou = iou_per_class(cm)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_class_only_predicted_counts_as_zero():
    target = np.array([[0, 0]])
    pred = np.array([[0, 1]])
    cm = confusion_matrix(pred, target, num_classes=2)
    np.testing.assert_allclose(iou_per_class(cm), [1 / 2, 0 / 1])
    assert mean_iou(cm) == pytest.approx((1 / 2 + 0) / 2)


def test_all_ignored_gives_nan():
    cm = confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 255), num_classes=2)
    assert cm.sum() == 0 and math.isnan(mean_iou(cm))


def test_out_of_range_values_raise():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([[3]]), np.array([[0]]), num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([[-1]]), np.array([[0]]), num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([[0]]), np.array([[7]]), num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), num_classes=3)


def test_evaluator_sums_images():
    ev = SegEvaluator(num_classes=3)
    ev.process(PRED, TARGET)
    ev.process(TARGET.clip(0, 2), TARGET)  # a perfect second image (its 255 is ignored)
    # second image adds tp only: class 0 +4, class 1 +6, class 2 +5 ; 15 more pixels
    iou = [(3 + 4) / (3 + 4 + 2), (5 + 6) / (5 + 6 + 2), (4 + 5) / (4 + 5 + 2)]
    np.testing.assert_allclose(ev.iou_per_class(), iou)
    out = ev.evaluate()
    assert out["miou"] == pytest.approx(sum(iou) / 3)
    assert out["pixel_acc"] == pytest.approx((12 + 15) / (15 + 15))
    ev.reset()
    assert ev.confusion.sum() == 0


def test_miou_conventions_by_hand():
    # 4 classes; class 3 absent from truth and prediction
    cm = np.array([[3, 1, 0, 0],   # truth 0: 3 right, 1 predicted as 1
                   [0, 2, 0, 0],   # truth 1: 2 right
                   [0, 0, 0, 0],   # truth 2: none, but 2 pixels predicted as 2 below
                   [0, 0, 0, 0]])
    cm[1, 2] = 2  # truth 1 predicted 2 twice
    iou = [3 / 4, 2 / (1 + 4), 0 / 2]  # tp / (row + column - tp)
    assert mean_iou(cm) == pytest.approx(sum(iou) / 3)  # present classes only
    assert mean_iou(cm, "organisers") == pytest.approx(sum(iou) / 4)  # absent class 3 counts 0
    with pytest.raises(ValueError, match="convention"):
        mean_iou(cm, "macro")
