"""Class-imbalance weights, derived by hand."""
import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from workbench.data.balance import (class_loss_weights, cls_sample_weights, det_sample_weights,
                                    inverse_frequency, seg_class_counts)


def test_inverse_frequency_by_hand():
    counts = np.array([1, 4, 0])
    w = inverse_frequency(counts)  # raw [1, 1/4, 0]; (1 * 1 + 4 * 1/4) / 5 = 0.4 -> divide by 0.4
    np.testing.assert_allclose(w, [2.5, 0.625, 0.0])
    assert (w * counts).sum() / counts.sum() == pytest.approx(1.0)
    # power 0.5: raw [1, 1/2]; (1 + 4 / 2) / 5 = 0.6
    np.testing.assert_allclose(inverse_frequency([1, 4], power=0.5), [1 / 0.6, 0.5 / 0.6])
    np.testing.assert_array_equal(inverse_frequency([0, 0]), [0.0, 0.0])


def test_inverse_frequency_caps_the_ratio():
    # raw [1, 1/100] -> capped at 10 * (1/100) = 0.1; mean (1 * 0.1 + 100 * 0.01) / 101 = 1.1 / 101
    w = inverse_frequency([1, 100], power=1.0, max_ratio=10.0)
    np.testing.assert_allclose(w, np.array([0.1, 0.01]) * 101 / 1.1)
    assert w.max() / w.min() == pytest.approx(10.0)


def test_cls_sample_weights_balance_sampling():
    labels = np.array([0] * 90 + [1] * 10)
    w = cls_sample_weights(labels, num_classes=3)
    # class weights 1/90 and 1/10, scaled to mean 1 over 100 samples: 100 / (2 * count)
    np.testing.assert_allclose(w[:90], 100 / (2 * 90))
    np.testing.assert_allclose(w[90:], 100 / (2 * 10))
    sampler = WeightedRandomSampler(torch.as_tensor(w), 20_000, generator=torch.Generator().manual_seed(0))
    share = (labels[list(sampler)] == 1).mean()
    assert 0.47 < share < 0.53  # 1 sigma = sqrt(0.25 / 20000) = 0.0035


def test_det_sample_weights_by_hand():
    # box counts [3, 2, 0] -> class weights prop. to [1/3, 1/2]; images take their max, the empty
    # image the smallest present (1/3): [1/3, 1/2, 1/2, 1/3] / mean (5/12) = [0.8, 1.2, 1.2, 0.8]
    w = det_sample_weights([[0, 0], [1], np.array([0, 1]), []], num_classes=3)
    np.testing.assert_allclose(w, [0.8, 1.2, 1.2, 0.8])
    np.testing.assert_array_equal(det_sample_weights([[], []], num_classes=2), [1.0, 1.0])


def test_class_loss_weights_are_float32_square_root():
    w = class_loss_weights([1, 4])
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([1 / 0.6, 0.5 / 0.6]))


def test_seg_class_counts_by_hand():
    masks = [np.array([[0, 1], [255, 1]], np.uint8), torch.tensor([[2, 2], [2, 255]])]
    np.testing.assert_array_equal(seg_class_counts(masks, num_classes=4, ignore_index=255), [1, 2, 3, 0])
    with pytest.raises(ValueError):
        seg_class_counts([np.array([[4]])], num_classes=4, ignore_index=255)
