"""CenterNet targets, decoder, focal loss and the segmentation loss, checked against hand-made maps."""
import math

import pytest
import torch
import torch.nn.functional as F

from workbench.models.losses import (cls_loss, decode_detections, det_loss, encode_det_targets,
                                     focal_heatmap_loss, seg_loss)
from workbench.records.tasks import DET_STRIDE

S = DET_STRIDE  # 4 input pixels per output cell


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_encode_one_box_by_hand():
    # box (10, 14)-(42, 30) px -> cells (2.5, 3.5)-(10.5, 7.5): centre (6.5, 5.5), size 8 x 4 cells
    box = torch.tensor([[10.0, 14.0, 42.0, 30.0]])
    heat, idx, size, off = encode_det_targets([box], [torch.tensor([2])], num_classes=3, out_hw=(16, 24))
    assert heat.shape == (1, 3, 16, 24)
    cx, cy = (10 + 42) / 2 / S, (14 + 30) / 2 / S
    ix, iy = int(cx), int(cy)
    assert (ix, iy) == (6, 5)
    assert heat[0, 2, iy, ix] == 1.0
    assert heat.eq(1).sum() == 1  # one peak, in the box's class only
    assert heat[0, :2].max() == 0
    assert heat[0, 2, iy, ix + 1] < 1 and heat[0, 2, iy + 1, ix] < 1
    assert idx.tolist() == [[0, iy, ix]]
    torch.testing.assert_close(size, torch.tensor([[(42 - 10) / S, (30 - 14) / S]]))
    torch.testing.assert_close(off, torch.tensor([[cx - ix, cy - iy]]))


def test_encode_skips_degenerate_boxes_and_empty_images():
    boxes = [torch.tensor([[8.0, 8.0, 8.0, 20.0]]), torch.zeros((0, 4))]
    heat, idx, size, off = encode_det_targets(boxes, [torch.tensor([0]), torch.zeros(0, dtype=torch.long)], 2, (8, 8))
    assert heat.shape == (2, 2, 8, 8) and heat.max() == 0
    assert idx.shape == (0, 3) and size.shape == (0, 2) and off.shape == (0, 2)


def hand_maps(h=16, w=24, k=3):
    """Head outputs with one peak: class 1 at cell (y=5, x=7), sigmoid 0.9, size (6, 3), offset (0.25, 0.75)."""
    heatmap = torch.full((1, k, h, w), -10.0)
    heatmap[0, 1, 5, 7] = logit(0.9)
    size, offset = torch.zeros(1, 2, h, w), torch.zeros(1, 2, h, w)
    size[0, :, 5, 7] = torch.tensor([6.0, 3.0])
    offset[0, :, 5, 7] = torch.tensor([0.25, 0.75])
    return {"heatmap": heatmap, "size": size, "offset": offset}


def test_decode_hand_built_maps():
    (det,) = decode_detections(hand_maps())
    cx, cy = 7 + 0.25, 5 + 0.75
    expected = [(cx - 6 / 2) * S, (cy - 3 / 2) * S, (cx + 6 / 2) * S, (cy + 3 / 2) * S]
    torch.testing.assert_close(det["boxes"], torch.tensor([expected]))
    torch.testing.assert_close(det["scores"], torch.tensor([0.9]))
    assert det["labels"].tolist() == [1]


def test_decode_respects_score_threshold_and_batch():
    maps = hand_maps()
    other = hand_maps()
    other["heatmap"][0, 1, 5, 7] = logit(0.005)  # below the default 0.01
    batch = {k: torch.cat([maps[k], other[k]]) for k in maps}
    first, second = decode_detections(batch)
    assert len(first["scores"]) == 1 and len(second["scores"]) == 0


def test_encode_decode_round_trip():
    boxes = torch.tensor([[4.0, 6.0, 30.0, 22.0], [50.0, 20.0, 90.0, 60.0], [60.0, 2.0, 70.0, 14.0]])
    labels = torch.tensor([0, 2, 2])
    h, w = 16, 24  # a 64 x 96 input
    heat, idx, size, off = encode_det_targets([boxes], [labels], 3, (h, w))
    p = heat.clamp(1e-4, 1 - 1e-4)
    maps = {"heatmap": torch.log(p / (1 - p)), "size": torch.zeros(1, 2, h, w), "offset": torch.zeros(1, 2, h, w)}
    b, y, x = idx.unbind(1)
    maps["size"][b, :, y, x] = size
    maps["offset"][b, :, y, x] = off
    (det,) = decode_detections(maps)
    assert len(det["boxes"]) == 3
    order = det["boxes"][:, 0].argsort()  # boxes sorted by x1, as given
    assert (det["boxes"][order] - boxes).abs().max() < 1.0
    assert det["labels"][order].tolist() == labels.tolist()


def test_focal_loss_prefers_the_target():
    box = torch.tensor([[10.0, 14.0, 42.0, 30.0]])
    heat, *_ = encode_det_targets([box], [torch.tensor([1])], 2, (16, 24))
    p = heat.clamp(1e-4, 1 - 1e-4)
    right = torch.log(p / (1 - p))
    wrong = right.roll(shifts=(4, 6), dims=(2, 3))  # the peak in the wrong place
    flat = torch.zeros_like(right)  # p = 0.5 everywhere
    assert focal_heatmap_loss(right, heat) < focal_heatmap_loss(flat, heat)
    assert focal_heatmap_loss(right, heat) < focal_heatmap_loss(wrong, heat)
    # one positive at p = 0.5, no reduction for it: -log(0.5) * 0.5^2 over 1 peak, plus the negatives
    only_peak = torch.full_like(right, -30.0)
    only_peak[heat.eq(1)] = 0.0
    assert focal_heatmap_loss(only_peak, heat).item() == pytest.approx(math.log(2) * 0.25, rel=1e-3)


def test_det_loss_zero_targets_keeps_graph():
    maps = {k: v.clone().requires_grad_() for k, v in hand_maps().items()}
    loss = det_loss(maps, [torch.zeros((0, 4))], [torch.zeros(0, dtype=torch.long)])
    loss.backward()
    assert torch.isfinite(loss) and maps["size"].grad is not None


def test_seg_loss_ignores_255():
    k, h, w = 3, 8, 8
    torch.manual_seed(0)
    logits = torch.randn(1, k, h, w)  # masks at the logits' size: the upsampling is the identity
    mask = torch.randint(0, k, (1, h, w))
    mask[:, :, 5:] = 255
    base = seg_loss(logits, mask)
    changed = logits.clone()
    changed[:, :, :, 5:] = torch.randn(1, k, h, 3) * 10  # the logits under the ignored pixels
    assert seg_loss(changed, mask).item() == pytest.approx(base.item(), rel=1e-6)
    changed[:, :, :, 0] += torch.randn(1, k, h) * 10  # a labelled column
    assert seg_loss(changed, mask).item() != pytest.approx(base.item(), rel=1e-3)


def test_seg_loss_uniform_logits_is_log_k():
    mask = torch.full((2, 16, 16), 255)
    mask[:, :4] = 1  # only a quarter is labelled
    assert seg_loss(torch.zeros(2, 3, 4, 4), mask).item() == pytest.approx(math.log(3), rel=1e-6)


def test_seg_loss_all_ignore_is_zero_with_graph():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = seg_loss(logits, torch.full((2, 16, 16), 255))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().max() == 0


def test_cls_loss_label_smoothing_by_hand():
    # uniform logits over K=4: cross-entropy is log 4 whatever the smoothing
    assert cls_loss(torch.zeros(2, 4), torch.tensor([0, 3])).item() == pytest.approx(math.log(4), rel=1e-6)
    # a confident right answer: smoothing 0.1 spreads 0.1/K on every class -> loss > plain CE
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    plain = cls_loss(logits, torch.tensor([0]), label_smoothing=0.0).item()
    assert plain == pytest.approx(math.log(1 + 3 * math.exp(-10)), abs=1e-6)
    smooth = cls_loss(logits, torch.tensor([0]), label_smoothing=0.1).item()
    assert smooth == pytest.approx((1 - 0.1 + 0.1 / 4) * plain + 3 * (0.1 / 4) * (10 + plain), rel=1e-3)


# --- a batch split over ranks: each part divided by the count summed over the parts ------------------

def _split_sum(loss_fn, parts: list[tuple]) -> torch.Tensor:
    """The parts' losses, each divided by the count summed over all parts (what Dist.count gives every
    rank), added up: what the ranks' summed gradients are the gradient of."""
    counts = []
    for args in parts:
        loss_fn(*args, count=lambda n: counts.append(n.detach()) or n)
    per_call = len(counts) // len(parts)  # det asks for two counts a call (peaks, L1 elements)
    totals = [sum(counts[i::per_call]) for i in range(per_call)]
    calls = iter(range(10 ** 6))

    def global_count(n):
        return totals[next(calls) % per_call]
    return sum(loss_fn(*args, count=global_count) for args in parts)


def test_torch_means_are_kept_in_one_process():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    w = torch.rand(5, generator=g) + 0.5
    ref = F.cross_entropy(logits, labels, weight=w, label_smoothing=0.1)  # torch's weighted, smoothed mean
    assert cls_loss(logits, labels, weight=w).item() == pytest.approx(ref.item(), rel=1e-6)
    seg, masks = torch.randn(2, 4, 4, 4, generator=g), torch.randint(0, 4, (2, 16, 16), generator=g)
    masks[0, :5] = 255
    up = F.interpolate(seg, size=(16, 16), mode="bilinear", align_corners=False)
    ref = F.cross_entropy(up, masks, weight=w[:4], ignore_index=255)
    assert seg_loss(seg, masks, weight=w[:4]).item() == pytest.approx(ref.item(), rel=1e-6)


def test_a_batch_split_in_parts_with_summed_counts_gives_the_whole_batchs_loss():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    w = torch.rand(5, generator=g) + 0.5
    whole = cls_loss(logits, labels, weight=w)
    halves = _split_sum(lambda x, y, count: cls_loss(x, y, weight=w, count=count),
                        [(logits[:4], labels[:4]), (logits[4:], labels[4:])])
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)
    seg, masks = torch.randn(4, 3, 4, 4, generator=g), torch.randint(0, 3, (4, 16, 16), generator=g)
    masks[:2, :12] = 255  # the first half has far fewer labelled pixels: per-part means would weigh it wrongly
    whole = seg_loss(seg, masks)
    halves = _split_sum(lambda x, y, count: seg_loss(x, y, count=count), [(seg[:2], masks[:2]), (seg[2:], masks[2:])])
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)
    mean_of_means = (seg_loss(seg[:2], masks[:2]) + seg_loss(seg[2:], masks[2:])) / 2
    assert abs(mean_of_means.item() - whole.item()) > 1e-3  # so the test can tell the two apart
    out = {"heatmap": torch.randn(2, 3, 16, 16, generator=g), "size": torch.rand(2, 2, 16, 16, generator=g) * 4,
           "offset": torch.rand(2, 2, 16, 16, generator=g)}
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 30.0], [30.0, 8.0, 50.0, 20.0]]), torch.tensor([[10.0, 10.0, 40.0, 40.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    whole = det_loss(out, boxes, labels)
    part = lambda i: ({k: v[i:i + 1] for k, v in out.items()}, boxes[i:i + 1], labels[i:i + 1])  # noqa: E731
    halves = _split_sum(lambda o, b, lab, count: det_loss(o, b, lab, count=count), [part(0), part(1)])
    assert halves.item() == pytest.approx(whole.item(), rel=1e-5)
