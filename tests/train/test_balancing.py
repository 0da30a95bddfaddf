"""Tests of workbench/train/balancing.py: every method against values derived by hand, and on a toy
model where the effect must show (a no-op implementation fails each test)."""
from __future__ import annotations

import pytest
import torch

from workbench.errors import RunError
from workbench.train.balancing import (
    MagnitudeBalancer,
    PCGradBalancer,
    UncertaintyBalancer,
    clip_task_gradients,
    make_balancer,
)

TASKS = ("cls", "det", "seg")


def test_fixed_weights_scale_the_loss():
    b = make_balancer("fixed", TASKS, {"det": 2.0})
    assert b("det", torch.tensor(3.0)).item() == 6.0 and b("cls", torch.tensor(3.0)).item() == 3.0


def test_magnitude_lifts_small_losses_to_a_tenth_of_the_largest():
    b = MagnitudeBalancer(TASKS, ratio=10)
    assert b.weight("seg") == 1.0  # nothing observed yet: fixed weights
    b.observe({"cls": 100.0, "det": 1.0, "seg": 0.01})
    # floor = 100 / 10 = 10: cls keeps 1, det is lifted x10 to 10, seg x1000 to 10
    assert b.weight("cls") == 1.0
    assert b.weight("det") == pytest.approx(10.0)
    assert b.weight("seg") == pytest.approx(1000.0)
    assert b("seg", torch.tensor(0.01)).item() == pytest.approx(10.0)
    # running mean with momentum 0.9: det 0.9 * 1 + 0.1 * 11 = 2 -> floor 10 / 2 = 5
    b.observe({"cls": 100.0, "det": 11.0, "seg": 0.01})
    assert b.weight("det") == pytest.approx(5.0)
    with pytest.raises(RunError, match="ratio"):
        MagnitudeBalancer(TASKS, ratio=0.5)


def test_uncertainty_weights_move_towards_the_inverse_loss():
    """d/ds (exp(-s) L + s) = 1 - exp(-s) L: a task with a large loss gets a larger s (a smaller weight)."""
    b = UncertaintyBalancer(("cls", "det"))
    opt = torch.optim.SGD(b.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        (b("cls", torch.tensor(4.0)) + b("det", torch.tensor(0.25))).backward()
        opt.step()
    # the minimum is at exp(-s) = 1 / L: weights 0.25 and 4
    assert b.weight("cls") == pytest.approx(0.25, rel=0.05)
    assert b.weight("det") == pytest.approx(4.0, rel=0.05)


def test_pcgrad_projects_conflicting_gradients_by_hand():
    g = {"cls": torch.tensor([1.0, 0.0]), "det": torch.tensor([-1.0, 1.0])}
    # cls . det = -1 < 0: cls' = cls - (-1 / 2) det = [0.5, 0.5]; det' = det - (-1 / 1) cls = [0, 1]
    torch.testing.assert_close(PCGradBalancer(("cls", "det")).combine(g), torch.tensor([0.5, 1.5]))
    agree = {"cls": torch.tensor([1.0, 0.0]), "det": torch.tensor([1.0, 1.0])}
    torch.testing.assert_close(PCGradBalancer(("cls", "det")).combine(agree), torch.tensor([2.0, 1.0]))


def test_task_clipping_equalises_task_gradient_norms_on_a_toy_model():
    """A shared linear layer, two tasks whose losses differ by 1000x: their backbone gradients differ
    by 1000x; after task-level clipping both have the same norm, min(max_norm, mean norm)."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4)
    grads = {}
    for task, scale in (("cls", 1000.0), ("det", 1.0)):
        shared.zero_grad()
        (shared(x).pow(2).mean() * scale).backward()
        grads[task] = torch.cat([p.grad.flatten() for p in shared.parameters()])
    norms = [grads[t].norm().item() for t in grads]
    assert max(norms) / min(norms) == pytest.approx(1000.0, rel=1e-4)
    clipped = clip_task_gradients(grads, max_norm=1.0)
    assert [clipped[t].norm().item() for t in clipped] == pytest.approx([1.0, 1.0])
    # directions kept
    for t in grads:
        assert torch.nn.functional.cosine_similarity(clipped[t], grads[t], dim=0).item() == pytest.approx(1.0)
    # below the threshold: the common norm is the mean of the norms
    small = clip_task_gradients({"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0, 1.0])}, max_norm=100.0)
    assert [v.norm().item() for v in small.values()] == pytest.approx([3.0, 3.0])
    zero = clip_task_gradients({"a": torch.zeros(2), "b": torch.tensor([0.0, 2.0])}, max_norm=1.0)
    assert zero["a"].abs().sum() == 0 and zero["b"].norm().item() == pytest.approx(1.0)


def test_task_clipping_counts_the_last_norms_of_tasks_absent_from_the_step():
    """One task a step (equal-compute): its gradient is rescaled to the common norm of every task's last
    one, not merely clipped. seg 0.4 alone with det last at 2.0 and cls at 0.6: mean (0.4 + 2.0 + 0.6) / 3
    = 1.0, so min(1.0, 1.0) = 1.0 (seg scaled up 2.5x); without them: min(1.0, 0.4), seg unchanged."""
    seg = torch.tensor([0.0, 0.4])
    assert clip_task_gradients({"seg": seg}, 1.0, {"det": 2.0, "cls": 0.6})["seg"].tolist() == pytest.approx([0.0, 1.0])
    assert clip_task_gradients({"seg": seg}, 1.0)["seg"].tolist() == pytest.approx([0.0, 0.4])
    # below max_norm the mean itself: (0.4 + 0.2) / 2 = 0.3
    assert clip_task_gradients({"seg": seg}, 1.0, {"cls": 0.2})["seg"].norm().item() == pytest.approx(0.3)


def test_unknown_method_is_refused():
    with pytest.raises(RunError, match="unknown loss balancing 'gradvac'"):
        make_balancer("gradvac", TASKS)
