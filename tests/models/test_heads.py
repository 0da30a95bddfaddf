"""Neck and heads: shapes from feature_info alone, and the detection prior."""
import math

import torch

from workbench.models.heads import FPN, AttentionPoolHead, CenterHead, SemanticHead, conv_gn_relu

FEATS = [torch.randn(2, c, 16 // s, 24 // s) for c, s in ((8, 1), (16, 2), (32, 4))]  # strides 4, 8, 16


def test_fpn_keeps_level_sizes():
    out = FPN([8, 16, 32], 12)(FEATS)
    assert [tuple(o.shape) for o in out] == [(2, 12, 16, 24), (2, 12, 8, 12), (2, 12, 4, 6)]


def test_fpn_top_down_reaches_finest_level():
    fpn = FPN([8, 16, 32], 12).eval()
    changed = [f.clone() for f in FEATS]
    changed[2] += 1.0  # only the coarsest level changes
    with torch.no_grad():
        assert not torch.allclose(fpn(FEATS)[0], fpn(changed)[0])


def test_center_head_prior_and_ranges():
    head = CenterHead(12, num_classes=3, prior=0.1)
    assert torch.sigmoid(head.heatmap[-1].bias).allclose(torch.full((3,), 0.1))
    out = head(torch.randn(2, 12, 16, 24))
    assert out["heatmap"].shape == (2, 3, 16, 24)
    assert out["size"].min() >= 0 and out["offset"].min() >= 0 and out["offset"].max() <= 1
    # zero input features: GroupNorm -> 0, ReLU -> 0, so the heatmap is the bias: logit(0.1)
    zero = head(torch.zeros(1, 12, 4, 4))["heatmap"]
    assert torch.allclose(zero, torch.full_like(zero, math.log(0.1 / 0.9)), atol=1e-5)


def test_semantic_head_at_finest_level():
    pyramid = FPN([8, 16, 32], 12)(FEATS)
    assert SemanticHead(12, 3, num_classes=5)(pyramid).shape == (2, 5, 16, 24)


def test_attention_pool_head_shape_and_size_independence():
    head = AttentionPoolHead(32, num_classes=7).eval()
    assert head(torch.randn(2, 32, 2, 3)).shape == (2, 7)
    assert head(torch.randn(1, 32, 5, 5)).shape == (1, 7)


def test_group_norm_groups_divide_any_width():
    # at most 8 groups, and a divisor of the width: 64 -> 8, 12 -> 4, 20 -> 4, 6 -> 6
    assert [conv_gn_relu(3, c)[1].num_groups for c in (64, 12, 20, 6)] == [8, 4, 4, 6]


def test_box_size_head_keeps_a_gradient_where_a_relu_would_be_dead():
    """With every size pre-activation negative, a ReLU gives all boxes size 0 and no gradient (the run
    never detects anything again); softplus keeps both."""
    import torch.nn.functional as F

    from workbench.models.heads import CenterHead
    from workbench.models.model import ModelConfig
    for activation, alive in (("softplus", True), ("relu", False)):
        head = CenterHead(8, 3, size_activation=activation)
        torch.nn.init.constant_(head.size[-1].bias, -10.0)
        torch.nn.init.zeros_(head.size[-1].weight)
        out = head(torch.randn(1, 8, 4, 4))
        F.l1_loss(out["size"], torch.full_like(out["size"], 5.0)).backward()
        assert (head.size[-1].bias.grad.abs().sum() > 0) == alive, activation
    legacy = ModelConfig.from_dict({"backbone": "resnet10t", "num_cls": 2, "num_det": 2, "num_seg": 2})
    assert legacy.det_size_activation == "relu" and ModelConfig("resnet10t", 2, 2, 2).det_size_activation == "softplus"
