"""Class masks <-> polygons, as the organisers' AllInOne scorer paints them.

The scorer (Open-TransMind `track1/tools/eval.py`, `polygon2mask`) starts every image from a canvas
of zeros and, for each class of the image in file order, drops the polygons of 2 points or fewer,
casts the points to int32 and paints the rest in ONE `cv2.fillPoly(canvas, polygons, class_id)`
call. A polygon is a list of [x, y] points; (x, y) is the centre of pixel (row y, column x).

Writing (mask -> polygons): for every class but `CANVAS_CLASS` (the canvas is already 0), the class's
pixels are traced with `cv2.findContours(RETR_CCOMP, CHAIN_APPROX_SIMPLE)`: outer borders AND hole
borders, both through the centres of the class's own boundary pixels. `cv2.fillPoly` draws every
edge as an 8-connected line between pixel centres (so boundary pixels, 1-pixel lines and lone
pixels are painted) and fills the inside of all the class's polygons together with the even-odd
rule (so a hole border cuts its hole out, and an island in a hole is a new outer border).
CHAIN_APPROX_SIMPLE keeps only the ends of horizontal, vertical and 45-degree runs, which that
line drawing retraces pixel for pixel. A contour of 1 or 2 points (a lone pixel, two touching
pixels) is repeated up to 3 points so the scorer does not drop it. Each class then paints exactly
its own pixels, whatever the order of the classes: the round trip is exact (tests/formats: simple
shapes, holes, islands, lines, lone pixels, 577k pixels of random multi-class masks).

Reading: `polygons_to_mask` is that `polygon2mask` on a canvas of the truth mask's size (the
organisers hard-coded 720 x 1280, the size of every image of their data).

The earlier `allinone-json` layout of this workbench traced pixel EDGES and was read with
pycocotools, larger polygons first; `edge_polygons_to_mask` still reads it.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from workbench.metrics.seg import confusion_matrix, mean_iou

CANVAS_CLASS = 0  # the scorer's canvas starts as zeros: class 0 needs no polygon
MIN_POINTS = 3  # the scorer drops polygons of 2 points or fewer


def mask_to_polygons(mask: np.ndarray) -> dict[int, list[list[list[int]]]]:
    """Trace every class of a class mask (but `CANVAS_CLASS`) as pixel-centre polygons.

    Args:
        mask: (H, W) integer class-index mask.

    Returns:
        {class_id: [polygon [[x, y], ...] of integer pixel-centre points, >= 3 points]}, classes
        ascending. `cv2.fillPoly` of one class's polygons in one call paints exactly its pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons: mask of shape {mask.shape}, expected (H, W)")
    out = {}
    for c in np.unique(mask).tolist():
        if c == CANVAS_CLASS:
            continue
        rows, cols = np.nonzero(mask == c)
        y0, x0 = int(rows.min()), int(cols.min())
        crop = (mask[y0:rows.max() + 1, x0:cols.max() + 1] == c).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        polys = []
        for contour in contours:
            pts = contour[:, 0, :].tolist()
            while len(pts) < MIN_POINTS:  # a lone pixel or two pixels: repeat so the scorer keeps it
                pts = pts + pts[:MIN_POINTS - len(pts)]
            polys.append(pts)
        out[int(c)] = polys
    return out


def polygons_to_mask(polygons: dict, height: int, width: int) -> np.ndarray:
    """Paint class polygons as the organisers' scorer does (`polygon2mask`).

    Args:
        polygons: {class_id (int or its decimal string): [polygon [[x, y], ...]]}, painted in this
            order; polygons of 2 points or fewer are dropped, points truncated to integers.
        height, width: size of the canvas (the truth mask's).

    Returns:
        (H, W) uint8 class mask; pixels no polygon covers are `CANVAS_CLASS`.

    Raises:
        ValueError: a class id is not an integer in 0..255, or a polygon is not a list of [x, y]
            pairs of finite numbers (the message names the class and polygon index).
    """
    out = np.full((height, width), CANVAS_CLASS, dtype=np.uint8)
    for key, polys in polygons.items():
        c = _class_id(key)
        if not isinstance(polys, list):
            raise ValueError(f"class {c}: expected a list of polygons")
        kept = []
        for i, poly in enumerate(polys):
            pts = _points(poly)
            if pts is None:
                raise ValueError(f"class {c}: polygon {i} is not a list of [x, y] pairs of finite numbers")
            if len(pts) >= MIN_POINTS:
                kept.append(pts)
        if kept:
            cv2.fillPoly(out, kept, c)
    return out


def _class_id(key) -> int:
    try:
        c = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"class id {key!r} is not an integer") from None
    if not 0 <= c <= 255 or str(c) != str(key).strip():
        raise ValueError(f"class id {key!r} is not an integer in 0..255")
    return c


def _points(poly) -> np.ndarray | None:
    """(N, 2) int32 points of a [[x, y], ...] polygon, truncated as np.array(poly, np.int32) does; None if malformed."""
    if not isinstance(poly, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in poly):
        return None
    return np.array(poly, dtype=np.float64).reshape(-1, 2).astype(np.int32)


def polygon_roundtrip_miou(masks: dict[str, np.ndarray], num_classes: int) -> float:
    """Measure what writing masks as polygons costs: mIoU of mask -> polygons -> organisers' fill.

    Args:
        masks: image name -> (H, W) class mask (values in 0..K-1).
        num_classes: K.

    Returns:
        mIoU (classes present in either mask) of the masks read back against the originals over
        all images: 1.0 means lossless. NaN for no masks.
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for mask in masks.values():
        back = polygons_to_mask(mask_to_polygons(mask), *mask.shape)
        cm += confusion_matrix(back, mask, num_classes, ignore_index=-1)
    return mean_iou(cm)


# ---- the earlier layout: flat pixel-edge polygons, rasterised with pycocotools --------------------

@contextmanager
def quiet_pycocotools():
    """Silence the DeprecationWarning pycocotools 2.0.11's decode raises under NumPy 2 (harmless today)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        yield


def edge_polygons_to_mask(polygons: dict, height: int, width: int) -> np.ndarray:
    """Read the earlier layout's polygons: flat [x1, y1, x2, y2, ...] along pixel edges.

    Every polygon is rasterised on its own with pycocotools (pixel (r, c) covers [c, c + 1) x
    [r, r + 1)), then painted in order of decreasing rasterised area, whatever its class, so what
    lies in a hole of a region (strictly smaller) shows through.

    Args:
        polygons: {class_id (int or its decimal string): [flat polygon [x1, y1, ...] in pixels]}.
        height, width: size of the mask.

    Returns:
        (H, W) uint8 class mask; pixels no polygon covers are `CANVAS_CLASS`.

    Raises:
        ValueError: a class id is not an integer in 0..255, or a polygon is not an even-length
            list of at least 6 finite numbers (the message names the class and polygon index).
    """
    pieces = []
    with quiet_pycocotools():
        for key, polys in polygons.items():
            c = _class_id(key)
            if not isinstance(polys, list):
                raise ValueError(f"class {c}: expected a list of polygons")
            for i, poly in enumerate(polys):
                if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in poly)):
                    raise ValueError(f"class {c}: polygon {i} is not a flat list of >= 3 finite x, y pairs")
                piece = _rasterise([float(v) for v in poly], height, width)
                if piece is not None:
                    pieces.append((-int(piece[2].sum()), c, len(pieces), piece))
    out = np.full((height, width), CANVAS_CLASS, dtype=np.uint8)
    for _, c, _, (y0, x0, box) in sorted(pieces, key=lambda t: t[:3]):
        out[y0:y0 + box.shape[0], x0:x0 + box.shape[1]][box] = c
    return out


def _rasterise(poly: list[float], height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """Rasterise one flat polygon with pycocotools inside its bounding box: (row0, col0, bool box) or None."""
    xs, ys = poly[0::2], poly[1::2]
    x0, y0 = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
    x1, y1 = min(width, math.ceil(max(xs))), min(height, math.ceil(max(ys)))
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = [v - (x0 if i % 2 == 0 else y0) for i, v in enumerate(poly)]
    rle = mask_utils.frPyObjects([shifted], y1 - y0, x1 - x0)  # a list of one polygon -> [rle]
    return y0, x0, mask_utils.decode(rle)[:, :, 0].astype(bool)
