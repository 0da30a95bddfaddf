"""TTA specs: which views each task runs, parsed from text such as `hflip,scales=0.75:1:1.25`.

Grammar: items separated by commas; an item is `NAME[=ARGS][@TASK+TASK]`, NAME a registered view
(`list_views()`, workbench/tta/views.py) or a preset:
- `none`: no augmentation;
- `hflip`: every view also mirrored;
- `scales=A:B:C`: every view at each scale of the input ("train small, test large": use > 1);
- `fivecrop[=F]`, `tencrop[=F]`: classification only; five crops (ten: and their mirrors) of the
  image upsampled by 1/F (default 0.875);
- a view a user registers, `NAME[=A:B]`: every view also followed by the registered factory(A, B);
- presets: `flip` (= hflip), `ms` (= scales=0.75:1:1.25), `flip-ms`, `tencrop`.
An item without `@` applies to every task it is valid for; `hflip@det+seg` limits it. The views of a
task are the product of its scales, flips, crops and registered views. Mirroring traffic signs
changes their meaning ("keep left" / "keep right"), so on such data give hflip to det and seg only.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from workbench.errors import WorkbenchError
from workbench.records.tasks import TASKS
from workbench.tta.views import VIEWS, FiveCrop, HFlip, Scale, View, compose, list_views, register_view

SIZE_MULTIPLE = {"cls": 8, "det": 32, "seg": 32}  # classification pools globally: any multiple of 8 works
PRESETS = {"flip": "hflip", "ms": "scales=0.75:1:1.25", "flip-ms": "hflip,scales=0.75:1:1.25"}


@dataclass(frozen=True)
class TaskTTA:
    """The augmentation of one task: mirrored or not, its scales, its crops (cls), and the views
    registered by users that it adds, as (name, numbers) sorted by name."""

    hflip: bool = False
    scales: tuple[float, ...] = (1.0,)
    crops: int = 0  # 0, 5 or 10
    crop_fraction: float = 0.875
    added: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def add_view(self, name: str, args: str) -> TaskTTA:
        """This augmentation with every view also followed by the view registered as `name`, built
        from ARGS (numbers separated by ':'); a second item of the same name replaces the first."""
        numbers = _numbers(args) if args else ()
        build_view(name, numbers)  # a bad item fails here, not in the middle of a prediction
        return replace(self, added=tuple(sorted({**dict(self.added), name: numbers}.items())))

    def views(self, multiple: int = 32) -> list[View]:
        """The task's views, identity first; scaled sizes are rounded to multiples of `multiple`."""
        flips = (False, True) if self.hflip or self.crops == 10 else (False,)
        added = [(View(), build_view(name, numbers)) for name, numbers in self.added]
        out = []
        for scale, flip, *more in itertools.product(self.scales, flips, *added):
            parts = [Scale(scale, multiple)]
            if self.crops:
                parts.append(FiveCrop(self.crop_fraction))
            if flip:
                parts.append(HFlip())
            out.append(compose(parts + more))
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
        # "=" appears in no built-in part and names are unique letters: no two items share a part
        parts += [name + ("=" + "-".join(f"{x:g}" for x in numbers) if numbers else "")
                  for name, numbers in self.added]
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


def build_view(name: str, numbers: tuple[float, ...]) -> View:
    """The view registered as `name`, built from the numbers of its spec item."""
    try:
        view = VIEWS[name].factory(*numbers)
    except TypeError as e:
        raise WorkbenchError(f"view {name!r} does not take the arguments {list(numbers)} ({e})") from None
    if view.key == "id":  # compose() would drop it as the identity
        raise WorkbenchError(f"view {name!r} has the identity's key 'id'; give its class a `key`")
    return view


def _numbers(text: str, positive: str = "") -> tuple[float, ...]:
    """The numbers of `A:B:C`; `positive` names them if they must be > 0."""
    try:
        values = tuple(float(x) for x in text.split(":"))
    except ValueError:
        raise WorkbenchError("expected numbers separated by ':'") from None
    if positive and any(v <= 0 for v in values):
        raise WorkbenchError(f"{positive} must be positive")
    return values


def _crops(count: int):
    """How `fivecrop[=F]` (count 5) or `tencrop[=F]` (count 10) changes a task's augmentation."""
    def apply(task: TaskTTA, args: str) -> TaskTTA:
        return replace(task, crops=count, crop_fraction=_numbers(args, "crop fractions")[0] if args else 0.875)
    return apply


# The built-in items; their arguments set TaskTTA's own fields (which keep the cache keys of old runs).
register_view("none", apply=lambda task, args: task)(View)
register_view("hflip", apply=lambda task, args: replace(task, hflip=True))(HFlip)
register_view("scales", apply=lambda task, args: replace(task, scales=_numbers(args, "scales")))(Scale)
register_view("fivecrop", apply=_crops(5))(FiveCrop)
register_view("tencrop", apply=_crops(10))(FiveCrop)


def _expand_presets(text: str | None) -> list[str]:
    items = []
    for item in filter(None, (x.strip() for x in (text or "none").split(","))):
        body, at, targets = item.partition("@")
        items += [sub + at + targets for sub in PRESETS[body].split(",")] if body in PRESETS else [item]
    return items


def parse_tta(text: str | None) -> TTASpec:
    """Parse a TTA spec (see the module docstring). None or "" or "none" means no TTA.

    Every item name is looked up in the view registry; its entry says which tasks it is valid for
    and how it changes their augmentation. Raises WorkbenchError naming the faulty item.
    """
    per_task = {t: TaskTTA() for t in TASKS}
    for item in _expand_presets(text):
        body, _, targets = item.partition("@")
        tasks = tuple(targets.split("+")) if targets else TASKS
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise WorkbenchError(f"TTA item {item!r}: unknown task(s) {unknown}; tasks are {', '.join(TASKS)}")
        name, _, args = body.partition("=")
        if name not in VIEWS:
            raise WorkbenchError(f"unknown TTA item {item!r}; known: {', '.join(list_views())}, "
                                 f"presets {', '.join(PRESETS)}")
        entry = VIEWS[name]
        if not targets:
            tasks = tuple(t for t in TASKS if t in entry.tasks)
        elif any(t not in entry.tasks for t in tasks):
            raise WorkbenchError(f"TTA item {item!r}: {name} applies to {'+'.join(entry.tasks)} only")
        for t in tasks:
            try:
                per_task[t] = entry.apply(per_task[t], args)
            except WorkbenchError as e:
                raise WorkbenchError(f"TTA item {item!r}: {e}") from None
    return TTASpec(**per_task)


def flip_tta() -> TTASpec:
    """Preset: every task also mirrored."""
    return parse_tta("hflip")


def multiscale_tta(scales: tuple[float, ...] = (0.75, 1.0, 1.25)) -> TTASpec:
    """Preset: every task at several scales."""
    return parse_tta("scales=" + ":".join(f"{s:g}" for s in scales))


def ten_crop_tta() -> TTASpec:
    """Preset: ten-crop classification, nothing for det and seg."""
    return parse_tta("tencrop")
