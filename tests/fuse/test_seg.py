"""fuse_seg_logits: the fused logits are the log of the weighted mean of the members' softmaxes."""
import math

import numpy as np
import pytest

from workbench.fuse.seg import fuse_seg_logits, softmax

# K=2 classes, a 1x2-pixel image: (K, h, w) = (2, 1, 2).
# member A: pixel 0 logits (0, ln 3) -> probs (1/4, 3/4); pixel 1 (ln 3, 0) -> (3/4, 1/4)
# member B: pixel 0 logits (0, 0)    -> probs (1/2, 1/2); pixel 1 (0, ln 9) -> (1/10, 9/10)
A = np.array([[[0.0, math.log(3)]], [[math.log(3), 0.0]]], np.float32)
B = np.array([[[0.0, 0.0]], [[0.0, math.log(9)]]], np.float32)


def test_softmax_of_fused_is_weighted_mean_of_softmaxes():
    out = fuse_seg_logits([A, B], [1, 3])
    assert out.shape == (2, 1, 2) and out.dtype == np.float32
    expected = np.array([
        [[(1 * 1 / 4 + 3 * 1 / 2) / 4, (1 * 3 / 4 + 3 * 1 / 10) / 4]],  # class 0 at pixel 0, pixel 1
        [[(1 * 3 / 4 + 3 * 1 / 2) / 4, (1 * 1 / 4 + 3 * 9 / 10) / 4]],  # class 1
    ])
    np.testing.assert_allclose(softmax(out, 0), expected, rtol=1e-5)
    np.testing.assert_allclose(np.exp(out), expected, rtol=1e-5)  # the result is log-probabilities


def test_argmax_follows_weights():
    # pixel 1: A says class 0 (3/4), B says class 1 (9/10).
    # weights (1, 3): class 1 = (1/4 + 27/10) / 4 = 0.7375 > 0.2625 -> class 1
    # weights (3, 1): class 0 = (9/4 + 1/10) / 4 = 0.5875 > 0.4125 -> class 0
    assert fuse_seg_logits([A, B], [1, 3]).argmax(0)[0, 1] == 1
    assert fuse_seg_logits([A, B], [3, 1]).argmax(0)[0, 1] == 0
    # pixel 0: both members lean to class 1 (3/4 and 1/2) -> class 1 whatever the weights
    assert fuse_seg_logits([A, B], [3, 1]).argmax(0)[0, 0] == 1


def test_logit_shift_per_pixel_changes_nothing():
    shifted = A + np.array([[[5.0, -7.0]]], np.float32)  # softmax is shift invariant per pixel
    np.testing.assert_allclose(fuse_seg_logits([shifted, B], [1, 3]), fuse_seg_logits([A, B], [1, 3]), atol=1e-5)


def test_single_member_round_trips_its_probabilities():
    np.testing.assert_allclose(softmax(fuse_seg_logits([A]), 0), softmax(A, 0), rtol=1e-5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        fuse_seg_logits([A, np.zeros((2, 1, 3), np.float32)])
    with pytest.raises(ValueError, match="shape"):
        fuse_seg_logits([A, np.zeros((3, 1, 2), np.float32)])
