import cv2
import numpy as np
import pytest

from workbench.formats.polygons import mask_to_polygons, polygon_roundtrip_miou, polygons_to_mask


def roundtrip(mask):
    return polygons_to_mask(mask_to_polygons(mask), *mask.shape)


def test_simple_masks_roundtrip_exactly(simple_masks):
    # convex shapes, a hole, an island in a hole, regions on the border, a thin line, a lone pixel
    for name, mask in simple_masks.items():
        np.testing.assert_array_equal(roundtrip(mask), mask, err_msg=name)


def test_polygons_follow_pixel_edges():
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:5] = 1  # rows 1..3, columns 2..4
    polys = mask_to_polygons(mask)
    # class 1: one square on the pixel corners x 2..5, y 1..4 (pixel centres would be 2.5..4.5)
    (square,) = polys[1]
    corners = sorted(zip(square[0::2], square[1::2]))
    assert corners == [(2, 1), (2, 4), (5, 1), (5, 4)]
    # class 0 (the larger area) comes first; one outline, the whole image, its hole filled
    assert list(polys) == [0, 1]
    assert sorted(zip(polys[0][0][0::2], polys[0][0][1::2])) == [(0, 0), (0, 6), (8, 0), (8, 6)]


def test_hole_and_two_classes(simple_masks):
    mask = simple_masks["hole.png"]
    polys = mask_to_polygons(mask)
    # class 1 is written as its outline only (the hole is not a polygon); class 2 fills the hole
    assert len(polys[1]) == 1 and len(polys[2]) == 1
    # whatever the file order, the smaller polygon is painted last
    reordered = {2: polys[2], 1: polys[1], 0: polys[0]}
    np.testing.assert_array_equal(polygons_to_mask(reordered, *mask.shape), mask)


def test_uncovered_pixels_are_class_zero_and_bad_polygons_raise():
    out = polygons_to_mask({"3": [[1, 1, 3, 1, 3, 2, 1, 2]]}, 4, 4)
    expected = np.zeros((4, 4), np.uint8)
    expected[1, 1:3] = 3
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="polygon 0"):
        polygons_to_mask({"1": [[0, 0, 1, 1]]}, 4, 4)  # 2 points
    with pytest.raises(ValueError, match="polygon 1"):
        polygons_to_mask({"1": [[0, 0, 2, 0, 2, 2], [0, 0, 1, float("nan"), 1, 1]]}, 4, 4)
    with pytest.raises(ValueError, match="class id"):
        polygons_to_mask({"car": [[0, 0, 2, 0, 2, 2]]}, 4, 4)


def test_diagonal_pinch_is_the_known_loss():
    # A ring of class 1 closed by a diagonal step around the pixel (2, 2) of class 2, which joins the
    # big class-2 block through the same diagonal. 8-connected tracing makes the ring's outline
    # enclose (2, 2); the class-2 outline (17 px) is larger than the ring's (8 px), so the ring is
    # painted later and takes (2, 2): exactly one pixel lost.
    mask = np.zeros((7, 7), np.uint8)
    mask[3:, 3:] = 2
    for r, c in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]:
        mask[r, c] = 1
    mask[2, 2] = 2
    back = roundtrip(mask)
    assert list(zip(*np.nonzero(back != mask))) == [(2, 2)]
    # mIoU: class 0 perfect; class 1 gains one pixel: 7 / 8; class 2 loses one: 16 / 17
    assert polygon_roundtrip_miou({"x": mask}, 3) == pytest.approx((1 + 7 / 8 + 16 / 17) / 3)
    # pinches alone are harmless: a 2x2 checkerboard comes back exactly
    checker = np.array([[1, 2], [2, 1]], np.uint8)
    np.testing.assert_array_equal(roundtrip(checker), checker)


def test_realistic_scene_loses_little(scene_factory):
    masks = {f"{i}.png": scene_factory(seed=i) for i in range(4)}
    assert len(np.unique(masks["0.png"])) == 6
    miou = polygon_roundtrip_miou(masks, 6)
    assert miou >= 0.995


def test_pixel_centre_polygons_would_lose_more(scene_factory):
    # the naive choice, cv2 contours through pixel centres, shrinks every region by about half a pixel
    mask = scene_factory()
    naive = {}
    for c in np.unique(mask).tolist():
        contours, _ = cv2.findContours((mask == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        naive[c] = [ct.reshape(-1).tolist() for ct in contours if len(ct) >= 3]
    back_naive = polygons_to_mask(naive, *mask.shape)
    assert (back_naive != mask).sum() > 10 * (roundtrip(mask) != mask).sum()
