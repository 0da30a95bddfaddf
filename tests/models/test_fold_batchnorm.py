"""Inference with the backbone's BatchNorm folded into its convolutions (MultiTaskModel.folded_norms):
the same outputs, per-task statistics folded per task, nothing left behind after the block."""
import warnings

import pytest
import torch
from torch import nn

from workbench.models.model import ModelConfig, MultiTaskModel, fold_batchnorm

CONFIG = dict(num_cls=5, num_det=3, num_seg=4, neck_channels=16)


def trained(norm_stats: str) -> MultiTaskModel:
    """A resnet10t model whose statistics moved away from their start (and per task apart)."""
    torch.manual_seed(0)
    m = MultiTaskModel(ModelConfig("resnet10t", norm_stats=norm_stats, **CONFIG)).train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            m(0.8 + 0.2 * torch.rand(4, 3, 32, 32, generator=g), tasks=("cls",))  # bright crops
            m(0.3 * torch.rand(2, 3, 64, 64, generator=g), tasks=("seg",))  # dark scenes
    return m.eval()


def batchnorms(module: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in module.modules())


@pytest.mark.parametrize("norm_stats", ["task", "shared"])
def test_folded_outputs_equal_the_unfolded_ones_for_every_task(norm_stats):
    m = trained(norm_stats)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = {t: m(x, tasks=(t,)) for t in ("cls", "det", "seg")}
        with m.folded_norms():
            folded = {t: m(x, tasks=(t,)) for t in ("cls", "det", "seg")}
            copies = dict(m._folded)
    assert batchnorms(m.backbone) == len(m._norms) > 0  # the model keeps its own layers
    for t in ("cls", "det", "seg"):
        a, b = plain[t][t], folded[t][t]
        for k in (a if isinstance(a, dict) else {"": a}):
            torch.testing.assert_close((b[k] if k else b), (a[k] if k else a), rtol=1e-4, atol=1e-5)
    if norm_stats == "task":  # one folded copy per task, each from its own statistics
        assert set(copies) == {"cls", "det", "seg"}
        cls_w, seg_w = (next(c.parameters()) for c in (copies["cls"], copies["seg"]))
        assert not torch.allclose(cls_w, seg_w)
    else:
        assert set(copies) == {None}
    assert all(batchnorms(c) == 0 for c in copies.values())
    assert m._folded is None  # dropped with the block


def test_weights_changed_after_the_block_are_served_not_a_stale_copy():
    m = trained("shared")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with m.folded_norms():
            before = m(x, tasks=("cls",))["cls"]
        m.backbone.conv1[0].weight.mul_(2.0)  # an EMA update or a training step, between two validations
        with m.folded_norms():
            after = m(x, tasks=("cls",))["cls"]
        torch.testing.assert_close(after, m(x, tasks=("cls",))["cls"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, after)


def test_training_never_uses_folded_layers():
    m = trained("shared")
    m.train()
    with pytest.raises(RuntimeError, match="call model.eval"):
        with m.folded_norms():
            pass
    m.eval()
    with m.folded_norms():
        m.train()  # a training step inside the block runs the real BatchNorm layers (their statistics move)
        start = m._norms[0].running_mean.clone()
        m(torch.rand(2, 3, 32, 32), tasks=("cls",))
        assert not torch.equal(m._norms[0].running_mean, start)
        assert m._folded == {}  # nothing was folded for it


class BatchNormFirst(nn.Module):
    """Registers conv then bn but runs bn first: folding by registration order would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.bn.running_mean.fill_(0.5)
        self.bn.running_var.fill_(4.0)

    def forward(self, x):
        return [self.conv(self.bn(x))]


def test_a_backbone_not_run_in_registration_order_is_not_folded():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fold_batchnorm(BatchNormFirst().eval()) is None
    assert "predicting without folding" in str(caught[0].message)


def test_a_backbone_without_batchnorm_has_nothing_to_fold():
    assert fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1)).eval()) is None
