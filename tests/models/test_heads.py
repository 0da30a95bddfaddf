"""Neck and heads: shapes from feature_info alone, and the detection prior."""
import math

import pytest
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


def test_separable_block_weights_by_hand():
    from workbench.models.heads import conv_gn_relu
    full, separable = conv_gn_relu(64, 64), conv_gn_relu(64, 64, convs="separable")
    conv_weights = lambda block: sum(m.weight.numel() for m in block if isinstance(m, torch.nn.Conv2d))  # noqa: E731
    assert conv_weights(full) == 64 * 64 * 9  # 36864
    assert conv_weights(separable) == 64 * 9 + 64 * 64  # depthwise 3x3 + pointwise 1x1 = 4672
    with pytest.raises(ValueError, match="separable"):
        conv_gn_relu(8, 8, convs="dilated")


def same_shaped_twin(**other):
    """A tiny model with the default heads and one built with `other`: (default, other, their outputs on
    one 64x96 batch), after checking that every output has the same shape in both."""
    from workbench.models.model import ModelConfig, MultiTaskModel
    torch.manual_seed(0)
    base = MultiTaskModel(ModelConfig("resnet10t", 5, 3, 4, neck_channels=16))
    twin = MultiTaskModel(ModelConfig("resnet10t", 5, 3, 4, neck_channels=16, **other))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        a, b = base.eval()(x), twin.eval()(x)
    assert a["cls"].shape == b["cls"].shape and a["seg"].shape == b["seg"].shape
    assert {k: v.shape for k, v in a["det"].items()} == {k: v.shape for k, v in b["det"].items()}
    return base, twin, a, b


def test_separable_model_same_outputs_shapes_fewer_head_weights():
    from workbench.models.model import ModelConfig
    conv, sep, _, _ = same_shaped_twin(head_convs="separable")
    # 3x3 blocks at 16 channels: FPN 4 levels (strides 4-32) + det 3 branches + seg 4 levels + 1 classifier
    # = 12; each loses 16*16*9 - (16*9 + 16*16) = 1904 weights when separable
    n_blocks = sum(1 for m in conv.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                   and m.in_channels == 16 and m.groups == 1)
    count = lambda m: sum(p.numel() for p in [*m.neck.parameters(), *m.heads.parameters()])  # noqa: E731
    assert n_blocks == 12 and count(conv) - count(sep) == 12 * 1904
    legacy = ModelConfig.from_dict({"backbone": "resnet10t", "num_cls": 2, "num_det": 2, "num_seg": 2})
    assert legacy.head_convs == "conv"


def test_light_layout_drops_one_det_and_one_seg_block_same_outputs():
    from workbench.models.model import ModelConfig
    full, light, a, b = same_shaped_twin(heads="light")
    assert a["seg"].shape == b["seg"].shape == (2, 4, 16, 24)
    blocks = lambda m: sum(1 for c in m.heads.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3))  # noqa: E731
    assert blocks(full) == 3 + 4 + 1 and blocks(light) == 2 + 4  # det branches + seg levels (+ classifier block)
    # weights: one 3x3 block (16*16*9 + GroupNorm 2*16) and its 1x1 to 2 outputs (16*2 + 2) fewer in det, but the
    # shared 1x1 has 4 outputs (+16*2 + 2); seg loses its classifier block (16*16*9 + 2*16)
    count = lambda m: sum(p.numel() for p in m.heads.parameters())  # noqa: E731
    assert count(full) - count(light) == 2 * (16 * 16 * 9 + 2 * 16)
    assert ModelConfig.from_dict({"backbone": "resnet10t", "num_cls": 2, "num_det": 2, "num_seg": 2}).heads == "full"
    with pytest.raises(ValueError, match="layout"):
        CenterHead(8, 3, layout="tiny")


def test_light_det_head_reads_size_then_offset_from_one_branch():
    head = CenterHead(8, 3, layout="light").eval()
    last = head.box[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.0, 2.0, 0.0, -1.0]))
        out = head(torch.randn(1, 8, 4, 4))
    assert torch.allclose(out["size"][0, :, 0, 0], torch.tensor([math.log(2.0), math.log(1 + math.exp(2.0))]))
    assert torch.allclose(out["offset"][0, :, 0, 0], torch.tensor([0.5, 1 / (1 + math.e)]))
    assert out["heatmap"].shape == (1, 3, 4, 4)
