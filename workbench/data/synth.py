"""A procedural synthetic "traffic" data set in exactly the layout of the real benchmark.

`make_synth_dataset` draws, from one seed, sign crops (cls), street scenes with stop signs, warning
signs and traffic lights (det) and road scenes with per-pixel masks (seg), and writes them as the
real benchmark at `/work/shared/data/traffic` is laid out (see its dataset.yaml). Labels are exact
by construction: a box is measured from the object's own footprint drawn with the same
coordinates, and a mask is drawn with the same calls as its image, without anti-aliasing.

Coordinates: a `Box` is (x0, y0, x1, y1) in pixels, PIL's convention (both ends drawn). COCO boxes
are [x, y, w, h] in pixels with the right/bottom edge exclusive (w = x1 - x0 + 1 of the footprint).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from workbench.io import atomic_dir

Box = tuple[float, float, float, float]
Colour = tuple[int, int, int]
Palette = Mapping[str, Colour | int]
# A drawer paints one object inside `box` with the colours of `palette` (keys: red, blue, white,
# black, yellow, housing, lamp0..lamp2). Given MASK_PALETTE it paints the object's footprint.
Drawer = Callable[[ImageDraw.ImageDraw, Box, Palette], None]

JPEG_QUALITY = 90
IGNORE_INDEX = 255
DET_SIZES = ((128, 96), (96, 128))  # (width, height): landscape mostly, portrait sometimes
SEG_SIZE = (128, 96)


@dataclass(frozen=True)
class SynthSizes:
    """How many images each split gets: cls per class, det/seg per split, unlabeled crops + scenes."""

    cls: tuple[int, int, int]  # train, val, test images per class
    det: tuple[int, int, int]  # train, val, test scenes
    seg: tuple[int, int, int]  # train, val, test scenes
    unlabeled: tuple[int, int]  # sign crops, road scenes


SIZES = {
    "full": SynthSizes(cls=(40, 12, 12), det=(160, 48, 48), seg=(96, 32, 32), unlabeled=(32, 16)),
    "tiny": SynthSizes(cls=(3, 2, 2), det=(6, 4, 4), seg=(6, 4, 4), unlabeled=(4, 2)),
}
SPLITS = ("train", "val", "test")


# -- palettes ----------------------------------------------------------------------------------
SIGN_COLOURS: dict[str, Colour] = {
    "red": (200, 28, 36),
    "blue": (22, 74, 170),
    "white": (236, 236, 230),
    "black": (30, 30, 32),
    "yellow": (244, 192, 24),
    "housing": (40, 40, 38),
}
LAMP_OFF: Colour = (72, 70, 62)
LAMP_ON: tuple[Colour, ...] = ((238, 40, 30), (246, 180, 22), (40, 222, 92))
DISTRACTOR_REDS: tuple[Colour, ...] = ((40, 150, 60), (120, 50, 150), (30, 120, 200))  # far from red


class _Solid(dict):
    """A palette that paints every part with 255: drawing with it gives an object's footprint."""

    def __missing__(self, key):
        return 255


MASK_PALETTE: Palette = _Solid()


def _jitter(rng: np.random.Generator, colour: Colour, amount: int) -> Colour:
    """Shift each channel of a colour by up to `amount`, clipped to 5..250 (never pure black)."""
    shifted = np.asarray(colour) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(c) for c in np.clip(shifted, 5, 250))


def object_palette(rng: np.random.Generator, jitter: int = 18) -> dict[str, Colour]:
    """Return the colours of one sign or traffic light: the sign colours jittered, one lamp lit.

    Args:
        rng: the random generator.
        jitter: largest shift of a channel.

    Returns:
        {part name: (r, g, b)}, every channel in 5..250 so no part is pure black.
    """
    palette = {name: _jitter(rng, colour, jitter) for name, colour in SIGN_COLOURS.items()}
    lit = int(rng.integers(3))
    for i, on in enumerate(LAMP_ON):
        palette[f"lamp{i}"] = _jitter(rng, on if i == lit else LAMP_OFF, jitter)
    return palette


def _random_colour(rng: np.random.Generator, lo: int = 30, hi: int = 220) -> Colour:
    return tuple(int(c) for c in rng.integers(lo, hi + 1, size=3))


# -- shapes in unit coordinates, mapped into a box ---------------------------------------------
def _map(box: Box, uv) -> list[tuple[float, float]]:
    """Map points (u, v) in [0, 1]^2 into `box`."""
    x0, y0, x1, y1 = box
    return [(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in uv]


def _shrink(uv, factor: float, centre: tuple[float, float] = (0.5, 0.5)):
    """Scale unit points about `centre` by `factor` (an inset copy of a shape)."""
    cu, cv = centre
    return [(cu + (u - cu) * factor, cv + (v - cv) * factor) for u, v in uv]


def _inset(box: Box, fraction: float) -> Box:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)


TRIANGLE_UP = [(0.5, 0.0), (1.0, 0.87), (0.0, 0.87)]
TRIANGLE_DOWN = [(0.0, 0.13), (1.0, 0.13), (0.5, 1.0)]
OCTAGON = [(0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)) for a in np.deg2rad(22.5 + 45 * np.arange(8))]
DIAMOND = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
ARROW_UP = [(0.5, 0.16), (0.76, 0.46), (0.59, 0.46), (0.59, 0.82), (0.41, 0.82), (0.41, 0.46), (0.24, 0.46)]
BAR = (0.2, 0.42, 0.8, 0.58)  # u0, v0, u1, v1 of a horizontal bar


# -- sign and object drawers (one signature, see `Drawer`) ------------------------------------
def _draw_ring(draw: ImageDraw.ImageDraw, box: Box, palette: Palette, rim: str) -> None:
    draw.ellipse(box, fill=palette[rim])
    draw.ellipse(_inset(box, 0.14), fill=palette["white"])


def _draw_bar(draw: ImageDraw.ImageDraw, box: Box, colour) -> None:
    (u0, v0), (u1, v1) = _map(box, [BAR[:2], BAR[2:]])
    draw.rectangle((u0, v0, u1, v1), fill=colour)


def draw_red_circle(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Red ring, white centre (a prohibitory sign)."""
    _draw_ring(draw, box, palette, "red")


def draw_blue_circle(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Blue ring, white centre: differs from the red circle in colour only."""
    _draw_ring(draw, box, palette, "blue")


def draw_red_circle_bar(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Red ring, white centre, black bar: differs from the red circle in the inner symbol only."""
    _draw_ring(draw, box, palette, "red")
    _draw_bar(draw, box, palette["black"])


def draw_blue_arrow(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Blue disc with a white arrow pointing up."""
    draw.ellipse(box, fill=palette["blue"])
    draw.polygon(_map(box, ARROW_UP), fill=palette["white"])


def draw_red_triangle(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """White triangle, point up, with a red border (a warning sign)."""
    draw.polygon(_map(box, TRIANGLE_UP), fill=palette["red"])
    draw.polygon(_map(box, _shrink(TRIANGLE_UP, 0.6, (0.5, 0.58))), fill=palette["white"])


def draw_red_triangle_down(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """White triangle, point down, with a red border: the warning sign upside down (yield)."""
    draw.polygon(_map(box, TRIANGLE_DOWN), fill=palette["red"])
    draw.polygon(_map(box, _shrink(TRIANGLE_DOWN, 0.6, (0.5, 0.42))), fill=palette["white"])


def draw_red_octagon(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Red octagon with a thin white rim and a white bar (a stop sign)."""
    draw.polygon(_map(box, OCTAGON), fill=palette["white"])
    draw.polygon(_map(box, _shrink(OCTAGON, 0.88)), fill=palette["red"])
    _draw_bar(draw, box, palette["white"])


def draw_yellow_diamond(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """White diamond with a yellow centre (a priority-road sign)."""
    draw.polygon(_map(box, DIAMOND), fill=palette["white"])
    draw.polygon(_map(box, _shrink(DIAMOND, 0.62)), fill=palette["yellow"])


def draw_traffic_light(draw: ImageDraw.ImageDraw, box: Box, palette: Palette) -> None:
    """Dark housing filling `box` with three lamps stacked top to bottom."""
    draw.rectangle(box, fill=palette["housing"])
    x0, y0, x1, y1 = box
    radius = min(0.36 * (x1 - x0), 0.14 * (y1 - y0))
    cx = (x0 + x1) / 2
    for i, v in enumerate((1 / 6, 1 / 2, 5 / 6)):
        cy = y0 + v * (y1 - y0)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=palette[f"lamp{i}"])


# classes.txt order; pairs that differ in colour only (00/01), inner symbol only (00/02) and
# orientation only (04/05) keep the task from being solved by one cue.
CLS_DRAWERS: dict[str, Drawer] = {
    "00_red_circle": draw_red_circle,
    "01_blue_circle": draw_blue_circle,
    "02_red_circle_bar": draw_red_circle_bar,
    "03_blue_arrow": draw_blue_arrow,
    "04_red_triangle": draw_red_triangle,
    "05_red_triangle_down": draw_red_triangle_down,
    "06_red_octagon": draw_red_octagon,
    "07_yellow_diamond": draw_yellow_diamond,
}
CLS_CLASSES = list(CLS_DRAWERS)

DET_DRAWERS: dict[str, Drawer] = {  # COCO ids 1, 2, 3 in this order
    "stop": draw_red_octagon,
    "warning": draw_red_triangle,
    "light": draw_traffic_light,
}
DET_SHAPES = {"stop": (1.0, 10), "warning": (1.0, 10), "light": (0.38, 14)}  # width / height, min height
DET_CATEGORIES = [
    {"id": i, "name": name, "supercategory": "traffic"} for i, name in enumerate(DET_DRAWERS, start=1)
]
DET_CATEGORY_IDS = {c["name"]: c["id"] for c in DET_CATEGORIES}
# signs that look like a category but are not one (same colours, other shapes, or the reverse)
DISTRACTOR_SIGNS: tuple[Drawer, ...] = (
    draw_red_circle, draw_blue_circle, draw_red_circle_bar, draw_blue_arrow, draw_red_triangle_down,
    draw_yellow_diamond,
)

SEG_CLASSES = ["sky", "building", "road", "sidewalk", "vegetation", "car", "pole"]
SEG = {name: i for i, name in enumerate(SEG_CLASSES)}


# -- pixel-level helpers -----------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int = 5) -> np.ndarray:
    """Low-frequency noise, (H, W, 3) float32 of about unit spread: texture and uneven lighting."""
    small = rng.normal(size=(cells, cells + 1, 3)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _finish(image: Image.Image, rng: np.random.Generator,
            noise: tuple[float, float] = (2, 9)) -> Image.Image:
    """Change contrast and brightness, add gaussian noise; the geometry is left as it is."""
    arr = np.asarray(image, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.7, 1.25) + mean + rng.uniform(-30, 30)
    arr = arr * rng.uniform(0.92, 1.08, size=3)  # colour cast
    arr += rng.normal(0.0, rng.uniform(*noise), size=arr.shape)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _gradient(rng: np.random.Generator, width: int, height: int, top: Colour, bottom: Colour) -> np.ndarray:
    """A vertical colour gradient with low-frequency texture, (H, W, 3) float32."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    arr = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(arr, (height, width, 3)) + 14 * _smooth_noise(rng, width, height)


def _draw_random_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int,
                       size: tuple[float, float]) -> None:
    """One rectangle, ellipse or line of a random colour somewhere on the canvas (clutter)."""
    w, h = rng.uniform(*size, size=2)
    x, y = rng.uniform(-w / 2, width - w / 2), rng.uniform(-h / 2, height - h / 2)
    colour = _random_colour(rng)
    kind = int(rng.integers(3))
    if kind == 0:
        draw.rectangle((x, y, x + w, y + h), fill=colour)
    elif kind == 1:
        draw.ellipse((x, y, x + w, y + h), fill=colour)
    else:
        draw.line((x, y, x + w, y + h), fill=colour, width=int(rng.integers(1, 4)))


# -- cls: sign crops ---------------------------------------------------------------------------
SUPERSAMPLE = 4
SIGN_MARGIN = 0.1  # of the sign canvas on each side, so a rotation up to 15 degrees stays inside


def _render_sign(rng: np.random.Generator, drawer: Drawer, diameter: float) -> Image.Image:
    """Draw a sign anti-aliased, slightly rotated and squashed, on a transparent RGBA canvas."""
    side = max(8, int(round(diameter / (1 - 2 * SIGN_MARGIN))))
    big = side * SUPERSAMPLE
    canvas = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    box = _inset((0, 0, big - 1, big - 1), SIGN_MARGIN)
    drawer(ImageDraw.Draw(canvas), box, {k: (*c, 255) for k, c in object_palette(rng).items()})
    canvas = canvas.convert("RGBa").rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC)
    squash = rng.uniform(0.82, 1.0, size=2)  # a sign seen slightly from the side or from below
    size = (max(4, int(round(side * squash[0]))), max(4, int(round(side * squash[1]))))
    return canvas.resize(size, Image.Resampling.LANCZOS).convert("RGBA")


def _clutter_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    top, bottom = _random_colour(rng), _random_colour(rng)
    arr = _gradient(rng, width, height, top, bottom)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        _draw_random_shape(draw, rng, width, height, (4, max(width, height)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def render_sign_crop(rng: np.random.Generator, class_index: int) -> Image.Image:
    """Draw one classification crop: a sign of class `class_index` on a cluttered background.

    Args:
        rng: the random generator (all randomness comes from it).
        class_index: index into `CLS_CLASSES`.

    Returns:
        An RGB image of 28-56 px a side (not always square); the sign covers 50-95% of its
        shorter side, slightly rotated, with blur, noise and an occluding patch on some crops.
    """
    width = int(rng.integers(28, 57))
    height = int(np.clip(round(width * rng.uniform(0.8, 1.25)), 28, 56))
    image = _clutter_background(rng, width, height)
    diameter = rng.uniform(0.5, 0.95) * min(width, height)
    sign = _render_sign(rng, CLS_DRAWERS[CLS_CLASSES[class_index]], diameter)
    # centre the sign's canvas with some slack, so part of the sign may leave the crop
    x = (width - sign.width) / 2 + rng.uniform(-0.5, 0.5) * max(4.0, width - diameter)
    y = (height - sign.height) / 2 + rng.uniform(-0.5, 0.5) * max(4.0, height - diameter)
    image.paste(sign, (int(round(x)), int(round(y))), sign)
    if rng.random() < 0.25:  # something in front of the sign
        _draw_random_shape(ImageDraw.Draw(image), rng, width, height, (0.2 * diameter, 0.45 * diameter))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.1)))
    return _finish(image, rng)


# -- det: street scenes with boxes -------------------------------------------------------------
@dataclass(frozen=True)
class DetObject:
    """One detection object: its category name and the box its drawer paints into.

    `box` is (x0, y0, x1, y1) in pixels and may reach outside the image; the COCO box is measured
    from what is drawn (`measure_box`), so it is tight and clipped to the image.
    """

    category: str
    box: Box


def measure_box(drawer: Drawer, box: Box, width: int, height: int) -> list[float] | None:
    """Measure the tight box of what `drawer` paints into `box` on a width x height image.

    Args:
        drawer: a sign or object drawer.
        box: (x0, y0, x1, y1) pixels given to the drawer.
        width, height: the image size; the footprint is clipped to it.

    Returns:
        COCO [x, y, w, h] in pixels (x + w is one past the last drawn column), or None when nothing
        of the object is inside the image.
    """
    canvas = Image.new("L", (width, height), 0)
    drawer(ImageDraw.Draw(canvas), box, MASK_PALETTE)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _sample_object_box(rng: np.random.Generator, category: str, width: int, height: int) -> Box:
    """A random box for an object of 10-40 px, at least about 70% inside the image."""
    aspect, min_height = DET_SHAPES[category]
    h = rng.uniform(min_height, 39)  # drawn inclusive: at most 40 px
    w = aspect * h
    x0 = rng.uniform(-0.25 * w, width - 0.75 * w)
    y0 = rng.uniform(-0.25 * h, height - 0.75 * h)
    return (x0, y0, x0 + w, y0 + h)


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection of two COCO boxes over the smaller box's area."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def sample_det_objects(rng: np.random.Generator, width: int, height: int,
                       max_overlap: float = 0.35) -> list[tuple[DetObject, list[float]]]:
    """Place 1-4 objects in a width x height scene, overlapping each other only partly.

    Args:
        rng: the random generator.
        width, height: the scene size in pixels.
        max_overlap: largest intersection of two boxes over the smaller box's area.

    Returns:
        [(object, COCO box [x, y, w, h] in pixels)], in drawing order (later ones in front).
    """
    placed: list[tuple[DetObject, list[float]]] = []
    names = list(DET_DRAWERS)
    for _ in range(int(rng.integers(1, 5))):
        category = names[int(rng.integers(len(names)))]
        for _attempt in range(30):
            obj = DetObject(category, _sample_object_box(rng, category, width, height))
            coco = measure_box(DET_DRAWERS[category], obj.box, width, height)
            if coco is None or min(coco[2], coco[3]) < 4:
                continue
            if all(_overlap(coco, other) <= max_overlap for _, other in placed):
                placed.append((obj, coco))
                break
    return placed


def _draw_street_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Sky, ground, buildings and wires with texture: the backdrop of a detection scene."""
    horizon = rng.uniform(0.3, 0.6) * height
    sky = _gradient(rng, width, height, _random_colour(rng, 120, 235), _random_colour(rng, 120, 235))
    ground = _gradient(rng, width, height, _random_colour(rng, 50, 150), _random_colour(rng, 40, 160))
    rows = (np.arange(height) < horizon)[:, None, None]
    image = Image.fromarray(np.clip(np.where(rows, sky, ground), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):  # buildings standing on the horizon
        x, w, h = rng.uniform(-10, width), rng.uniform(10, 50), rng.uniform(10, horizon + 10)
        draw.rectangle((x, horizon - h, x + w, horizon), fill=_random_colour(rng, 40, 200))
        window = _random_colour(rng, 20, 230)
        for wy in np.arange(horizon - h + 3, horizon - 4, 7):
            for wx in np.arange(x + 3, x + w - 4, 7):
                draw.rectangle((wx, wy, wx + 3, wy + 3), fill=window)
    for _ in range(int(rng.integers(0, 4))):  # wires and poles
        draw.line(tuple(rng.uniform(0, max(width, height), size=4)), fill=_random_colour(rng, 20, 120),
                  width=int(rng.integers(1, 3)))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return image


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A shape that is not a category: another sign, a stop/warning sign recoloured, or clutter."""
    s = rng.uniform(8, 36)
    x, y = rng.uniform(-s / 4, width - 3 * s / 4), rng.uniform(-s / 4, height - 3 * s / 4)
    palette = object_palette(rng)
    kind = rng.random()
    if kind < 0.4:
        drawer = DISTRACTOR_SIGNS[int(rng.integers(len(DISTRACTOR_SIGNS)))]
    elif kind < 0.7:
        drawer = (draw_red_octagon, draw_red_triangle)[int(rng.integers(2))]
        palette["red"] = _jitter(rng, DISTRACTOR_REDS[int(rng.integers(len(DISTRACTOR_REDS)))], 15)
    else:
        _draw_random_shape(draw, rng, width, height, (4, 30))
        return
    drawer(draw, (x, y, x + s, y + s), palette)


def render_det_scene(rng: np.random.Generator, width: int,
                     height: int) -> tuple[Image.Image, list[tuple[str, list[float]]]]:
    """Draw one detection scene: 1-4 objects on a cluttered street with distractor shapes.

    Args:
        rng: the random generator.
        width, height: the scene size in pixels.

    Returns:
        (RGB image, [(category name, COCO box [x, y, w, h] in pixels)]). Boxes are tight around
        each object's whole drawn shape (also where another object covers part of it), clipped to
        the image. Blur is applied before the objects are drawn, so it never widens them.
    """
    image = _draw_street_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        _draw_distractor(draw, rng, width, height)
    objects = sample_det_objects(rng, width, height)
    for obj, _ in objects:
        DET_DRAWERS[obj.category](draw, obj.box, object_palette(rng))
    return _finish(image, rng, noise=(2, 7)), [(obj.category, coco) for obj, coco in objects]


# -- seg: road scenes with masks ---------------------------------------------------------------
class _Painter:
    """Draws every shape twice with the same coordinates: a colour into the image, a class into the mask."""

    def __init__(self, width: int, height: int):
        self.image = Image.new("RGB", (width, height))
        self.mask = Image.new("L", (width, height), 0)
        self._draws = (ImageDraw.Draw(self.image), ImageDraw.Draw(self.mask))

    def _both(self, method: str, xy, cls: int, colour: Colour, **kw) -> None:
        image_draw, mask_draw = self._draws
        getattr(image_draw, method)(xy, fill=colour, **kw)
        getattr(mask_draw, method)(xy, fill=cls, **kw)

    def polygon(self, xy, cls: int, colour: Colour) -> None:
        self._both("polygon", [tuple(p) for p in xy], cls, colour)

    def rectangle(self, xy, cls: int, colour: Colour) -> None:
        self._both("rectangle", xy, cls, colour)

    def ellipse(self, xy, cls: int, colour: Colour) -> None:
        self._both("ellipse", xy, cls, colour)

    def line(self, xy, cls: int, colour: Colour, width: int) -> None:
        self._both("line", xy, cls, colour, width=width)


@dataclass(frozen=True)
class _Street:
    """Perspective of a straight street: ground depth t is 0 at the horizon and 1 at the bottom row.

    Lateral position u is in road half-widths (u = -1 / +1 are the road edges); a world length L at
    depth t is L * t pixels, so everything scales with t.
    """

    width: int
    height: int
    horizon: float
    vanish_x: float
    centre_x: float  # road centre at the bottom row
    half_road: float  # road half-width in pixels at the bottom row
    walk: float  # outer edge of the sidewalks, in road half-widths

    def y(self, t: float) -> float:
        return self.horizon + t * (self.height - self.horizon)

    def x(self, t: float, u: float) -> float:
        return self.vanish_x + t * (self.centre_x - self.vanish_x + u * self.half_road)

    def point(self, t: float, u: float, up: float = 0.0) -> tuple[float, float]:
        """Image point at depth t, lateral u, `up` road half-widths above the ground."""
        return (self.x(t, u), self.y(t) - up * self.half_road * t)


def _sample_street(rng: np.random.Generator, width: int, height: int) -> _Street:
    return _Street(
        width=width, height=height,
        horizon=rng.uniform(0.3, 0.5) * height,
        vanish_x=width / 2 + rng.uniform(-0.15, 0.15) * width,
        centre_x=width / 2 + rng.uniform(-0.12, 0.12) * width,
        half_road=rng.uniform(0.3, 0.55) * width,
        walk=rng.uniform(1.25, 1.6),
    )


SEG_COLOURS: dict[str, tuple[Colour, ...]] = {  # ranges overlap on purpose: colour is not enough
    "sky": ((120, 170, 225), (175, 180, 185), (200, 205, 210)),
    "building": ((150, 150, 150), (170, 140, 110), (140, 70, 55), (200, 190, 160), (110, 110, 120)),
    "road": ((90, 90, 95), (120, 118, 115), (70, 70, 72)),
    "sidewalk": ((160, 155, 150), (150, 110, 100), (130, 130, 135)),
    "vegetation": ((60, 120, 50), (90, 110, 40), (120, 120, 60), (50, 90, 60)),
    "trunk": ((90, 65, 40), (70, 60, 50)),
    "car": ((180, 30, 30), (30, 50, 140), (200, 200, 200), (40, 40, 40), (120, 120, 125), (200, 170, 40)),
    "pole": ((90, 90, 90), (150, 150, 140), (60, 70, 60)),
}


def _seg_colour(rng: np.random.Generator, kind: str, jitter: int = 22) -> Colour:
    choices = SEG_COLOURS[kind]
    return _jitter(rng, choices[int(rng.integers(len(choices)))], jitter)


def _draw_sky_and_ground(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    top, bottom = _seg_colour(rng, "sky"), _seg_colour(rng, "sky")
    for row in range(int(np.ceil(s.horizon)) + 1):
        f = row / max(s.horizon, 1.0)
        colour = tuple(int((1 - f) * a + f * b) for a, b in zip(top, bottom))
        p.line((0, row, s.width - 1, row), SEG["sky"], colour, width=1)
    p.rectangle((0, s.horizon, s.width - 1, s.height - 1), SEG["vegetation"], _seg_colour(rng, "vegetation"))


def _draw_skyline(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    """Far buildings standing on the horizon, with gaps of sky."""
    x = rng.uniform(-10, 0)
    while x < s.width:
        w = rng.uniform(6, 28)
        if rng.random() < 0.8:
            p.rectangle((x, s.horizon - rng.uniform(4, 0.8 * s.horizon), x + w, s.horizon + 2),
                        SEG["building"], _seg_colour(rng, "building"))
        x += w


def _draw_road(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    """Road trapezoid to the vanishing point, sidewalks either side, dashed centre line."""
    t_end = 1.05  # a little below the bottom row, clipped by the image
    top = s.point(0, 0)
    p.polygon([top, s.point(t_end, 1), s.point(t_end, -1)], SEG["road"], _seg_colour(rng, "road"))
    walk_colour = _seg_colour(rng, "sidewalk")
    for side in (-1, 1):
        p.polygon([top, s.point(t_end, side), s.point(t_end, side * s.walk)], SEG["sidewalk"], walk_colour)
    dash = _jitter(rng, (215, 215, 205), 15)
    t = rng.uniform(0.08, 0.14)
    while t < t_end:
        t_next = t * 1.25
        p.polygon([s.point(t, -0.04), s.point(t, 0.04), s.point(t_next, 0.04), s.point(t_next, -0.04)],
                  SEG["road"], dash)
        t = t_next * 1.25


def _draw_walls(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    """House fronts along the outer edge of each sidewalk, with windows, some gaps between them."""
    for side in (-1, 1):
        t = rng.uniform(0.02, 0.1)
        while t < 1.1:
            t_next = t + rng.uniform(0.15, 0.5)
            if rng.random() < 0.75:
                u, up = side * s.walk, rng.uniform(0.8, 2.5)
                p.polygon([s.point(t, u), s.point(t_next, u), s.point(t_next, u, up), s.point(t, u, up)],
                          SEG["building"], _seg_colour(rng, "building"))
                window = _seg_colour(rng, "building", jitter=40)
                for a in np.arange(0.15, 0.85, 0.25):
                    ta, tb = t + a * (t_next - t), t + (a + 0.12) * (t_next - t)
                    for v in np.arange(0.3, up - 0.2, 0.5):
                        p.polygon([s.point(ta, u, v), s.point(tb, u, v), s.point(tb, u, v + 0.25),
                                   s.point(ta, u, v + 0.25)], SEG["building"], window)
            t = t_next


def _draw_tree(p: _Painter, s: _Street, rng: np.random.Generator, t: float, u: float) -> None:
    scale = s.half_road * t
    x, y = s.point(t, u)
    height = rng.uniform(0.6, 1.1) * scale
    trunk = _seg_colour(rng, "trunk")
    p.line((x, y, x, y - height), SEG["vegetation"], trunk, width=max(1, int(0.06 * scale)))
    crown = _seg_colour(rng, "vegetation")
    for _ in range(int(rng.integers(3, 6))):
        r = rng.uniform(0.15, 0.3) * scale
        cx, cy = x + rng.uniform(-0.2, 0.2) * scale, y - height + rng.uniform(-0.15, 0.1) * scale
        p.ellipse((cx - r, cy - r, cx + r, cy + r), SEG["vegetation"], _jitter(rng, crown, 12))


def _draw_pole(p: _Painter, s: _Street, rng: np.random.Generator, t: float, u: float) -> None:
    scale = s.half_road * t
    x, y = s.point(t, u)
    top = y - rng.uniform(0.9, 1.4) * scale
    colour = _seg_colour(rng, "pole")
    p.line((x, y, x, top), SEG["pole"], colour, width=max(1, int(round(0.04 * scale))))
    if rng.random() < 0.5:  # a small plate on top
        r = 0.1 * scale
        p.rectangle((x - r, top - r, x + r, top + r), SEG["pole"], _seg_colour(rng, "pole", jitter=60))


def _draw_car(p: _Painter, s: _Street, rng: np.random.Generator, t: float, u: float) -> None:
    """A car seen from behind: body, cabin, rear window, lights and wheels, all class car."""
    w = rng.uniform(0.65, 0.85) * s.half_road * t
    x, y = s.point(t, u)
    car, dark = SEG["car"], _jitter(rng, (35, 38, 45), 10)
    for wx in (x - 0.33 * w, x + 0.33 * w):
        p.ellipse((wx - 0.1 * w, y - 0.2 * w, wx + 0.1 * w, y), car, _jitter(rng, (25, 25, 25), 8))
    body = _seg_colour(rng, "car")
    p.polygon([(x - 0.38 * w, y - 0.42 * w), (x + 0.38 * w, y - 0.42 * w), (x + 0.28 * w, y - 0.7 * w),
               (x - 0.28 * w, y - 0.7 * w)], car, body)
    p.polygon([(x - 0.32 * w, y - 0.45 * w), (x + 0.32 * w, y - 0.45 * w), (x + 0.24 * w, y - 0.65 * w),
               (x - 0.24 * w, y - 0.65 * w)], car, dark)
    p.rectangle((x - 0.5 * w, y - 0.42 * w, x + 0.5 * w, y - 0.1 * w), car, body)
    for lx in (x - 0.45 * w, x + 0.35 * w):
        p.rectangle((lx, y - 0.36 * w, lx + 0.1 * w, y - 0.28 * w), car, _jitter(rng, (210, 40, 30), 20))


def _draw_street_things(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    """Trees and poles on the sidewalks, 0-3 cars on the road, drawn far to near."""
    things = []
    for _ in range(int(rng.integers(1, 5))):
        side = (-1, 1)[int(rng.integers(2))]
        kind = _draw_tree if rng.random() < 0.65 else _draw_pole
        things.append((rng.uniform(0.15, 1.0), side * rng.uniform(1.1, 0.95 * s.walk), kind))
    for _ in range(int(rng.integers(0, 4))):
        things.append((rng.uniform(0.3, 1.1), rng.uniform(-0.6, 0.6), _draw_car))
    for t, u, draw in sorted(things, key=lambda thing: thing[0]):
        draw(p, s, rng, t, u)


def _draw_void_blobs(p: _Painter, s: _Street, rng: np.random.Generator) -> None:
    """Small unlabelled things (class 255), as the source data sets have them."""
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(1.5, 4)
        x, y = rng.uniform(0, s.width), rng.uniform(s.horizon, s.height)
        p.ellipse((x - r, y - r, x + r, y + r), IGNORE_INDEX, _random_colour(rng))


def _ignore_band(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Set 255 on the pixels of some classes that touch another class (a 1-2 px band on boundaries)."""
    chosen = np.zeros(256, bool)
    chosen[: len(SEG_CLASSES)] = rng.random(len(SEG_CLASSES)) < 0.5
    edge = np.zeros(mask.shape, bool)
    for axis in (0, 1):
        diff = np.diff(mask, axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    out = mask.copy()
    out[edge & chosen[mask]] = IGNORE_INDEX
    return out


def render_road_scene(rng: np.random.Generator, width: int = SEG_SIZE[0],
                      height: int = SEG_SIZE[1]) -> tuple[Image.Image, np.ndarray]:
    """Draw one segmentation scene: a street in perspective and its per-pixel class mask.

    Args:
        rng: the random generator.
        width, height: the scene size in pixels.

    Returns:
        (RGB image, (H, W) uint8 mask of `SEG_CLASSES` indices, 255 = ignore). The mask is drawn
        with the same calls as the image, so it is exact per pixel; texture and noise are added to
        the image afterwards, never blur.
    """
    street = _sample_street(rng, width, height)
    painter = _Painter(width, height)
    for step in (_draw_sky_and_ground, _draw_skyline, _draw_road, _draw_walls, _draw_street_things,
                 _draw_void_blobs):
        step(painter, street, rng)
    mask = np.asarray(painter.mask, dtype=np.uint8)
    if rng.random() < 0.6:
        mask = _ignore_band(mask, rng)
    shading = 1 + 0.12 * _smooth_noise(rng, width, height, cells=4)  # uneven light and texture
    image = Image.fromarray(np.clip(np.asarray(painter.image) * shading, 0, 255).astype(np.uint8))
    return _finish(image, rng, noise=(2, 7)), mask


# -- writing the data set ----------------------------------------------------------------------
def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=JPEG_QUALITY)


def _save_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path, format="PNG")


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_cls(root: Path, rng: np.random.Generator, counts: tuple[int, int, int]) -> None:
    """ImageFolder train/val, test crops renamed sign_NNNNN.jpg in shuffled order, truth/cls.csv."""
    _write_lines(root / "cls" / "classes.txt", CLS_CLASSES)
    test = []
    for index, name in enumerate(CLS_CLASSES):
        for split, count in zip(SPLITS, counts):
            for i in range(count):
                crop = render_sign_crop(rng, index)
                if split == "test":
                    test.append((crop, name))
                else:
                    _save_jpeg(crop, root / "cls" / split / name / f"{index:02d}_{i:05d}.jpg")
    rows = []
    for k, j in enumerate(rng.permutation(len(test))):
        crop, name = test[j]
        _save_jpeg(crop, root / "test" / "cls" / f"sign_{k:05d}.jpg")
        rows.append((f"sign_{k:05d}.jpg", name))
    (root / "truth").mkdir(parents=True, exist_ok=True)
    with open(root / "truth" / "cls.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows(rows)


def _write_det(root: Path, rng: np.random.Generator, counts: tuple[int, int, int]) -> None:
    """det/images + det/{train,val}.json, test/det + test/det_info.json (the test image list with its ids)
    + truth/det.json; image ids unique over all three."""
    targets = {"train": (root / "det" / "images", root / "det" / "train.json"),
               "val": (root / "det" / "images", root / "det" / "val.json"),
               "test": (root / "test" / "det", root / "truth" / "det.json")}
    image_id = 0
    for split, count in zip(SPLITS, counts):
        folder, json_path = targets[split]
        images, annotations = [], []
        for _ in range(count):
            width, height = DET_SIZES[0] if rng.random() < 0.85 else DET_SIZES[1]
            image, objects = render_det_scene(rng, width, height)
            file_name = f"road_{image_id:04d}.jpg"
            image_id += 1
            _save_jpeg(image, folder / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for category, (x, y, w, h) in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": DET_CATEGORY_IDS[category], "bbox": [x, y, w, h],
                                    "area": w * h, "iscrowd": 0})
        _write_json(json_path, {"info": {"description": f"synthetic traffic objects, {split}"},
                                "categories": DET_CATEGORIES, "images": images, "annotations": annotations})
        if split == "test":  # the organisers' image list: the ids a submission uses, no annotations
            _write_json(root / "test" / "det_info.json",
                        {"info": {"description": "synthetic traffic objects, test image list (ids a submission uses)"},
                         "categories": DET_CATEGORIES, "images": images})


def _write_seg(root: Path, rng: np.random.Generator, counts: tuple[int, int, int]) -> None:
    """seg/images|masks/{train,val}, test/seg images and truth/seg masks, same stem for image and mask."""
    _write_lines(root / "seg" / "classes.txt", SEG_CLASSES)
    targets = {"train": (root / "seg" / "images" / "train", root / "seg" / "masks" / "train"),
               "val": (root / "seg" / "images" / "val", root / "seg" / "masks" / "val"),
               "test": (root / "test" / "seg", root / "truth" / "seg")}
    k = 0
    for split, count in zip(SPLITS, counts):
        image_dir, mask_dir = targets[split]
        for _ in range(count):
            image, mask = render_road_scene(rng)
            _save_jpeg(image, image_dir / f"street_{k:04d}.jpg")
            _save_mask(mask, mask_dir / f"street_{k:04d}.png")
            k += 1


def _write_unlabeled(root: Path, rng: np.random.Generator, counts: tuple[int, int]) -> None:
    """Fresh sign crops (crop_NNNNN.jpg) and road scenes (scene_NNNNN.jpg), no labels."""
    crops, scenes = counts
    for i in range(crops):
        crop = render_sign_crop(rng, int(rng.integers(len(CLS_CLASSES))))
        _save_jpeg(crop, root / "unlabeled" / f"crop_{i:05d}.jpg")
    for i in range(scenes):
        _save_jpeg(render_road_scene(rng)[0], root / "unlabeled" / f"scene_{i:05d}.jpg")
    (root / "unlabeled").mkdir(parents=True, exist_ok=True)


def build_dataset_yaml() -> dict:
    """Return the dataset.yaml of the synthetic set: the real benchmark's keys and relative paths.

    Returns:
        The mapping written to `dataset.yaml` (paths relative to that file).
    """
    return {
        "name": "synth",
        "cls": {"classes": "cls/classes.txt", "train": "cls/train", "val": "cls/val", "test": "test/cls"},
        "det": {"train": {"images": "det/images", "annotations": "det/train.json"},
                "val": {"images": "det/images", "annotations": "det/val.json"},
                "test": "test/det", "test_info": "test/det_info.json"},
        "seg": {"classes": "seg/classes.txt", "ignore_index": IGNORE_INDEX,
                "train": {"images": "seg/images/train", "masks": "seg/masks/train"},
                "val": {"images": "seg/images/val", "masks": "seg/masks/val"},
                "test": "test/seg"},
        "unlabeled": "unlabeled",
        "truth": {"cls": "truth/cls.csv", "det": "truth/det.json", "seg": "truth/seg"},
    }


README = """# synth: a procedural stand-in for the traffic benchmark

Drawn by `workbench.data.synth.make_synth_dataset(out, seed={seed}, size="{size}")`; same layout
and schema as the real `traffic` set (see dataset.yaml). No real data.

- cls: {n_cls} sign classes drawn with PIL, crops of 28-56 px with clutter, blur, noise, occluders.
- det: 128x96 (some 96x128) street scenes, COCO categories {det}; boxes tight around the drawn shape.
- seg: 128x96 road scenes, classes {seg} (+ 255 ignore); masks drawn with the image's own geometry.
- test/ holds images only, and test/det_info.json, the detection test image list with the ids a
  submission uses; truth/ holds their labels, read by scoring alone.
"""


def make_synth_dataset(out: str | Path, seed: int = 0, size: str = "full") -> Path:
    """Write the synthetic traffic data set into `out` (replacing it) and return its dataset.yaml.

    The whole folder is built beside `out` and renamed onto it at the end, so an interrupted run
    leaves nothing that looks complete. Every random draw comes from `np.random.default_rng(seed)`:
    the same seed gives byte-identical files.

    Args:
        out: the folder to write (created or replaced).
        seed: the random seed.
        size: "full" (cls 8 x (40, 12, 12), det 160/48/48, seg 96/32/32, unlabeled 32 + 16) or
            "tiny" (cls 8 x (3, 2, 2), det 6/4/4, seg 6/4/4, unlabeled 4 + 2), for fast tests.

    Returns:
        Path of `out/dataset.yaml`.

    Raises:
        ValueError: `size` is not one of SIZES.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    counts = SIZES[size]
    rng_cls, rng_det, rng_seg, rng_unlabeled = np.random.default_rng(seed).spawn(4)
    out = Path(out)
    with atomic_dir(out) as root:
        _write_cls(root, rng_cls, counts.cls)
        _write_det(root, rng_det, counts.det)
        _write_seg(root, rng_seg, counts.seg)
        _write_unlabeled(root, rng_unlabeled, counts.unlabeled)
        header = "# Synthetic traffic benchmark (workbench.data.synth). Paths are relative to this file.\n"
        (root / "dataset.yaml").write_text(header + yaml.safe_dump(build_dataset_yaml(), sort_keys=False))
        (root / "README.md").write_text(README.format(
            seed=seed, size=size, n_cls=len(CLS_CLASSES), det=", ".join(DET_DRAWERS),
            seg=", ".join(SEG_CLASSES)))
    return out / "dataset.yaml"
