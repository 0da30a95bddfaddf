"""Test-time augmentation views: reversible transforms of a batch of network inputs.

A view augments a batch of canvases (B, 3, S, S) and undoes itself on what the model returns:
class scores (unchanged by geometry), boxes (x1, y1, x2, y2 in input pixels) and segmentation
logits (B, K, h, w). A composed view undoes its parts in reverse order. Views are registered by name
(`register_view`): the TTA spec parser (workbench/tta/spec.py) knows no other names, so a view a
user registers is usable in a spec like the built-in ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from workbench.records.tasks import TASKS


@dataclass(frozen=True)
class ViewEntry:
    """What the spec item `NAME[=ARGS]` of a registered view does (see workbench/tta/spec.py)."""

    factory: Callable[..., "View"]  # the view from ARGS' numbers: `gain=1.5` -> factory(1.5)
    tasks: tuple[str, ...]  # the tasks it is valid for; an item without `@` applies to these
    apply: Callable[[Any, str], Any]  # (TaskTTA, ARGS text) -> the TaskTTA with the item applied


VIEWS: dict[str, ViewEntry] = {}


def register_view(name: str, tasks: Sequence[str] | None = None, apply: Callable[[Any, str], Any] | None = None):
    """Register a view factory (usually a View subclass) under `name`, the item name TTA specs use.

    Args:
        name: lowercase letters (it is also a segment of prediction cache keys).
        tasks: the tasks the view is valid for; default the factory's `tasks` (View's: cls, det, seg).
        apply: (TaskTTA, ARGS text) -> TaskTTA, how the item changes a task's augmentation. Default
            `TaskTTA.add_view`: every view of the task is kept and also followed by factory(*ARGS),
            ARGS being numbers separated by ':' (as `hflip` adds the mirror of every view).
    Returns:
        A decorator that registers the factory and returns it unchanged.
    """
    def wrap(factory):
        if not re.fullmatch("[a-z]+", name):
            raise ValueError(f"TTA view name {name!r}: use lowercase letters only (it names cache entries)")
        if name in VIEWS:
            raise ValueError(f"a TTA view named {name!r} is already registered")
        VIEWS[name] = ViewEntry(factory, tuple(tasks or getattr(factory, "tasks", View.tasks)),
                                apply or (lambda task, args: task.add_view(name, args)))
        return factory
    return wrap


def list_views() -> list[str]:
    """The registered view names, sorted."""
    return sorted(VIEWS)


class View:
    """Identity view; subclasses override the parts they change.

    `tasks` are the tasks the view is valid for (crops cannot be undone on boxes or masks).
    """

    key = "id"
    tasks: tuple[str, ...] = TASKS

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the augmented batch for an input batch of (H, W)."""
        return size

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B', 3, H', W'); crops may multiply the batch (B' = B x crops)."""
        return images

    def undo_cls(self, scores: torch.Tensor, batch: int) -> torch.Tensor:
        """(B', K) -> (B, K): class scores are not moved by geometry; crops are averaged."""
        return scores

    def undo_boxes(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, 4) xyxy in augmented pixels -> xyxy in pixels of the (H, W) = `size` input."""
        return boxes

    def undo_seg(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, h', w') -> (B, K, H, W) at the input's `size` (upsampled bilinearly)."""
        return _resize(logits, size)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class HFlip(View):
    """Mirror left-right."""

    @property
    def key(self) -> str:
        return "hflip"

    def augment(self, images):
        return images.flip(-1)

    def undo_boxes(self, boxes, size):
        w = size[1]
        out = boxes.clone()
        out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
        return out

    def undo_seg(self, logits, size):
        return _resize(logits.flip(-1), size)


@dataclass(frozen=True)
class Scale(View):
    """Resize the input by `factor`, rounded to a multiple of `multiple` (32, the backbone's
    stride, keeps det and seg maps aligned with the input; classification pools globally and
    takes multiples of 8, so that scales of a 64 px crop are not rounded away)."""

    factor: float = 1.0
    multiple: int = 32

    @property
    def key(self) -> str:
        return f"s{self.factor:g}"

    def output_size(self, size):
        m = self.multiple
        return tuple(max(m, round(s * self.factor / m) * m) for s in size)

    def augment(self, images):
        return _resize(images.float(), self.output_size(tuple(images.shape[-2:])))

    def undo_boxes(self, boxes, size):
        # the factor actually applied per axis (rounding to 32 makes it differ from `factor`)
        h, w = self.output_size(size)
        return boxes * torch.tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h], device=boxes.device)


@dataclass(frozen=True)
class FiveCrop(View):
    """Classification only: upsample by 1 / `fraction`, take the four corner crops and the centre
    crop at the input size, and average their class scores (torchvision's FiveCrop, batched)."""

    fraction: float = 0.875
    tasks: tuple[str, ...] = ("cls",)

    @property
    def key(self) -> str:
        return f"crop5-{self.fraction:g}"

    def augment(self, images):
        h, w = images.shape[-2:]
        big = _resize(images.float(), (round(h / self.fraction), round(w / self.fraction)))
        bh, bw = big.shape[-2:]
        tops = [0, 0, bh - h, bh - h, (bh - h) // 2]
        lefts = [0, bw - w, 0, bw - w, (bw - w) // 2]
        return torch.cat([big[..., t:t + h, l:l + w] for t, l in zip(tops, lefts)])

    def undo_cls(self, scores, batch):
        return scores.view(5, batch, -1).mean(0)


@dataclass(frozen=True)
class Compose(View):
    """Apply views in order; undo them in reverse order."""

    views: tuple[View, ...] = ()

    @property
    def key(self) -> str:
        return "+".join(v.key for v in self.views) or "id"

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if all(t in v.tasks for v in self.views))

    def output_size(self, size):
        for v in self.views:
            size = v.output_size(size)
        return size

    def augment(self, images):
        for v in self.views:
            images = v.augment(images)
        return images

    def _sizes(self, size):
        sizes = [size]
        for v in self.views[:-1]:
            sizes.append(v.output_size(sizes[-1]))
        return sizes  # the input size of each view

    def undo_cls(self, scores, batch):
        batches = [batch]
        for v in self.views[:-1]:  # crops multiply the batch: track it per step
            batches.append(batches[-1] * (5 if isinstance(v, FiveCrop) else 1))
        for v, b in zip(reversed(self.views), reversed(batches)):
            scores = v.undo_cls(scores, b)
        return scores

    def undo_boxes(self, boxes, size):
        for v, s in zip(reversed(self.views), reversed(self._sizes(size))):
            boxes = v.undo_boxes(boxes, s)
        return boxes

    def undo_seg(self, logits, size):
        for v, s in zip(reversed(self.views), reversed(self._sizes(size))):
            logits = v.undo_seg(logits, s)
        return logits


def compose(views: Sequence[View]) -> View:
    """One view from several (identity for none, the view itself for one)."""
    views = tuple(v for v in views if v.key != "id" and not (isinstance(v, Scale) and v.factor == 1))
    if not views:
        return View()
    return views[0] if len(views) == 1 else Compose(views)
