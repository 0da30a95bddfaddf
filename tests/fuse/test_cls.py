"""fuse_probs: weighted mean of class probabilities."""
import numpy as np
import pytest

from workbench.fuse.cls import fuse_probs

P1 = np.array([0.7, 0.2, 0.1], np.float32)
P2 = np.array([0.1, 0.3, 0.6], np.float32)


def test_weighted_mean_by_hand():
    out = fuse_probs([P1, P2], [1, 3])
    expected = [(1 * 0.7 + 3 * 0.1) / 4, (1 * 0.2 + 3 * 0.3) / 4, (1 * 0.1 + 3 * 0.6) / 4]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32
    assert out.sum() == pytest.approx(1.0)
    assert out.argmax() == 2  # member 2 (weight 3) wins although member 1 prefers class 0


def test_weights_are_normalised():
    np.testing.assert_allclose(fuse_probs([P1, P2], [2, 6]), fuse_probs([P1, P2], [1, 3]), rtol=1e-6)
    np.testing.assert_allclose(fuse_probs([P1, P2], [5, 5]), fuse_probs([P1, P2]), rtol=1e-6)
    np.testing.assert_allclose(fuse_probs([P1, P2]), (P1 + P2) / 2, rtol=1e-6)


def test_weight_zero_ignores_member():
    np.testing.assert_allclose(fuse_probs([P1, P2], [0, 1]), P2, rtol=1e-6)


def test_batched_rows():
    a, b = np.stack([P1, P2]), np.stack([P2, P1])  # (2, 3)
    out = fuse_probs([a, b], [1, 3])
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[0], (P1 + 3 * P2) / 4, rtol=1e-6)
    np.testing.assert_allclose(out[1], (P2 + 3 * P1) / 4, rtol=1e-6)


@pytest.mark.parametrize("weights", [[1, -1], [0, 0], [1], [1, 2, 3], [1, float("nan")], [1, float("inf")]])
def test_bad_weights_raise(weights):
    with pytest.raises(ValueError):
        fuse_probs([P1, P2], weights)


def test_no_members_raises():
    with pytest.raises(ValueError):
        fuse_probs([])
