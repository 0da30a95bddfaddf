"""Registry-style smoke test: every backbone we support x every task, forward and backward at tiny size."""
import pytest
import torch

from workbench.errors import RunError
from workbench.models.losses import cls_loss, det_loss, seg_loss
from workbench.models.model import ModelConfig, MultiTaskModel
from workbench.records.tasks import DET_STRIDE

BACKBONES = ["resnet10t", "convnext_atto", "efficientnet_lite0", "mobilenetv3_small_050"]
B, H, W = 2, 64, 96  # non-square, multiples of 32
K_CLS, K_DET, K_SEG = 5, 3, 4


@pytest.fixture(scope="module", params=BACKBONES)
def model(request):
    torch.manual_seed(0)
    return MultiTaskModel(ModelConfig(request.param, num_cls=K_CLS, num_det=K_DET, num_seg=K_SEG))


def images(seed=0):
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_output_shapes(model):
    model.eval()
    with torch.no_grad():
        out = model(images())
    h, w = H // DET_STRIDE, W // DET_STRIDE  # 16 x 24
    assert set(out) == {"cls", "det", "seg"}
    assert out["cls"].shape == (B, K_CLS)
    assert out["det"]["heatmap"].shape == (B, K_DET, h, w)
    assert out["det"]["size"].shape == (B, 2, h, w)
    assert out["det"]["offset"].shape == (B, 2, h, w)
    assert out["seg"].shape == (B, K_SEG, h, w)
    assert out["det"]["size"].min() >= 0  # ReLU
    assert 0 <= out["det"]["offset"].min() and out["det"]["offset"].max() <= 1  # sigmoid


@pytest.mark.parametrize("tasks", [("cls",), ("det",), ("seg",), ("cls", "seg")])
def test_only_asked_tasks(model, tasks):
    model.eval()
    with torch.no_grad():
        out = model(images(), tasks=tasks)
    assert set(out) == set(tasks)


def test_backward_reaches_backbone(model):
    model.train()
    model.zero_grad()
    out = model(images())
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[50.0, 20.0, 90.0, 60.0], [4.0, 4.0, 20.0, 20.0]])]
    labels = [torch.tensor([0]), torch.tensor([2, 1])]
    masks = torch.randint(0, K_SEG, (B, H, W), generator=torch.Generator().manual_seed(1))
    loss = cls_loss(out["cls"], torch.tensor([1, 4])) + det_loss(out["det"], boxes, labels) + seg_loss(out["seg"], masks)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    first = next(p for p in model.backbone.parameters() if p.dim() == 4)  # the stem conv
    assert first.grad.abs().sum() > 0
    for task in ("cls", "det", "seg"):
        assert any(p.grad.abs().sum() > 0 for p in model.task_parameters(task))


def test_uint8_input_equals_float_over_255(model):
    model.eval()
    x = torch.randint(0, 256, (B, 3, H, W), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(x), model(x.float() / 255)
    torch.testing.assert_close(a["cls"], b["cls"])
    torch.testing.assert_close(a["seg"], b["seg"])
    torch.testing.assert_close(a["det"]["heatmap"], b["det"]["heatmap"])


def test_normalisation_uses_backbone_stats():
    m = MultiTaskModel(ModelConfig("resnet10t", 2, 2, 2, neck_channels=16))
    torch.testing.assert_close(m.mean.flatten(), torch.tensor(m.backbone.pretrained_cfg["mean"], dtype=torch.float32))
    m = MultiTaskModel(ModelConfig("resnet10t", 2, 2, 2, neck_channels=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert m.mean.flatten().tolist() == [0.5] * 3 and m.std.flatten().tolist() == [0.25] * 3


def test_config_dict_round_trip():
    cfg = ModelConfig("resnet10t", 5, 3, 4, neck_channels=16, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(ModelConfig("resnet10t", 5, 3, 4).to_dict()) == ModelConfig("resnet10t", 5, 3, 4)


def test_unknown_backbone_raises():
    with pytest.raises(RunError, match="not_a_backbone"):
        MultiTaskModel(ModelConfig("not_a_backbone", 5, 3, 4))


def test_missing_weights_file_raises(tmp_path):
    with pytest.raises(RunError, match="not found"):
        MultiTaskModel(ModelConfig("resnet10t", 5, 3, 4, pretrained=str(tmp_path / "none.safetensors")))


def test_backbone_without_stride4_level_raises():
    # a ViT's feature levels are all at stride 16
    with pytest.raises(RunError, match="stride-4"):
        MultiTaskModel(ModelConfig("vit_tiny_patch16_224", 5, 3, 4))
