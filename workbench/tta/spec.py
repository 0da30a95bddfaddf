"""TTA specs: which views each task runs, parsed from text such as `hflip,scales=0.75:1:1.25`.

Grammar: items separated by commas; an item is `NAME[=ARGS][@TASK+TASK]`:
- `none`: no augmentation;
- `hflip`: every view also mirrored;
- `scales=A:B:C`: every view at each scale of the input ("train small, test large": use > 1);
- `fivecrop[=F]`, `tencrop[=F]`: classification only; five crops (ten: and their mirrors) of the
  image upsampled by 1/F (default 0.875);
- presets: `flip` (= hflip), `ms` (= scales=0.75:1:1.25), `flip-ms`, `tencrop`.
An item without `@` applies to every task it is valid for; `hflip@det+seg` limits it. The views of a
task are the product of its scales, flips and crops. Mirroring traffic signs changes their meaning
("keep left" / "keep right"), so on such data give hflip to det and seg only.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.tta.views import FiveCrop, HFlip, Scale, View, compose

TASKS = ("cls", "det", "seg")
SIZE_MULTIPLE = {"cls": 8, "det": 32, "seg": 32}  # classification pools globally: any multiple of 8 works
PRESETS = {"flip": "hflip", "ms": "scales=0.75:1:1.25", "flip-ms": "hflip,scales=0.75:1:1.25"}


@dataclass(frozen=True)
class TaskTTA:
    """The augmentation of one task: mirrored or not, its scales, its crops (cls)."""

    hflip: bool = False
    scales: tuple[float, ...] = (1.0,)
    crops: int = 0  # 0, 5 or 10
    crop_fraction: float = 0.875

    def views(self, multiple: int = 32) -> list[View]:
        """The task's views, identity first; scaled sizes are rounded to multiples of `multiple`."""
        flips = (False, True) if self.hflip or self.crops == 10 else (False,)
        out = []
        for scale, flip in itertools.product(self.scales, flips):
            parts = [Scale(scale, multiple)]
            if self.crops:
                parts.append(FiveCrop(self.crop_fraction))
            if flip:
                parts.append(HFlip())
            out.append(compose(parts))
        return out

    @property
    def key(self) -> str:
        parts = []
        if self.hflip:
            parts.append("hflip")
        if self.scales != (1.0,):
            parts.append("s" + "-".join(f"{s:g}" for s in self.scales))
        if self.crops:
            parts.append(f"crop{self.crops}-{self.crop_fraction:g}")
        return "_".join(parts) or "none"


@dataclass(frozen=True)
class TTASpec:
    """Per-task TTA; `key` names the prediction cache entry."""

    cls: TaskTTA = TaskTTA()
    det: TaskTTA = TaskTTA()
    seg: TaskTTA = TaskTTA()

    def task(self, task: str) -> TaskTTA:
        return getattr(self, task)

    def views(self, task: str) -> list[View]:
        """The views of one task."""
        return self.task(task).views(SIZE_MULTIPLE[task])

    @property
    def key(self) -> str:
        keys = [self.task(t).key for t in TASKS]
        if len(set(keys)) == 1:
            return keys[0]
        return "__".join(f"{t}-{k}" for t, k in zip(TASKS, keys))


def _floats(text: str, item: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(":"))
    except ValueError:
        raise WorkbenchError(f"TTA item {item!r}: expected numbers separated by ':'") from None
    if not values or any(v <= 0 for v in values):
        raise WorkbenchError(f"TTA item {item!r}: scales must be positive")
    return values


def parse_tta(text: str | None) -> TTASpec:
    """Parse a TTA spec (see the module docstring). None or "" or "none" means no TTA."""
    items = []
    for item in filter(None, (x.strip() for x in (text or "none").split(","))):
        body, at, targets = item.partition("@")
        items += [sub + at + targets for sub in PRESETS[body].split(",")] if body in PRESETS else [item]
    fields: dict[str, dict] = {t: {} for t in TASKS}
    for item in items:
        body, _, targets = item.partition("@")
        tasks = tuple(targets.split("+")) if targets else TASKS
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise WorkbenchError(f"TTA item {item!r}: unknown task(s) {unknown}; tasks are cls, det, seg")
        name, _, args = body.partition("=")
        if name == "none":
            continue
        if name == "hflip":
            update = {"hflip": True}
        elif name == "scales":
            update = {"scales": _floats(args, item)}
        elif name in ("fivecrop", "tencrop"):
            update = {"crops": 5 if name == "fivecrop" else 10,
                      "crop_fraction": _floats(args, item)[0] if args else 0.875}
            if targets and tasks != ("cls",):
                raise WorkbenchError(f"TTA item {item!r}: crops apply to cls only")
            tasks = ("cls",)
        else:
            raise WorkbenchError(f"unknown TTA item {item!r}; known: none, hflip, scales=A:B, fivecrop, "
                                 f"tencrop, presets {', '.join(PRESETS)}")
        for t in tasks:
            fields[t].update(update)
    return TTASpec(**{t: TaskTTA(**f) for t, f in fields.items()})


def flip_tta() -> TTASpec:
    """Preset: every task also mirrored."""
    return parse_tta("hflip")


def multiscale_tta(scales: tuple[float, ...] = (0.75, 1.0, 1.25)) -> TTASpec:
    """Preset: every task at several scales."""
    return parse_tta("scales=" + ":".join(f"{s:g}" for s in scales))


def ten_crop_tta() -> TTASpec:
    """Preset: ten-crop classification, nothing for det and seg."""
    return parse_tta("tencrop")
