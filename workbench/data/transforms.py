"""Geometry shared by training and inference: resize (cls) and letterbox (det, seg).

An input size is N (an N x N canvas) or (H, W): a canvas of the scenes' shape (e.g. 256 x 320 for
4:3 CamVid, 256 x 448 for 16:9 frames) wastes none of a step on padding. Letterbox scales an image
as large as fits in the canvas and pads the bottom and right with zeros, so undoing it is a
division by `scale` (no offset) and a crop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image

Size = Union[int, Sequence[int]]  # N (square) or (H, W)


def canvas_hw(size: Size) -> tuple[int, int]:
    """(H, W) of an input size: N -> (N, N); (H, W) (or [H, W] from a JSON file) -> (H, W)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def size_label(size: Size) -> str:
    """'320' for a square size, '256x320' for (256, 320): how names and messages show a size."""
    h, w = canvas_hw(size)
    return str(h) if h == w else f"{h}x{w}"


@dataclass(frozen=True)
class Letterbox:
    """How an (H, W) image was placed in a canvas of `size` (N or (H, W)): resized by `scale` (as large
    as fits), top-left aligned."""

    height: int
    width: int
    size: Size

    @property
    def scale(self) -> float:
        ch, cw = canvas_hw(self.size)
        return min(ch / self.height, cw / self.width)

    @property
    def inner(self) -> tuple[int, int]:
        """(h, w) of the resized image inside the canvas, in pixels."""
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))


def resize_square(image: Image.Image, size: Size) -> np.ndarray:
    """Resize to the canvas, ignoring aspect (classification crops). Returns (H, W, 3) uint8."""
    h, w = canvas_hw(size)
    return np.array(image.resize((w, h), Image.BILINEAR), dtype=np.uint8)


def letterbox_image(image: Image.Image, size: Size) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an RGB image. Returns the (H, W, 3) uint8 canvas and its Letterbox."""
    box = Letterbox(image.height, image.width, size)
    h, w = box.inner
    canvas = np.zeros((*canvas_hw(size), 3), np.uint8)
    canvas[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    return canvas, box


def letterbox_mask(mask: np.ndarray, size: Size, ignore_index: int) -> np.ndarray:
    """Letterbox an (H, W) class mask with nearest resampling; the padding is `ignore_index`."""
    box = Letterbox(mask.shape[0], mask.shape[1], size)
    h, w = box.inner
    canvas = np.full(canvas_hw(size), ignore_index, np.uint8)
    canvas[:h, :w] = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST), dtype=np.uint8)
    return canvas


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[x, y, w, h] -> [x1, y1, x2, y2], same units. (N, 4) -> (N, 4)."""
    out = boxes.astype(np.float32).copy()
    out[:, 2:] += out[:, :2]
    return out


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] -> [x, y, w, h], same units. (N, 4) -> (N, 4)."""
    out = boxes.astype(np.float32).copy()
    out[:, 2:] -= out[:, :2]
    return out
