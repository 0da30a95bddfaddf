"""fuse_boxes: ensemble-boxes' WBF / NMS / soft-NMS on sanitised, normalised xyxy boxes.

WBF (ensemble-boxes 1.0.9, conf_type="avg") by its definition: every box enters with the
confidence c = score * member weight; a cluster's box is the c-weighted mean of its boxes; its
score is mean(c) * min(n_members, n_boxes_in_cluster) / sum(member weights).
"""
import math

import numpy as np
import pytest

from workbench.fuse.det import fuse_boxes, list_fusions, sanitise
from workbench.records.predictions import DetBoxes

BOX_A = [0.10, 0.10, 0.50, 0.50]
BOX_B = [0.12, 0.14, 0.52, 0.50]
S_A, S_B = 0.8, 0.6
W_A, W_B = 1.0, 3.0
# IoU(A, B) = (0.50 - 0.12) * (0.50 - 0.14) / (0.4 * 0.4 + 0.4 * 0.36 - 0.38 * 0.36) ~ 0.82 > 0.55
IOU_AB = 0.38 * 0.36 / (0.4 * 0.4 + 0.4 * 0.36 - 0.38 * 0.36)


def dets(boxes, scores, labels=None) -> DetBoxes:
    labels = [0] * len(scores) if labels is None else labels
    return DetBoxes(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                    np.array(labels, np.int64))


def member_a():
    return dets([BOX_A], [S_A])


def member_b():
    return dets([BOX_B], [S_B])


def wbf_box_ab():
    """The c-weighted mean of A and B, c = score * weight."""
    ca, cb = S_A * W_A, S_B * W_B
    return [(ca * a + cb * b) / (ca + cb) for a, b in zip(BOX_A, BOX_B)]


def test_registry_lists_the_three_methods():
    assert list_fusions() == ["nms", "soft-nms", "wbf"]


def test_wbf_two_members_by_hand():
    out = fuse_boxes([member_a(), member_b()], [W_A, W_B])
    assert len(out.scores) == 1
    np.testing.assert_allclose(out.boxes[0], wbf_box_ab(), rtol=1e-5)
    # mean(c) * min(2 members, 2 boxes) / (W_A + W_B) = the weighted mean of the scores
    expected = (S_A * W_A + S_B * W_B) / 2 * min(2, 2) / (W_A + W_B)
    assert out.scores[0] == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx((0.8 + 3 * 0.6) / 4)
    assert out.labels.tolist() == [0] and out.labels.dtype == np.int64
    assert out.boxes.dtype == np.float32 and out.scores.dtype == np.float32


def test_wbf_weights_matter():
    """Swapping the weights moves the fused box towards the other member."""
    out = fuse_boxes([member_a(), member_b()], [W_B, W_A])
    ca, cb = S_A * W_B, S_B * W_A
    np.testing.assert_allclose(out.boxes[0], [(ca * a + cb * b) / (ca + cb) for a, b in zip(BOX_A, BOX_B)], rtol=1e-5)
    assert out.scores[0] == pytest.approx((S_A * W_B + S_B * W_A) / (W_A + W_B), rel=1e-5)


def test_wbf_other_class_is_not_merged():
    out = fuse_boxes([member_a(), dets([BOX_B], [S_B], [1])], [W_A, W_B])
    assert sorted(out.labels.tolist()) == [0, 1]
    # each box is a cluster of one: c * min(2, 1) / (W_A + W_B)
    by_label = dict(zip(out.labels.tolist(), out.scores.tolist()))
    assert by_label[0] == pytest.approx(S_A * W_A * 1 / (W_A + W_B), rel=1e-5)
    assert by_label[1] == pytest.approx(S_B * W_B * 1 / (W_A + W_B), rel=1e-5)


def test_weight_zero_member_is_left_out():
    # the weight-0 member has two overlapping boxes (its own cluster would be 0/0 = NaN in WBF)
    # and a far box (that would come out with score 0).
    zero = dets([[0.70, 0.70, 0.90, 0.90], [0.71, 0.70, 0.90, 0.91], [0.0, 0.6, 0.2, 0.8]], [0.9, 0.9, 0.9])
    out = fuse_boxes([member_a(), zero, member_b()], [W_A, 0.0, W_B])
    ref = fuse_boxes([member_a(), member_b()], [W_A, W_B])
    assert np.isfinite(out.boxes).all() and np.isfinite(out.scores).all()
    np.testing.assert_allclose(out.boxes, ref.boxes)
    np.testing.assert_allclose(out.scores, ref.scores)


def test_only_one_member_with_weight_gives_its_boxes():
    out = fuse_boxes([member_a(), member_b()], [0.0, W_B])
    np.testing.assert_allclose(out.boxes, [BOX_B])
    np.testing.assert_allclose(out.scores, [S_B])


def test_member_without_boxes_down_weights_the_lone_box():
    empty = DetBoxes.empty()
    out = fuse_boxes([empty, member_b()], [W_A, W_B])
    np.testing.assert_allclose(out.boxes, [BOX_B])
    # cluster of one box: S_B * W_B * min(2, 1) / (W_A + W_B) = 0.6 * 3 / 4
    assert out.scores[0] == pytest.approx(S_B * W_B * min(2, 1) / (W_A + W_B), rel=1e-5)
    out = fuse_boxes([member_a(), empty], [W_A, W_B])
    assert out.scores[0] == pytest.approx(S_A * W_A / (W_A + W_B), rel=1e-5)


@pytest.mark.parametrize("method", ["wbf", "nms", "soft-nms"])
def test_all_members_empty_gives_empty(method):
    out = fuse_boxes([DetBoxes.empty(), DetBoxes.empty()], [1, 1], method)
    assert out.boxes.shape == (0, 4) and out.scores.shape == (0,) and out.labels.shape == (0,)
    assert out.labels.dtype == np.int64


@pytest.mark.parametrize("method", ["nms", "soft-nms"])
def test_nms_with_one_empty_member(method):
    out = fuse_boxes([DetBoxes.empty(), member_b()], [W_A, W_B], method)
    np.testing.assert_allclose(out.boxes, [BOX_B])


def test_sanitise_drops_and_clips():
    d = dets([BOX_A,                      # kept
              [np.nan, 0.1, 0.2, 0.2],    # NaN: dropped
              [0.3, 0.3, 0.3, 0.6],       # zero width: dropped
              [-0.2, 0.5, 0.4, 1.3],      # outside: clipped to [0, 0.5, 0.4, 1]
              [1.2, 0.1, 1.5, 0.2],       # wholly right of the image: zero width after clipping
              [0.2, 0.2, 0.4, 0.4]],      # kept, score NaN: dropped
             [1.5, 0.9, 0.9, 0.4, 0.9, np.nan], [0, 1, 2, 3, 4, 5])
    out = sanitise(d)
    np.testing.assert_allclose(out.boxes, [BOX_A, [0.0, 0.5, 0.4, 1.0]])
    np.testing.assert_allclose(out.scores, [1.0, 0.4])  # 1.5 clipped to 1
    assert out.labels.tolist() == [0, 3]


def test_nan_box_does_not_drop_the_fused_box():
    noisy = dets([BOX_A, [np.nan] * 4, [0.2, 0.2, 0.2, 0.3]], [S_A, 0.9, 0.9])
    out = fuse_boxes([noisy, member_b()], [W_A, W_B])
    assert len(out.scores) == 1
    np.testing.assert_allclose(out.boxes[0], wbf_box_ab(), rtol=1e-5)


def test_box_outside_is_clipped_before_fusion():
    out = fuse_boxes([dets([[-0.1, 0.2, 0.3, 1.4]], [0.5])], [1.0])
    np.testing.assert_allclose(out.boxes, [[0.0, 0.2, 0.3, 1.0]])


def test_scores_above_one_are_clipped():
    out = fuse_boxes([dets([BOX_A], [1.5]), member_b()], [W_A, W_B])
    assert out.scores[0] == pytest.approx((1.0 * W_A + S_B * W_B) / (W_A + W_B), rel=1e-5)
    ca, cb = 1.0 * W_A, S_B * W_B
    np.testing.assert_allclose(out.boxes[0], [(ca * a + cb * b) / (ca + cb) for a, b in zip(BOX_A, BOX_B)], rtol=1e-5)


def test_nms_keeps_the_higher_weighted_score():
    # NMS rescales scores by weight / sum(weights): A 0.8 * 1/4 = 0.2, B 0.6 * 3/4 = 0.45 -> B survives
    out = fuse_boxes([member_a(), member_b()], [W_A, W_B], "nms")
    np.testing.assert_allclose(out.boxes, [BOX_B])
    assert out.scores[0] == pytest.approx(S_B * W_B / (W_A + W_B), rel=1e-5)


def test_soft_nms_decays_the_overlapping_score():
    # Gaussian soft-NMS (sigma 0.5): B (0.45) is kept as is, A's 0.2 decays by exp(-IoU^2 / 0.5)
    out = fuse_boxes([member_a(), member_b()], [W_A, W_B], "soft-nms")
    np.testing.assert_allclose(out.boxes, [BOX_B, BOX_A])
    expected = [S_B * W_B / (W_A + W_B), S_A * W_A / (W_A + W_B) * math.exp(-IOU_AB ** 2 / 0.5)]
    np.testing.assert_allclose(out.scores, expected, rtol=1e-5)


@pytest.mark.parametrize("method", ["wbf", "nms", "soft-nms"])
def test_callers_arrays_are_not_mutated(method):
    a, b = dets([BOX_A, [0.6, 0.6, 0.9, 0.9]], [S_A, 0.3]), dets([BOX_B], [S_B])
    before = [(m.boxes.copy(), m.scores.copy(), m.labels.copy()) for m in (a, b)]
    fuse_boxes([a, b], [W_A, W_B], method)
    for m, (bx, sc, lb) in zip((a, b), before):
        np.testing.assert_array_equal(m.boxes, bx)
        np.testing.assert_array_equal(m.scores, sc)
        np.testing.assert_array_equal(m.labels, lb)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse_boxes([member_a(), member_b()], None, "median")


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [1.0, float("nan")]])
def test_bad_weights_raise(weights):
    with pytest.raises(ValueError):
        fuse_boxes([member_a(), member_b()], weights)


@pytest.mark.parametrize("method", ["wbf", "nms", "soft-nms"])
@pytest.mark.parametrize("n_members", [1, 2])
def test_output_sorted_by_score(method, n_members):
    boxes = [[0.0, 0.0, 0.1, 0.1], [0.3, 0.3, 0.4, 0.4], [0.6, 0.6, 0.7, 0.7], [0.8, 0.0, 0.9, 0.1]]
    a = dets(boxes, [0.2, 0.9, 0.5, 0.7], [0, 1, 0, 2])
    b = dets(boxes[:2], [0.4, 0.1], [0, 1])
    out = fuse_boxes([a, b][:n_members], [1.0, 2.0][:n_members], method)
    # soft-NMS keeps the two duplicates, decayed by exp(-1 / 0.5), instead of dropping them
    assert len(out.scores) == (6 if method == "soft-nms" and n_members == 2 else 4)
    assert (np.diff(out.scores) <= 0).all(), out.scores


@pytest.mark.parametrize("method", ["wbf", "nms", "soft-nms"])
def test_skip_box_thr_drops_low_boxes(method):
    a = dets([BOX_A, [0.6, 0.6, 0.9, 0.9]], [S_A, 0.05])
    out = fuse_boxes([a, member_b()], [W_A, W_B], method, skip_box_thr=0.1)
    assert not ((out.boxes[:, 0] > 0.55) & (out.boxes[:, 2] > 0.85)).any()  # the 0.05 box is gone
    out = fuse_boxes([a], [W_A], method, skip_box_thr=0.1)  # lone member
    np.testing.assert_allclose(out.boxes, [BOX_A])
