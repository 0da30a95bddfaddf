"""Geometry shared by training and inference: square resize (cls) and letterbox (det, seg).

Letterbox scales an image so that its longer side equals `size` and pads the bottom and right
with zeros, so undoing it is a division by `scale` (no offset) and a crop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Letterbox:
    """How an (H, W) image was placed in a (size, size) canvas: resized by `scale`, top-left aligned."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    @property
    def inner(self) -> tuple[int, int]:
        """(h, w) of the resized image inside the canvas, in pixels."""
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize to (size, size), ignoring aspect (classification crops). Returns (size, size, 3) uint8."""
    return np.array(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def letterbox_image(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an RGB image. Returns the (size, size, 3) uint8 canvas and its Letterbox."""
    box = Letterbox(image.height, image.width, size)
    h, w = box.inner
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    return canvas, box


def letterbox_mask(mask: np.ndarray, size: int, ignore_index: int) -> np.ndarray:
    """Letterbox an (H, W) class mask with nearest resampling; the padding is `ignore_index`."""
    box = Letterbox(mask.shape[0], mask.shape[1], size)
    h, w = box.inner
    canvas = np.full((size, size), ignore_index, np.uint8)
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
