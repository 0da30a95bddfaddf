"""Training augmentation: boxes and masks follow the image; draws come from the given generator."""
import re

import pytest
import torch

from workbench.data.augment import (DEFAULT_AUGMENT, FILL, Augment, augment_cls, augment_det, augment_seg,
                                    drop_clipped_boxes, flip_sample, format_augment, jitter_colour,
                                    parse_augment, shift_sample, zoom_sample)
from workbench.errors import RunError

S = 64
IGNORE = 255
BOX = (10, 20, 30, 40)  # x1, y1, x2, y2 canvas px


def boxed_sample() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A black canvas with a white BOX, the box, and a mask that is 1 inside the box."""
    x1, y1, x2, y2 = BOX
    image = torch.zeros(3, S, S, dtype=torch.uint8)
    image[:, y1:y2, x1:x2] = 255
    mask = torch.zeros(S, S, dtype=torch.int64)
    mask[y1:y2, x1:x2] = 1
    return image, torch.tensor([BOX], dtype=torch.float32), mask


def random_image(seed: int = 0) -> torch.Tensor:
    return torch.randint(40, 216, (3, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_flip_moves_box_image_and_mask_alike():
    image, boxes, mask = boxed_sample()
    image[:, 25, 12] = 7  # a marked pixel at (y=25, x=12) -> x = S - 1 - 12 = 51
    mask[25, 12] = 3
    f_image, f_boxes, f_mask = flip_sample(image, boxes, mask)
    torch.testing.assert_close(f_boxes, torch.tensor([[S - 30, 20, S - 10, 40]], dtype=torch.float32))
    assert f_image[:, 25, 51].tolist() == [7, 7, 7] and f_mask[25, 51] == 3
    assert f_image[:, 25, 12].tolist() == [0, 0, 0] and f_mask[25, 12] == 0

    d_image, d_boxes, d_labels = augment_det(image, boxes, torch.tensor([4]), Augment(hflip=1.0))
    torch.testing.assert_close(d_boxes, torch.tensor([[34.0, 20.0, 54.0, 40.0]]))
    assert torch.equal(d_image, f_image) and d_labels.tolist() == [4]
    s_image, s_mask = augment_seg(image, mask, Augment(hflip=1.0), IGNORE)
    assert torch.equal(s_image, f_image) and torch.equal(s_mask, f_mask)


def test_zoom_in_by_two_maps_box_and_mask_by_hand():
    image, boxes, mask = boxed_sample()
    top, left = 16, 8  # the 32 x 32 window [8, 40) x [16, 48); out = (in - offset) * 2
    z_image, z_boxes, z_mask = zoom_sample(image, boxes, mask, 2.0, top, left, IGNORE)
    x1, y1, x2, y2 = BOX
    expected = [(x1 - left) * 2, (y1 - top) * 2, (x2 - left) * 2, (y2 - top) * 2]  # [4, 8, 44, 48]
    torch.testing.assert_close(z_boxes, torch.tensor([expected], dtype=torch.float32))
    # nearest: out pixel y reads in row top + y // 2, so in rows 20..39 -> out rows 8..47
    want = torch.zeros(S, S, dtype=torch.int64)
    want[8:48, 4:44] = 1
    assert torch.equal(z_mask, want)
    assert z_image.shape == (3, S, S) and z_image.dtype == torch.uint8
    assert (z_image[:, 10:46, 6:42] == 255).all() and (z_image[:, 52:, :] == 0).all()


def test_zoom_out_keeps_boxes_and_fills_padding():
    image, boxes, mask = boxed_sample()
    top, left = 4, 20  # the image shrinks to 32 x 32 at rows [4, 36), cols [20, 52)
    z_image, z_boxes, z_mask = zoom_sample(image, boxes, mask, 0.5, top, left, IGNORE)
    x1, y1, x2, y2 = BOX
    expected = [x1 / 2 + left, y1 / 2 + top, x2 / 2 + left, y2 / 2 + top]  # [25, 14, 35, 24]
    torch.testing.assert_close(z_boxes, torch.tensor([expected], dtype=torch.float32))
    want = torch.full((S, S), IGNORE, dtype=torch.int64)
    want[4:36, 20:52] = 0
    want[14:24, 25:35] = 1  # out (4 + y, 20 + x) reads in (2y, 2x)
    assert torch.equal(z_mask, want)
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[4:36, 20:52] = True
    assert (z_image[:, ~inside] == FILL).all()
    assert (z_image[:, 15:23, 26:34] == 255).all()


def test_random_zoom_out_keeps_every_box():
    image = torch.zeros(3, S, S, dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [50.0, 40.0, 64.0, 64.0], [10.0, 20.0, 30.0, 40.0]])
    labels = torch.tensor([0, 1, 2])
    gen = torch.Generator().manual_seed(0)
    z_image, z_boxes, z_labels = augment_det(image, boxes, labels, Augment(scale=(0.5, 0.5)), gen)
    assert z_labels.tolist() == [0, 1, 2]
    sides = z_boxes[:, 2:] - z_boxes[:, :2]
    torch.testing.assert_close(sides, (boxes[:, 2:] - boxes[:, :2]) / 2)
    assert (z_image == FILL).sum() == 3 * (S * S - 32 * 32)


def test_boxes_cut_out_of_the_canvas_are_dropped_with_their_labels():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0],   # inside: kept
                          [-40.0, 0.0, 10.0, 10.0],   # keeps 10 / 50 = 20% < 25%: dropped
                          [62.5, 10.0, 80.0, 30.0],   # clipped width 1.5 px < 2: dropped
                          [70.0, 70.0, 80.0, 80.0],   # outside: dropped
                          [-10.0, 0.0, 30.0, 10.0]])  # keeps 30 / 40 = 75%: kept as [0, 0, 30, 10]
    kept, labels = drop_clipped_boxes(boxes, torch.tensor([0, 1, 2, 3, 4]), (S, S))
    torch.testing.assert_close(kept, torch.tensor([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 30.0, 10.0]]))
    assert labels.tolist() == [0, 4]

    image = torch.zeros(3, S, S, dtype=torch.uint8)
    boxes = torch.tensor([[40.0, 40.0, 60.0, 60.0], [24.0, 0.0, 40.0, 8.0]])
    _, zoomed, _ = zoom_sample(image, boxes, None, 2.0, 0, 0)  # window [0, 32) x [0, 32)
    kept, labels = drop_clipped_boxes(zoomed, torch.tensor([5, 6]), (S, S))
    torch.testing.assert_close(kept, torch.tensor([[48.0, 0.0, 64.0, 16.0]]))  # half of box 6 stays
    assert labels.tolist() == [6]


def test_same_seed_same_output_and_global_rng_replays():
    image, boxes, labels = random_image(), torch.tensor([[10.0, 20.0, 30.0, 40.0]]), torch.tensor([1])
    aug = Augment(hflip=0.5, scale=(0.75, 1.25), shift=0.1, colour=0.2)
    runs = [augment_det(image, boxes, labels, aug, torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not torch.equal(runs[0][0], runs[2][0])
    assert runs[0][0].shape == (3, S, S) and runs[0][0].dtype == torch.uint8
    assert runs[0][1].dtype == torch.float32 and runs[0][2].dtype == torch.int64

    mask = torch.zeros(S, S, dtype=torch.int64)
    torch.manual_seed(7)
    first = augment_seg(image, mask, aug, IGNORE)
    torch.manual_seed(7)
    again = augment_seg(image, mask, aug, IGNORE)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[1].dtype == torch.int64


def test_colour_changes_pixels_not_boxes_or_masks():
    image, boxes, mask = boxed_sample()
    image = random_image()
    gen = torch.Generator().manual_seed(0)
    c_image, c_boxes, c_labels = augment_det(image, boxes, torch.tensor([2]), Augment(colour=0.5), gen)
    assert not torch.equal(c_image, image)
    assert torch.equal(c_boxes, boxes) and c_labels.tolist() == [2]
    c_image, c_mask = augment_seg(image, mask, Augment(colour=0.5), IGNORE, gen)
    assert not torch.equal(c_image, image) and torch.equal(c_mask, mask)

    grey = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    assert (jitter_colour(grey, 1.5, 1.0, 1.0) == 150).all()  # brightness multiplies


def test_shift_moves_content_and_fills_grey():
    image = torch.zeros(3, S, S, dtype=torch.uint8)
    image[:, 20, 10] = 200
    mask = torch.zeros(S, S, dtype=torch.int64)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    s_image, s_boxes, s_mask = shift_sample(image, boxes, mask, dx=5, dy=-3, ignore_index=IGNORE)
    assert s_image[:, 20 - 3, 10 + 5].tolist() == [200, 200, 200] and s_image[:, 20, 10].sum() == 0
    assert (s_image[:, :, :5] == FILL).all() and (s_image[:, S - 3:, :] == FILL).all()
    assert (s_mask[:, :5] == IGNORE).all() and (s_mask[5:S - 3, 5:] == 0).all()
    torch.testing.assert_close(s_boxes, torch.tensor([[15.0, 17.0, 35.0, 37.0]]))

    moved = augment_cls(image, Augment(shift=0.125), torch.Generator().manual_seed(0))
    assert moved.shape == (3, S, S) and moved.dtype == torch.uint8
    assert not torch.equal(moved, image) and (moved == FILL).any()


def test_parse_augment_by_hand():
    assert parse_augment(None) == DEFAULT_AUGMENT
    assert DEFAULT_AUGMENT["cls"] == Augment(shift=0.125, colour=0.2)  # no flip for signs
    got = parse_augment("cls=shift:0.125+colour:0.2,det=hflip:0.5+scale:0.75:1.25+colour:0.2,"
                        "seg=hflip+scale:0.5:2.0")
    assert got == {"cls": Augment(shift=0.125, colour=0.2),
                   "det": Augment(hflip=0.5, scale=(0.75, 1.25), colour=0.2),
                   "seg": Augment(hflip=0.5, scale=(0.5, 2.0))}
    got = parse_augment("det=none")
    assert got["det"] == Augment() and got["det"].is_identity
    assert got["cls"] == DEFAULT_AUGMENT["cls"] and not got["cls"].is_identity


@pytest.mark.parametrize("text", [
    "cls=shift:0.125+colour:0.2,det=hflip:0.5+scale:0.75:1.25+colour:0.2,seg=hflip+scale:0.5:2.0",
    "cls=none,det=hflip:0.1,seg=shift:0.3+colour:0.05",
    "seg=scale:1:1",
])
def test_format_parse_round_trip(text):
    parsed = parse_augment(text)
    assert parse_augment(format_augment(parsed)) == parsed
    assert format_augment(DEFAULT_AUGMENT) == "cls=shift:0.125+colour:0.2,det=hflip:0.5+colour:0.2,seg=hflip:0.5+colour:0.2"


@pytest.mark.parametrize("text, quoted", [
    ("foo=hflip", "foo=hflip"),
    ("det=blur:3", "blur:3"),
    ("det=scale:0.5", "scale:0.5"),
    ("det=hflip:1.5", "det=hflip:1.5"),
    ("seg=scale:0:1", "seg=scale:0:1"),
    ("det=colour:abc", "colour:abc"),
    ("det=hflip+hflip", "hflip"),
    ("det", "det"),
    ("cls=none,cls=shift:0.1", "cls=shift:0.1"),
])
def test_parse_augment_errors_quote_the_bad_part(text, quoted):
    with pytest.raises(RunError, match=re.escape(repr(quoted))) as info:
        parse_augment(text)
    assert "\n" not in str(info.value)
