"""Round trips of every TTA view: augment then undo gives back boxes, masks and scores."""
from __future__ import annotations

import pytest
import torch

from workbench.tta.spec import TaskTTA, parse_tta
from workbench.tta.views import Compose, FiveCrop, HFlip, Scale, View, compose

H, W = 64, 96  # non-square inputs


def box_image(boxes: torch.Tensor, size=(H, W)) -> torch.Tensor:
    """(1, 1, H, W) image with 1.0 inside each box (integer xyxy), for moving boxes as pixels."""
    img = torch.zeros(1, 1, *size)
    for x1, y1, x2, y2 in boxes.long().tolist():
        img[..., y1:y2, x1:x2] = 1.0
    return img


def bounding_box(img: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(img[0, 0] > 0.5, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


GEOMETRIC = [View(), HFlip(), Scale(0.5), Scale(1.5), compose([Scale(1.5), HFlip()]), compose([HFlip(), Scale(0.75)])]


@pytest.mark.parametrize("view", GEOMETRIC, ids=lambda v: v.key)
def test_boxes_round_trip(view):
    """A box drawn as pixels and augmented lands where augmenting its coordinates says; undoing
    those coordinates gives back the original box."""
    box = torch.tensor([[10.0, 8.0, 42.0, 40.0]])
    moved = view.augment(box_image(box))
    # the augmented box read off the pixels, undone, is the original box (within the resampling of 1 px / scale)
    undone = view.undo_boxes(bounding_box(moved)[None], (H, W))
    factor = 1.0 / min((getattr(v, "factor", 1.0) for v in getattr(view, "views", (view,))), default=1.0)
    assert torch.allclose(undone, box, atol=max(1.0, factor))


@pytest.mark.parametrize("view", GEOMETRIC, ids=lambda v: v.key)
def test_seg_logits_round_trip(view):
    """Logits of a mask, augmented and undone, give back the mask (argmax) but for resampled edges."""
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[10:40, 20:70] = 1
    mask[45:60, 5:30] = 2
    logits = torch.nn.functional.one_hot(mask, 3).permute(2, 0, 1)[None].float()
    undone = view.undo_seg(view.augment(logits), (H, W))
    assert undone.shape == (1, 3, H, W)
    agree = (undone.argmax(1)[0] == mask).float().mean().item()
    assert agree == 1.0 if view.key in ("id", "hflip") else agree > 0.97


def test_hflip_is_exact():
    x = torch.arange(2 * 3 * H * W, dtype=torch.float32).view(2, 3, H, W)
    v = HFlip()
    assert torch.equal(v.undo_seg(v.augment(x), (H, W)), x)
    boxes = torch.tensor([[0.0, 1.0, 10.0, 20.0], [50.0, 2.0, 96.0, 64.0]])
    assert torch.equal(v.undo_boxes(v.undo_boxes(boxes, (H, W)), (H, W)), boxes)
    assert v.undo_boxes(boxes, (H, W)).tolist()[0] == [W - 10.0, 1.0, W - 0.0, 20.0]


def test_scale_rounds_to_multiples_of_32_and_undoes_the_real_factor():
    v = Scale(1.25)
    # H: 64 * 1.25 / 32 = 2.5 -> round half to even: 2 -> 64;  W: 96 * 1.25 / 32 = 3.75 -> 4 -> 128
    assert v.output_size((H, W)) == (64, 128)
    assert v.augment(torch.zeros(1, 3, H, W)).shape == (1, 3, 64, 128)
    # undo uses the factor really applied per axis: x * 96/128, y * 64/64
    assert v.undo_boxes(torch.tensor([[16.0, 8.0, 64.0, 40.0]]), (H, W)).tolist() == [[12.0, 8.0, 48.0, 40.0]]


def test_five_crop_averages_the_crops_scores():
    v = FiveCrop(0.5)  # upsample x2, crops of the input size: the four quadrants and the centre
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, :16, :16] = 1.0  # image 0: top-left quadrant bright
    crops = v.augment(x)
    assert crops.shape == (10, 3, 32, 32)
    # crop order: top-left, top-right, bottom-left, bottom-right, centre; the batch inside each crop.
    # Image 0's top-left crop is bright (but for one blurred edge row and column), its top-right dark.
    assert crops[0].mean() > 0.95 and crops[1].mean() == 0.0 and crops[2].mean() < 0.05
    scores = torch.arange(10, dtype=torch.float32).view(10, 1)
    # image b's crops sit at rows b, b+2, b+4, b+6, b+8: mean = b + 4
    assert v.undo_cls(scores, 2).tolist() == [[4.0], [5.0]]
    assert v.tasks == ("cls",)


def test_compose_undoes_in_reverse_order_and_tracks_crops():
    v = compose([Scale(2.0), FiveCrop(0.875), HFlip()])
    assert isinstance(v, Compose) and v.tasks == ("cls",)
    x = torch.rand(3, 3, 32, 32)
    out = v.augment(x)
    assert out.shape == (15, 3, 64, 64)
    assert v.undo_cls(torch.ones(15, 4), 3).shape == (3, 4)
    flip_scale = compose([Scale(2.0), HFlip()])
    boxes = torch.tensor([[0.0, 0.0, 20.0, 10.0]])  # in the 64 x 64 augmented image
    # undo flip in 64-wide space: x -> 64 - x  => [44, 0, 64, 10]; undo scale: / 2 => [22, 0, 32, 5]
    assert flip_scale.undo_boxes(boxes, (32, 32)).tolist() == [[22.0, 0.0, 32.0, 5.0]]


def test_parse_tta_and_keys():
    assert parse_tta(None).key == "none" and parse_tta("none").key == "none"
    spec = parse_tta("hflip@det+seg,scales=0.75:1:1.25,tencrop")
    assert spec.cls == TaskTTA(hflip=False, scales=(0.75, 1.0, 1.25), crops=10)
    assert spec.det == TaskTTA(hflip=True, scales=(0.75, 1.0, 1.25))
    assert spec.key == "cls-s0.75-1-1.25_crop10-0.875__det-hflip_s0.75-1-1.25__seg-hflip_s0.75-1-1.25"
    assert len(spec.det.views()) == 6 and len(spec.cls.views()) == 6  # 3 scales x (crop, mirrored crop)
    assert parse_tta("flip-ms") == parse_tta("hflip,scales=0.75:1:1.25")
    assert parse_tta("flip").key == "hflip"
    assert [v.key for v in parse_tta("hflip").det.views()] == ["id", "hflip"]


@pytest.mark.parametrize("bad", ["rotate", "hflip@depth", "scales=a:b", "scales=0:1", "fivecrop@det"])
def test_parse_tta_rejects(bad):
    from workbench.errors import WorkbenchError
    with pytest.raises(WorkbenchError):
        parse_tta(bad)


def test_cls_scales_are_not_rounded_away():
    """A 64 px crop at scale 1.25: 80 px for cls (multiple of 8), 64 px for det/seg (multiple of 32)."""
    spec = parse_tta("scales=1:1.25")
    assert [v.output_size((64, 64)) for v in spec.views("cls")] == [(64, 64), (80, 80)]
    assert [v.output_size((64, 64)) for v in spec.views("det")] == [(64, 64), (64, 64)]
