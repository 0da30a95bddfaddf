"""Per-task training augmentation on cached uint8 canvases; boxes and masks move with the image.

Geometry and colour come from `torchvision.transforms.v2.functional` on tv_tensors, so one call moves
an image, its boxes and its mask alike. Every random number is drawn with `torch.rand` /
`torch.randint` from the given generator (None = torch's global RNG, which the trainer reseeds each
step so that a resumed run repeats the same augmentation).

Text form, one entry per task, ops joined by "+":
    cls=shift:0.125+colour:0.2,det=hflip:0.5+scale:0.75:1.25+colour:0.2,seg=hflip+scale:0.5:2.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from workbench.errors import RunError
from workbench.records.tasks import TASKS

FILL = 114  # grey of the canvas uncovered by a zoom-out or shift (the letterbox colour)
MIN_BOX_SIDE = 2.0  # px: a box thinner than this after clipping is dropped
MIN_BOX_VISIBLE = 0.25  # a box keeping less of its area than this after clipping is dropped


@dataclass(frozen=True)
class Augment:
    """Training augmentation of one task.

    Args:
        hflip: probability of a horizontal flip.
        scale: (low, high) range of the zoom factor s, drawn uniformly; s > 1 crops a random
            (H/s, W/s) window and resizes it back, s < 1 shrinks the image onto a random place of a
            grey canvas (masks: ignore_index). None = no zoom.
        shift: largest translation as a fraction of the size (uncovered pixels are grey).
        colour: brightness, contrast and saturation factors are drawn in [1 - colour, 1 + colour].
    """

    hflip: float = 0.0
    scale: tuple[float, float] | None = None
    shift: float = 0.0
    colour: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise RunError(f"hflip probability {self.hflip} is outside [0, 1]")
        if self.scale is not None:
            if len(self.scale) != 2:
                raise RunError(f"scale needs two numbers (low, high), got {self.scale}")
            low, high = self.scale
            if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
                raise RunError(f"scale range {low}:{high} needs 0 < low <= high")
            object.__setattr__(self, "scale", (low, high))  # a list would make the dataclass unhashable
        if not 0.0 <= self.shift < 1.0:
            raise RunError(f"shift {self.shift} is outside [0, 1)")
        if not 0.0 <= self.colour <= 1.0:
            raise RunError(f"colour {self.colour} is outside [0, 1]")

    @property
    def is_identity(self) -> bool:
        """True when this augmentation never changes its input."""
        no_zoom = self.scale is None or self.scale == (1.0, 1.0)
        return self.hflip == 0.0 and no_zoom and self.shift == 0.0 and self.colour == 0.0

    def to_text(self) -> str:
        """The ops in the grammar of `parse_augment`, e.g. "hflip:0.5+colour:0.2"; "none" if no op is set."""
        ops = []
        if self.hflip:
            ops.append(f"hflip:{float(self.hflip)!r}")
        if self.scale is not None:
            ops.append(f"scale:{float(self.scale[0])!r}:{float(self.scale[1])!r}")
        if self.shift:
            ops.append(f"shift:{float(self.shift)!r}")
        if self.colour:
            ops.append(f"colour:{float(self.colour)!r}")
        return "+".join(ops) or "none"


DEFAULT_AUGMENT: dict[str, Augment] = {
    "cls": Augment(shift=0.125, colour=0.2),  # no flip: mirrored signs change meaning
    "det": Augment(hflip=0.5, colour=0.2),
    "seg": Augment(hflip=0.5, colour=0.2),
}

# op name -> (allowed argument counts, function from the numbers to Augment fields)
_OPS: dict[str, tuple[tuple[int, ...], Callable[[list[float]], dict]]] = {
    "hflip": ((0, 1), lambda a: {"hflip": a[0] if a else 0.5}),
    "scale": ((2,), lambda a: {"scale": (a[0], a[1])}),
    "shift": ((1,), lambda a: {"shift": a[0]}),
    "colour": ((1,), lambda a: {"colour": a[0]}),
}


def _parse_op(op: str) -> dict:
    """Augment fields of one "NAME[:ARG...]" op, e.g. "scale:0.5:2" -> {"scale": (0.5, 2.0)}."""
    name, *args = op.split(":")
    if name not in _OPS:
        raise RunError(f"unknown augmentation op {op!r} (known: {', '.join(_OPS)}, or none)")
    counts, to_fields = _OPS[name]
    if len(args) not in counts:
        raise RunError(f"augmentation op {op!r} takes {' or '.join(map(str, counts))} number(s)")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        raise RunError(f"augmentation op {op!r}: not a number") from None
    return to_fields(numbers)


def _parse_task(spec: str) -> Augment:
    """Augment of one task's ops, e.g. "hflip+colour:0.2"; "none" = no augmentation."""
    if spec == "none":
        return Augment()
    fields: dict = {}
    for op in spec.split("+"):
        op = op.strip()
        new = _parse_op(op)
        if fields.keys() & new.keys():
            raise RunError(f"augmentation op {op!r} is given twice")
        fields.update(new)
    return Augment(**fields)


def parse_augment(text: str | None) -> dict[str, Augment]:
    """Per-task augmentation from text such as "cls=shift:0.125+colour:0.2,seg=hflip+scale:0.5:2.0".

    Args:
        text: comma-separated "TASK=OP[:ARGS][+OP...]" entries; OP is hflip[:P] (P defaults to
            0.5), scale:LOW:HIGH, shift:FRACTION, colour:AMOUNT, or the single word none.
            None or blank = DEFAULT_AUGMENT.

    Returns:
        {"cls": Augment, "det": Augment, "seg": Augment}; tasks not named keep DEFAULT_AUGMENT.

    Raises:
        RunError: unknown task or op, wrong count of numbers, or a value out of range.
    """
    result = dict(DEFAULT_AUGMENT)
    if text is None or not text.strip():
        return result
    named: set[str] = set()
    for part in text.split(","):
        part = part.strip()
        task, eq, spec = part.partition("=")
        task, spec = task.strip(), spec.strip()
        if not eq or not spec:
            raise RunError(f"bad augmentation {part!r}: expected TASK=OP[:ARGS][+OP...]")
        if task not in TASKS:
            raise RunError(f"bad augmentation {part!r}: unknown task {task!r} (known: {', '.join(TASKS)})")
        if task in named:
            raise RunError(f"bad augmentation {part!r}: task {task!r} is given twice")
        named.add(task)
        try:
            result[task] = _parse_task(spec)
        except RunError as e:
            raise RunError(f"bad augmentation {part!r}: {e}") from None
    return result


def format_augment(augments: dict[str, Augment]) -> str:
    """Text of per-task augmentation; parse_augment(format_augment(d)) == d for d with the three tasks."""
    return ",".join(f"{task}={aug.to_text()}" for task, aug in augments.items())


# ---------------------------------------------------------------- deterministic geometry and colour

def _wrap(image: torch.Tensor, boxes: torch.Tensor | None, mask: torch.Tensor | None) -> tuple:
    """tv_tensors of a sample; boxes are left unclamped so the visible fraction can be measured later."""
    size = tuple(image.shape[-2:])
    tv_boxes = None if boxes is None else tv_tensors.BoundingBoxes(
        boxes, format="XYXY", canvas_size=size, clamping_mode=None)
    return tv_tensors.Image(image), tv_boxes, None if mask is None else tv_tensors.Mask(mask)


def _unwrap(image: torch.Tensor, boxes: torch.Tensor | None, mask: torch.Tensor | None,
            box_dtype: torch.dtype | None) -> tuple:
    """Plain tensors back from tv_tensors (boxes in their input dtype)."""
    plain = [None if t is None else t.as_subclass(torch.Tensor) for t in (image, boxes, mask)]
    if plain[1] is not None:
        plain[1] = plain[1].to(box_dtype)
    return tuple(plain)


def flip_sample(image: torch.Tensor, boxes: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple:
    """Mirror a sample left-right.

    Args:
        image: (3, H, W) uint8. boxes: (N, 4) xyxy canvas px, or None. mask: (H, W) int, or None.

    Returns:
        (image, boxes, mask) flipped; None stays None.
    """
    box_dtype = None if boxes is None else boxes.dtype
    parts = [None if t is None else F.horizontal_flip(t) for t in _wrap(image, boxes, mask)]
    return _unwrap(*parts, box_dtype)


# interpolation of (image, boxes, mask): masks are resized by nearest neighbour only
_MODES = (InterpolationMode.BILINEAR, InterpolationMode.BILINEAR, InterpolationMode.NEAREST)


def zoom_sample(image: torch.Tensor, boxes: torch.Tensor | None, mask: torch.Tensor | None,
                scale: float, top: int, left: int, ignore_index: int = 255) -> tuple:
    """Zoom a sample by `scale` keeping its size; the window position is given, not drawn.

    Args:
        image: (3, H, W) uint8. boxes: (N, 4) xyxy canvas px, or None. mask: (H, W) int, or None.
        scale: s > 1 crops the (round(H/s), round(W/s)) window at (top, left) and resizes it back to
            (H, W); s < 1 shrinks the image to (round(H*s), round(W*s)) and puts its top-left corner
            at (top, left) of a canvas filled with 114 (masks with ignore_index); s == 1 is a no-op.
        top, left: offset in px, in [0, H - window height] and [0, W - window width].

    Returns:
        (image, boxes, mask) at (H, W); boxes are NOT clipped (see `drop_clipped_boxes`).
    """
    if scale == 1.0:
        return image, boxes, mask
    h, w = image.shape[-2:]
    wh, ww = _window(h, max(scale, 1.0 / scale)), _window(w, max(scale, 1.0 / scale))
    if not (0 <= top <= h - wh and 0 <= left <= w - ww):
        raise ValueError(f"zoom window {wh}x{ww} at ({top}, {left}) does not fit a {h}x{w} canvas")
    box_dtype = None if boxes is None else boxes.dtype
    tv_image, tv_boxes, tv_mask = _wrap(image, boxes, mask)
    if scale > 1.0:
        tv_image, tv_boxes, tv_mask = [None if t is None else F.resized_crop(
            t, top, left, wh, ww, [h, w], interpolation=mode, antialias=True)
            for t, mode in zip((tv_image, tv_boxes, tv_mask), _MODES)]
    else:
        padding = [left, top, w - ww - left, h - wh - top]
        tv_image, tv_boxes, tv_mask = [None if t is None else F.pad(
            F.resize(t, [wh, ww], interpolation=mode, antialias=True), padding, fill=fill)
            for t, mode, fill in zip((tv_image, tv_boxes, tv_mask), _MODES, (FILL, None, ignore_index))]
    return _unwrap(tv_image, tv_boxes, tv_mask, box_dtype)


def _window(side: int, scale: float) -> int:
    """Side of the crop window of a zoom-in by `scale` (also the shrunk side of a zoom-out by 1/scale)."""
    return min(side, max(1, round(side / scale)))


def shift_sample(image: torch.Tensor, boxes: torch.Tensor | None, mask: torch.Tensor | None,
                 dx: int, dy: int, ignore_index: int = 255) -> tuple:
    """Translate a sample by (dx, dy) px; uncovered pixels are 114 (masks: ignore_index).

    Args:
        image: (3, H, W) uint8. boxes: (N, 4) xyxy canvas px, or None. mask: (H, W) int, or None.
        dx, dy: translation in px (positive = right, down).

    Returns:
        (image, boxes, mask); boxes are NOT clipped (see `drop_clipped_boxes`).
    """
    if dx == 0 and dy == 0:
        return image, boxes, mask
    box_dtype = None if boxes is None else boxes.dtype
    tv_image, tv_boxes, tv_mask = _wrap(image, boxes, mask)
    move = dict(angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0],
                interpolation=InterpolationMode.NEAREST)
    tv_image = F.affine(tv_image, fill=FILL, **move)
    tv_boxes = None if tv_boxes is None else F.affine(tv_boxes, **move)
    tv_mask = None if tv_mask is None else F.affine(tv_mask, fill=ignore_index, **move)
    return _unwrap(tv_image, tv_boxes, tv_mask, box_dtype)


def jitter_colour(image: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Apply brightness, contrast then saturation factors (1 = unchanged) to a (3, H, W) uint8 image."""
    image = F.adjust_brightness(image, brightness)
    image = F.adjust_contrast(image, contrast)
    return F.adjust_saturation(image, saturation)


def drop_clipped_boxes(boxes: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> tuple:
    """Clip boxes to the canvas; drop those thinner than 2 px or keeping < 25% of their area.

    Args:
        boxes: (N, 4) xyxy canvas px, possibly reaching outside the canvas.
        labels: (N,) int64.
        size: (H, W) of the canvas.

    Returns:
        (boxes (M, 4), labels (M,)) of the kept boxes, clipped to the canvas.
    """
    tv_boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(size), clamping_mode=None)
    clipped = F.clamp_bounding_boxes(tv_boxes, clamping_mode="hard").as_subclass(torch.Tensor)
    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-12)
    keep = (width >= MIN_BOX_SIDE) & (height >= MIN_BOX_SIDE) & (width * height >= MIN_BOX_VISIBLE * area)
    return clipped[keep], labels[keep]


# ---------------------------------------------------------------- random augmentation per task

def _augment(image: torch.Tensor, boxes: torch.Tensor | None, mask: torch.Tensor | None, aug: Augment,
             ignore_index: int, generator: torch.Generator | None) -> tuple:
    """Draw and apply flip, zoom, shift and colour in that order; boxes come back unclipped."""
    h, w = image.shape[-2:]
    if aug.hflip > 0 and torch.rand(1, generator=generator).item() < aug.hflip:
        image, boxes, mask = flip_sample(image, boxes, mask)
    if aug.scale is not None:
        low, high = aug.scale
        s = low + (high - low) * torch.rand(1, generator=generator).item()
        if s != 1.0:
            inv = s if s > 1.0 else 1.0 / s
            wh, ww = _window(h, inv), _window(w, inv)
            top = torch.randint(0, h - wh + 1, (1,), generator=generator).item()
            left = torch.randint(0, w - ww + 1, (1,), generator=generator).item()
            image, boxes, mask = zoom_sample(image, boxes, mask, s, top, left, ignore_index)
    if aug.shift > 0:
        my, mx = round(aug.shift * h), round(aug.shift * w)
        dy = torch.randint(-my, my + 1, (1,), generator=generator).item()
        dx = torch.randint(-mx, mx + 1, (1,), generator=generator).item()
        image, boxes, mask = shift_sample(image, boxes, mask, dx, dy, ignore_index)
    if aug.colour > 0:
        factors = 1.0 + aug.colour * (2.0 * torch.rand(3, generator=generator) - 1.0)
        image = jitter_colour(image, *factors.tolist())
    return image, boxes, mask


def augment_cls(image: torch.Tensor, aug: Augment, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly augment a classification crop.

    Args:
        image: (3, S, S) uint8.
        aug: the task's Augment.
        generator: source of every random draw; None = torch's global RNG.

    Returns:
        (3, S, S) uint8.
    """
    return _augment(image, None, None, aug, 0, generator)[0]


def augment_det(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, aug: Augment,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly augment a detection canvas and its boxes.

    Args:
        image: (3, S, S) uint8.
        boxes: (N, 4) float xyxy in canvas px.
        labels: (N,) int64.
        aug: the task's Augment.
        generator: source of every random draw; None = torch's global RNG.

    Returns:
        (image (3, S, S) uint8, boxes (M, 4) xyxy clipped to the canvas, labels (M,)); boxes thinner
        than 2 px or keeping < 25% of their area after a zoom or shift are dropped with their labels.
    """
    image, moved, _ = _augment(image, boxes, None, aug, 0, generator)
    if aug.scale is None and aug.shift == 0:  # a flip keeps every box whole
        return image, moved, labels
    kept, labels = drop_clipped_boxes(moved, labels, tuple(image.shape[-2:]))
    return image, kept, labels


def augment_seg(image: torch.Tensor, mask: torch.Tensor, aug: Augment, ignore_index: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a segmentation canvas and its mask (nearest interpolation only).

    Args:
        image: (3, S, S) uint8.
        mask: (S, S) int64 class indices.
        aug: the task's Augment.
        ignore_index: mask value of pixels uncovered by a zoom-out or shift.
        generator: source of every random draw; None = torch's global RNG.

    Returns:
        (image (3, S, S) uint8, mask (S, S) int64).
    """
    image, _, mask = _augment(image, None, mask, aug, ignore_index, generator)
    return image, mask
