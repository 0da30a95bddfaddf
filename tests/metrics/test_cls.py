import numpy as np
import pytest

from workbench.metrics import ClsEvaluator, top1_accuracy


def test_top1_accuracy_counts_matches():
    # 3 of 5 right
    assert top1_accuracy([0, 1, 2, 2, 1], [0, 1, 1, 2, 0]) == pytest.approx(3 / 5)


@pytest.mark.parametrize("pred, target", [([0, 1], [0]), ([], [])])
def test_top1_accuracy_rejects_mismatch_and_empty(pred, target):
    with pytest.raises(ValueError):
        top1_accuracy(pred, target)


def test_evaluator_accumulates_batches_with_argmax():
    ev = ClsEvaluator()
    # batch 1: argmax 1, 0 -> targets 1, 1 -> 1 right of 2
    ev.process(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    # batch 2: argmax 1 -> target 1 -> right
    ev.process(np.array([[-3.0, 2.0]]), np.array([1]))
    assert ev.evaluate() == {"top1": pytest.approx((1 + 1) / 3)}
    ev.reset()
    with pytest.raises(ValueError):
        ev.evaluate()


def test_evaluator_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        ClsEvaluator().process(np.zeros((2, 3)), np.zeros(3, dtype=int))
