"""Letterbox geometry, mask letterboxing and box format conversions."""
import numpy as np
import pytest
from PIL import Image

from workbench.data.transforms import (Letterbox, canvas_hw, letterbox_image, letterbox_mask, resize_square,
                                       size_label, xywh_to_xyxy, xyxy_to_xywh)

IGNORE = 255


def test_letterbox_geometry_by_hand():
    box = Letterbox(height=40, width=80, size=64)
    assert box.scale == 64 / 80
    assert box.inner == (round(40 * 64 / 80), 64) == (32, 64)
    tall = Letterbox(height=80, width=40, size=64)
    assert tall.inner == (64, 32)
    assert Letterbox(1, 1000, 64).inner == (1, 64)  # never a zero-sized side


def test_a_canvas_of_the_scenes_shape_wastes_no_step_on_padding():
    """A 720 x 960 CamVid frame: a 320 x 320 canvas holds it at 240 x 320 over 80 padded rows (25% of
    the canvas); a 256 x 320 canvas at the same scale (min(256/720, 320/960) = 1/3) pads 16 rows."""
    square, shaped = Letterbox(720, 960, 320), Letterbox(720, 960, (256, 320))
    assert square.scale == shaped.scale == pytest.approx(1 / 3) and square.inner == shaped.inner == (240, 320)
    # a wide canvas that the height limits: min(256/720, 448/960) = 0.3556 -> 256 x 341
    assert Letterbox(720, 960, (256, 448)).inner == (256, round(960 * 256 / 720)) == (256, 341)
    assert canvas_hw(320) == (320, 320) and canvas_hw([256, 320]) == canvas_hw((256, 320)) == (256, 320)
    assert size_label(320) == "320" and size_label((256, 320)) == "256x320" and size_label((64, 64)) == "64"


def test_letterbox_image_and_mask_on_a_non_square_canvas():
    frame = rectangle_image(h=72, w=96, box=(0, 0, 96, 72))  # all white: content vs padding shows
    canvas, box = letterbox_image(frame, (32, 64))  # scale min(32/72, 64/96) = 0.444 -> 32 x 43
    assert canvas.shape == (32, 64, 3) and box.inner == (32, 43)
    assert (canvas[:, :43] == 255).all() and (canvas[:, 43:] == 0).all()
    mask = letterbox_mask(np.full((72, 96), 3, np.uint8), (32, 64), IGNORE)
    assert mask.shape == (32, 64) and (mask[:, :43] == 3).all() and (mask[:, 43:] == IGNORE).all()
    assert resize_square(frame, (32, 64)).shape == (32, 64, 3)


def rectangle_image(h=40, w=80, box=(20, 10, 60, 30)):
    """Black (h, w) RGB image with a white rectangle over x1, y1, x2, y2 (pixels)."""
    a = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    a[y1:y2, x1:x2] = 255
    return Image.fromarray(a)


def test_letterbox_image_places_content_and_pads_with_zero():
    canvas, box = letterbox_image(rectangle_image(), 64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert box == Letterbox(40, 80, 64)
    h, w = box.inner
    assert (canvas[h:] == 0).all()  # padding below the 32-row image
    # the rectangle (20, 10)-(60, 30) lands at (16, 8)-(48, 24); its interior is white, far outside black
    s = box.scale
    x1, y1, x2, y2 = (np.array([20, 10, 60, 30]) * s).round().astype(int)
    assert (x1, y1, x2, y2) == (16, 8, 48, 24)
    assert (canvas[y1 + 1:y2 - 1, x1 + 1:x2 - 1] == 255).all()
    assert (canvas[:y1 - 1] == 0).all() and (canvas[y2 + 1:h] == 0).all()
    assert (canvas[:h, :x1 - 1] == 0).all() and (canvas[:h, x2 + 1:] == 0).all()


def test_boxes_scaled_by_letterbox_map_back_exactly():
    box = Letterbox(40, 80, 64)
    xywh = np.array([[20, 10, 40, 20], [0, 0, 80, 40], [3.5, 7.25, 1.5, 2.0]], np.float32)
    xyxy = xywh_to_xyxy(xywh) * box.scale
    np.testing.assert_allclose(xyxy[0], [20 * 0.8, 10 * 0.8, 60 * 0.8, 30 * 0.8])
    np.testing.assert_allclose(xyxy[1], [0, 0, 64, 32])  # the whole image is the inner area
    np.testing.assert_allclose(xyxy_to_xywh(xyxy / box.scale), xywh, rtol=1e-6)


def test_letterbox_mask_keeps_classes_and_pads_with_ignore():
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :40] = 1
    mask[:, 40:] = 2
    mask[:20, 70:] = 7
    out = letterbox_mask(mask, 64, IGNORE)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    h, w = Letterbox(40, 80, 64).inner
    assert (out[h:] == IGNORE).all()
    inner = out[:h, :w]
    assert set(np.unique(inner).tolist()) == {1, 2, 7}  # nearest: no blended class values
    # column 40 of 80 maps to 40 * 0.8 = 32; row 20 of 40 to 16; column 70 to 56
    assert (inner[:, :32] == 1).all()
    assert (inner[16:, 32:] == 2).all() and (inner[:16, 32:56] == 2).all()
    assert (inner[:16, 56:] == 7).all()


def test_letterbox_mask_tall_pads_right():
    out = letterbox_mask(np.full((80, 40), 3, np.uint8), 64, IGNORE)
    assert (out[:, :32] == 3).all() and (out[:, 32:] == IGNORE).all()


def test_resize_square_ignores_aspect():
    out = resize_square(rectangle_image(40, 80, (0, 0, 40, 40)), 32)  # left half white
    assert out.shape == (32, 32, 3)
    assert (out[:, :15] == 255).all() and (out[:, 17:] == 0).all()


def test_xywh_xyxy_round_trip_by_hand():
    xywh = np.array([[10, 20, 30, 40], [0.5, 0.25, 2.0, 4.0]], np.float32)
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[10, 20, 10 + 30, 20 + 40], [0.5, 0.25, 0.5 + 2.0, 0.25 + 4.0]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)
    np.testing.assert_array_equal(xywh, [[10, 20, 30, 40], [0.5, 0.25, 2.0, 4.0]])  # input untouched
    assert xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)


@pytest.mark.parametrize("hw", [(37, 91), (64, 64), (100, 33)])
def test_inner_never_exceeds_canvas(hw):
    box = Letterbox(*hw, 64)
    assert max(box.inner) == 64 and min(box.inner) <= 64
