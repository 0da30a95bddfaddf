import cv2
import numpy as np
import pytest

from workbench.formats.polygons import (
    edge_polygons_to_mask,
    mask_to_polygons,
    polygon_roundtrip_miou,
    polygons_to_mask,
)


def roundtrip(mask):
    return polygons_to_mask({str(c): p for c, p in mask_to_polygons(mask).items()}, *mask.shape)


def test_simple_masks_roundtrip_exactly(simple_masks):
    # convex shapes, a hole, an island in a hole, regions on the border, a thin line, a lone pixel
    for name, mask in simple_masks.items():
        np.testing.assert_array_equal(roundtrip(mask), mask, err_msg=name)


def test_polygons_pass_through_pixel_centres():
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:5] = 1  # rows 1..3, columns 2..4
    polys = mask_to_polygons(mask)
    assert list(polys) == [1]  # class 0 is the scorer's canvas: not written
    (square,) = polys[1]
    assert sorted(map(tuple, square)) == [(2, 1), (2, 3), (4, 1), (4, 3)]  # (x, y) of the corner pixels


def test_lone_pixels_and_short_lines_are_padded_past_two_points():
    # the scorer drops polygons of <= 2 points: a lone pixel (1 contour point) and two pixels (2) are repeated
    mask = np.zeros((5, 9), np.uint8)
    mask[1, 1] = 1
    mask[3, 4:6] = 2
    polys = mask_to_polygons(mask)
    assert polys[1] == [[[1, 1], [1, 1], [1, 1]]]
    assert polys[2] == [[[4, 3], [5, 3], [4, 3]]]
    np.testing.assert_array_equal(roundtrip(mask), mask)


def test_each_class_paints_only_its_own_pixels_so_order_does_not_matter(simple_masks):
    mask = simple_masks["island.png"]  # class 1 square, class 2 hole in it, class 1 island in the hole
    polys = {str(c): p for c, p in mask_to_polygons(mask).items()}
    for order in (["1", "2"], ["2", "1"]):
        np.testing.assert_array_equal(polygons_to_mask({k: polys[k] for k in order}, *mask.shape), mask)
    for c in (1, 2):
        alone = polygons_to_mask({str(c): polys[str(c)]}, *mask.shape)
        np.testing.assert_array_equal(alone == c, mask == c)


def test_random_masks_roundtrip_exactly():
    # salt-and-pepper labels are the hardest case: pinches, diagonal steps, holes in holes, lone pixels
    rng = np.random.default_rng(0)
    for i in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.integers(0, int(rng.integers(2, 7)), (h, w)).astype(np.uint8)
        if i % 2:
            mask = cv2.resize(mask, (3 * w, 3 * h), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(roundtrip(mask), mask, err_msg=f"mask {i}")


def test_realistic_scene_is_lossless(scene_factory):
    masks = {f"{i}.png": scene_factory(seed=i) for i in range(4)}
    assert len(np.unique(masks["0.png"])) == 6
    assert polygon_roundtrip_miou(masks, 6) == 1.0


def test_reader_paints_like_the_scorer():
    # classes in file order onto zeros; <= 2-point polygons dropped; points truncated to int32
    polys = {"3": [[[1, 1], [2, 1], [2, 2], [1, 2]], [[0, 3], [3, 3]]],
             "1": [[[2.9, 2.9], [3.9, 2.9], [3.9, 3.9]]]}
    expected = np.zeros((4, 4), np.uint8)
    expected[1:3, 1:3] = 3  # the 2-point polygon is dropped
    expected[2, 2:4] = 1  # painted later; points truncate to (2, 2), (3, 2), (3, 3): a triangle of 3 pixels
    expected[3, 3] = 1
    np.testing.assert_array_equal(polygons_to_mask(polys, 4, 4), expected)


def test_bad_polygons_raise_naming_class_and_polygon():
    with pytest.raises(ValueError, match="class 1: polygon 1"):
        polygons_to_mask({"1": [[[0, 0], [2, 0], [2, 2]], [[0, 0], [1, float("nan")], [1, 1]]]}, 4, 4)
    with pytest.raises(ValueError, match="class 2: polygon 0"):
        polygons_to_mask({"2": [[0, 0, 2, 0, 2, 2]]}, 4, 4)  # the earlier flat layout
    with pytest.raises(ValueError, match="class id"):
        polygons_to_mask({"car": [[[0, 0], [2, 0], [2, 2]]]}, 4, 4)
    with pytest.raises(ValueError, match="0..255"):
        polygons_to_mask({"300": []}, 4, 4)


def test_pixel_edge_polygons_under_the_scorers_fill_would_lose(scene_factory):
    # the workbench's earlier writer traced pixel EDGES; cv2.fillPoly paints edge vertices as pixels,
    # growing every region by one pixel on its right and bottom
    mask = scene_factory()
    edge = {}
    for c in np.unique(mask).tolist():
        up = np.pad(np.repeat(np.repeat((mask == c).astype(np.uint8), 2, 0), 2, 1), 1)
        contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        edge[str(c)] = [(ct[:, 0, :] // 2).tolist() for ct in contours]
    assert (polygons_to_mask(edge, *mask.shape) != mask).sum() > 100
    assert (roundtrip(mask) != mask).sum() == 0


def test_earlier_layout_reader():
    # flat pixel-edge polygons, pycocotools rasteriser, larger polygons painted first
    mask = edge_polygons_to_mask({"1": [[0, 0, 6, 0, 6, 6, 0, 6]], "2": [[2, 2, 4, 2, 4, 4, 2, 4]]}, 6, 6)
    expected = np.ones((6, 6), np.uint8)
    expected[2:4, 2:4] = 2
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="polygon 0"):
        edge_polygons_to_mask({"1": [[0, 0, 1, 1]]}, 4, 4)
