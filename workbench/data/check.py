"""Validate a whole data set (the `dataset.yaml` schema of DESIGN.md) and collect every problem.

Unlike the readers of `workbench.data.spec`, which raise `DataError` at the first fault, the check
walks everything and reports all it finds, one line per problem: `"<file>: <problem>"`, the file
given relative to the data set's folder. It also counts images, classes and boxes per task and
split, and warns of images whose bytes appear in two splits of one task, or in `unlabeled/` and
a val or test split (leakage: a warning, since a data set handed out by organisers cannot be fixed
by its users, but they should know which scores it inflates).

The check reads the sealed `truth/` labels too, but only to validate them: nothing here trains,
selects or tunes on them.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from workbench.data.spec import IMAGE_SUFFIXES, read_coco
from workbench.records.tasks import TASKS
from workbench.io import read_mask
from workbench.errors import DataError

SPLITS = ("train", "val", "test")
BOX_TOLERANCE = 1.0  # px a box may stick out of its image (rounding in converted annotations)


@dataclass(frozen=True)
class CountRow:
    """What one split of one task holds.

    `classes`: distinct classes among the split's labels; `boxes`: annotations (det only);
    `labelled`: images with a label (det: with at least one box). None where it does not apply.
    """

    task: str
    split: str
    images: int
    classes: int | None = None
    boxes: int | None = None
    labelled: int | None = None


@dataclass
class CheckReport:
    """Counts per task and split, and every problem found (`"<file>: <problem>"`)."""

    counts: list[CountRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    root: str = ""
    warnings: list[str] = field(default_factory=list)  # suspicious but usable, e.g. duplicate content

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self, task: str, split: str) -> CountRow:
        """Return the count row of a task and split; KeyError when there is none."""
        for r in self.counts:
            if (r.task, r.split) == (task, split):
                return r
        raise KeyError(f"no count row for {task}/{split}")

    def format_table(self) -> str:
        """Return the counts as an aligned text table followed by the problems."""
        header = ("task", "split", "images", "classes", "boxes", "labelled")
        rows = [tuple("-" if v is None else str(v) for v in
                      (r.task, r.split, r.images, r.classes, r.boxes, r.labelled)) for r in self.counts]
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        lines = [f"data set: {self.root}"] if self.root else []
        for cells in (header, *rows):
            # text columns left-aligned, numbers right-aligned
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += self.warnings
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += self.problems
        else:
            lines.append("no problems")
        return "\n".join(lines)


@dataclass(frozen=True)
class _ImageInfo:
    """What inspecting one image file found: its size and hash, or why it cannot be read."""

    size: tuple[int, int] | None = None  # (width, height)
    sha256: str | None = None
    problem: str | None = None


def _inspect_image(path: Path) -> _ImageInfo:
    """Read an image file once: hash its bytes, verify its structure and decode it.

    `verify()` alone misses a truncated JPEG, so the file is decoded as well; a JPEG in draft mode
    (DCT scaling to 1/8 size), which still reads its whole entropy-coded stream.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _ImageInfo(problem="image not found")
    except OSError as e:
        return _ImageInfo(problem=f"cannot read file ({type(e).__name__}: {_one_line(e)})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as e:  # PIL raises several types for truncated or corrupt files
        return _ImageInfo(sha256=sha, problem=f"cannot read image ({type(e).__name__}: {_one_line(e)})")
    return _ImageInfo(size=size, sha256=sha)


def check_dataset(yaml_path: str | Path) -> CheckReport:
    """Validate a data set and collect every problem instead of stopping at the first.

    Args:
        yaml_path: the data set's `dataset.yaml`.
    Returns:
        CheckReport: count rows (task, split, images, classes, boxes, labelled) for cls, det and
        seg train/val/test and the unlabeled folder, and the problems as `"<file>: <problem>"`
        lines (paths relative to the yaml's folder). An empty `problems` list means the data set
        is sound.
    """
    return _Checker(Path(yaml_path)).run()


def _one_line(e: object) -> str:
    return " ".join(str(e).split())


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}x{wh[1]}"


def _key(v: object) -> object:
    """A dict key for a JSON value (a list or object in an id field becomes its text)."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class _Checker:
    """Walks one data set; each `check_*` method appends problems and count rows."""

    def __init__(self, yaml_path: Path):
        self.yaml = yaml_path.resolve()
        self.root = self.yaml.parent
        self.raw: dict = {}
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self._seen: set[str] = set()
        self.counts: list[CountRow] = []
        self.images: dict[Path, _ImageInfo] = {}
        # sha256 -> {(task, split): [path, ...]}, for the leakage check
        self.hashes: dict[str, dict[tuple[str, str], list[Path]]] = defaultdict(lambda: defaultdict(list))
        self.cls_classes: list[str] | None = None
        self.seg_classes: list[str] | None = None
        self.ignore_index = 255
        self.det_categories: dict[int, str] | None = None
        self.det_categories_file: Path | None = None
        self.unlabeled_dir: Path | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def run(self) -> CheckReport:
        if self.check_yaml():
            for task in TASKS:
                if isinstance(self.raw.get(task), dict):
                    getattr(self, f"check_{task}")()
            self.check_unlabeled()
            self.check_truth()
            self.check_leakage()
        return CheckReport(self.counts, self.problems, str(self.root), self.warnings)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(self, path: Path, text: str, warning: bool = False) -> None:
        line = f"{self.rel(path)}: {text}"
        if line not in self._seen:
            self._seen.add(line)
            (self.warnings if warning else self.problems).append(line)

    def resolve(self, rel: object) -> Path:
        return Path(os.path.normpath(self.root / str(rel)))

    def image(self, path: Path, task: str | None = None, split: str | None = None) -> _ImageInfo:
        """Inspect an image once (cached), report it if unreadable, remember its hash per split."""
        info = self.images.get(path)
        if info is None:
            info = self.images[path] = _inspect_image(path)
            if info.problem:
                self.problem(path, info.problem)
        if task and info.sha256:
            where = self.hashes[info.sha256][(task, split)]
            if path not in where:
                where.append(path)
        return info

    def folder(self, task: str, split: str, rel: object) -> Path | None:
        """Resolve a folder named in the yaml; report and return None when it is missing."""
        path = self.resolve(rel)
        if not path.is_dir():
            self.problem(path, f"folder not found ({task} {split} in {self.yaml.name})")
            return None
        return path

    def entry(self, task: str, split: str, keys: tuple[str, ...] = ()) -> object:
        """A split's entry in the yaml (a path, or a mapping with `keys`); None when malformed."""
        section = self.raw[task]
        if split not in section:
            self.problem(self.yaml, f"{task} has no '{split}' split")
            return None
        value = section[split]
        if keys:
            if not isinstance(value, dict) or any(k not in value for k in keys):
                self.problem(self.yaml, f"{task} {split} must be a mapping with keys {', '.join(keys)}")
                return None
        elif not isinstance(value, str):
            self.problem(self.yaml, f"{task} {split} must be a path")
            return None
        return value

    def read_class_file(self, task: str) -> list[str] | None:
        """Read a task's classes.txt, reporting every repeated name; None when unusable."""
        rel = self.raw[task].get("classes")
        if rel is None:
            self.problem(self.yaml, f"{task} has no 'classes' file")
            return None
        path = self.resolve(rel)
        try:
            text = path.read_text()
        except FileNotFoundError:
            self.problem(path, "classes file not found")
            return None
        except (OSError, UnicodeDecodeError) as e:
            self.problem(path, f"cannot read classes file ({type(e).__name__}: {_one_line(e)})")
            return None
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            self.problem(path, "classes file is empty")
            return None
        for name, n in Counter(names).items():
            if n > 1:
                self.problem(path, f"class '{name}' listed {n} times")
        return names

    # -- the yaml ------------------------------------------------------------------------------
    def check_yaml(self) -> bool:
        """Parse the yaml and check its sections; False when nothing else can be checked."""
        if not self.yaml.is_file():
            self.problem(self.yaml, "dataset file not found")
            return False
        try:
            self.raw = yaml.safe_load(self.yaml.read_text()) or {}
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            self.problem(self.yaml, f"invalid YAML ({_one_line(e)})")
            return False
        if not isinstance(self.raw, dict):
            self.problem(self.yaml, "dataset file must be a mapping")
            return False
        for task in TASKS:
            if task not in self.raw:
                self.problem(self.yaml, f"missing task section '{task}'")
            elif not isinstance(self.raw[task], dict):
                self.problem(self.yaml, f"section '{task}' must be a mapping")
        return True

    # -- classification --------------------------------------------------------------------------
    def check_cls(self) -> None:
        self.cls_classes = self.read_class_file("cls")
        for split in ("train", "val"):
            rel = self.entry("cls", split)
            if rel is None:
                continue
            path = self.resolve(rel)
            if path.suffix.lower() == ".csv":
                self.check_cls_csv(split, path)
            elif (folder := self.folder("cls", split, rel)) is not None:
                self.check_cls_folder(split, folder)
        self.check_test("cls")

    def check_cls_folder(self, split: str, folder: Path) -> None:
        """ImageFolder split: class folders equal to classes.txt, none empty, images readable."""
        known = set(self.cls_classes or ())
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
        for p in _list_images(folder):
            self.problem(p, "image outside a class folder")
        n_images, present = 0, set()
        for sub in subs:
            if self.cls_classes is not None and sub.name not in known:
                self.problem(sub, f"class folder not in {self.rel(self.resolve(self.raw['cls']['classes']))}")
            images = _list_images(sub)
            if not images:
                self.problem(sub, "class folder has no images")
            else:
                present.add(sub.name)
            for p in images:
                self.image(p, "cls", split)
            n_images += len(images)
        if self.cls_classes is not None:
            names = {s.name for s in subs}
            for name in self.cls_classes:
                if name not in names:
                    self.problem(folder, f"no folder for class '{name}'")
        if not n_images:
            self.problem(folder, "no images found")
        if self.cls_classes is not None:
            present &= known
        self.counts.append(CountRow("cls", split, n_images, len(present), labelled=n_images))

    def check_cls_csv(self, split: str, path: Path) -> None:
        """CSV split (`image,label`, images relative to the CSV's folder)."""
        rows = self.read_csv(path)
        if rows is None:
            return
        known = set(self.cls_classes or ())
        present = set()
        for line, image, label in rows:
            if self.cls_classes is not None and label not in known:
                self.problem(path, f"line {line}: unknown class '{label}' for image {image}")
            else:
                present.add(label)
            self.image(path.parent / image, "cls", split)
        for image, n in Counter(r[1] for r in rows).items():
            if n > 1:
                self.problem(path, f"image {image} listed {n} times")
        if self.cls_classes is not None:
            for name in self.cls_classes:
                if name not in present:
                    self.problem(path, f"class '{name}' has no images")
        self.counts.append(CountRow("cls", split, len(rows), len(present), labelled=len(rows)))

    def read_csv(self, path: Path) -> list[tuple[int, str, str]] | None:
        """Rows (line number, image, label) of an `image,label` CSV; None when unreadable."""
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not {"image", "label"} <= set(reader.fieldnames):
                    self.problem(path, "CSV needs the header 'image,label'")
                    return None
                rows = [(i + 2, r["image"] or "", r["label"] or "") for i, r in enumerate(reader)]
        except FileNotFoundError:
            self.problem(path, "CSV file not found")
            return None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            self.problem(path, f"cannot read CSV ({type(e).__name__}: {_one_line(e)})")
            return None
        if not rows:
            self.problem(path, "CSV has no rows")
        return rows

    # -- detection ---------------------------------------------------------------------------------
    def check_det(self) -> None:
        for split in ("train", "val"):
            entry = self.entry("det", split, ("images", "annotations"))
            if entry is None:
                continue
            folder = self.folder("det", split, entry["images"])
            ann_path = self.resolve(entry["annotations"])
            counts = self.check_coco(ann_path, folder, "det", split)
            if counts is not None:
                self.counts.append(counts)
        self.check_test("det")
        if self.raw["det"].get("test_info") is not None:
            self.check_test_info(self.resolve(self.raw["det"]["test_info"]))

    def check_test_info(self, path: Path) -> None:
        """The organisers' image list of the det test split: every test image once, true sizes, unique ids."""
        images = self.test_images("det")
        self.check_coco(path, images[0].parent if images else None, "", "", image_list=True)
        try:
            listed = read_coco(path, image_list=True)["images"]
        except DataError:
            return  # already reported
        self.compare_names(path, [im.get("file_name") for im in listed if isinstance(im, dict)], images, "det",
                           missing_text="not listed")

    def check_coco(self, ann_path: Path, images_dir: Path | None, task: str, split: str,
                   image_list: bool = False) -> CountRow | None:
        """Check a COCO file (or an image list) and its images; returns the split's counts (None if unusable)."""
        try:
            coco = read_coco(ann_path, image_list=image_list)
        except DataError as e:
            self.problem(Path(e.path), e.problem)
            return None
        categories = (self.check_categories(ann_path, coco["categories"])
                      if coco["categories"] or not image_list else None)

        images: dict[object, tuple[str, int, int]] = {}  # id -> (file_name, width, height)
        id_count = Counter(_key(im.get("id")) if isinstance(im, dict) else None for im in coco["images"])
        name_count = Counter(_key(im.get("file_name")) if isinstance(im, dict) else None for im in coco["images"])
        for i, im in enumerate(coco["images"]):
            if not isinstance(im, dict):
                self.problem(ann_path, f"images[{i}] is not an object")
                continue
            iid, name, w, h = _key(im.get("id")), im.get("file_name"), im.get("width"), im.get("height")
            if iid is None or not isinstance(name, str) or not name:
                self.problem(ann_path, f"images[{i}] lacks an id or a file_name")
                continue
            if not isinstance(iid, int) or isinstance(iid, bool):
                self.problem(ann_path, f"image {name}: id {iid} is not an integer")
            if id_count[iid] > 1:
                self.problem(ann_path, f"image id {iid} used by {id_count[iid]} images")
            if name_count[name] > 1:
                self.problem(ann_path, f"image {name} listed {name_count[name]} times")
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                self.problem(ann_path, f"image {name}: width/height must be positive integers, got {w}/{h}")
                w = h = None
            images.setdefault(iid, (name, w, h))
            if images_dir is None:
                continue
            path = images_dir / name
            if not path.is_file():  # name the json too: the file may be missing or the json wrong
                self.problem(path, f"image not found (listed in {self.rel(ann_path)})")
                continue
            info = self.image(path, task, split)
            if info.size is not None and w is not None and info.size != (w, h):
                self.problem(path, f"real size {_size(info.size)} differs from {_size((w, h))} "
                                   f"in {self.rel(ann_path)}")

        boxed: set[object] = set()
        present: set[object] = set()
        ann_ids = Counter(_key(a.get("id")) if isinstance(a, dict) else None for a in coco["annotations"])
        for i, a in enumerate(coco["annotations"]):
            if not isinstance(a, dict):
                self.problem(ann_path, f"annotations[{i}] is not an object")
                continue
            aid = _key(a.get("id"))
            label = f"annotation {aid}" if aid is not None else f"annotations[{i}]"
            if aid is None:
                self.problem(ann_path, f"annotations[{i}] has no id")
            elif not isinstance(aid, int) or isinstance(aid, bool):
                self.problem(ann_path, f"{label}: id is not an integer")
            elif ann_ids[aid] > 1:
                self.problem(ann_path, f"annotation id {aid} used {ann_ids[aid]} times")
            iid = _key(a.get("image_id"))
            if iid not in images:
                self.problem(ann_path, f"{label}: unknown image_id {iid}")
                continue
            name, w, h = images[iid]
            boxed.add(iid)
            cat = _key(a.get("category_id"))
            if categories is not None and cat not in categories:
                self.problem(ann_path, f"{label} of {name}: unknown category_id {cat}")
            else:
                present.add(cat)
            self.check_box(ann_path, f"{label} of {name}", a.get("bbox"), w, h)
        return CountRow(task, split, len(coco["images"]), len(present), len(coco["annotations"]), len(boxed))

    def check_categories(self, ann_path: Path, cats: list) -> set[int] | None:
        """Check a COCO category list; the first file read sets the data set's categories."""
        found: dict[int, str] = {}
        for i, c in enumerate(cats):
            cid = c.get("id") if isinstance(c, dict) else None
            if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(c.get("name"), str):
                self.problem(ann_path, f"categories[{i}] needs an integer id and a name")
            elif cid in found:
                self.problem(ann_path, f"category id {cid} listed twice")
            else:
                found[cid] = c["name"]
        if not found:
            self.problem(ann_path, "no categories")
            return None
        if self.det_categories is None:
            self.det_categories, self.det_categories_file = found, ann_path
        elif found != self.det_categories:
            self.problem(ann_path, f"categories {sorted(found.items())} differ from "
                                   f"{sorted(self.det_categories.items())} in {self.rel(self.det_categories_file)}")
        return set(found)

    def check_box(self, ann_path: Path, label: str, bbox: object, w: int | None, h: int | None) -> None:
        """A COCO box [x, y, w, h] in pixels: 4 finite numbers, positive size, inside the image."""
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            self.problem(ann_path, f"{label}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
            return
        if not all(math.isfinite(v) for v in bbox):
            self.problem(ann_path, f"{label}: bbox {bbox} is not finite")
            return
        x, y, bw, bh = bbox
        if bw <= 0 or bh <= 0:
            self.problem(ann_path, f"{label}: bbox {bbox} has no positive width and height")
        elif w is not None and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE
                                or x + bw > w + BOX_TOLERANCE or y + bh > h + BOX_TOLERANCE):
            self.problem(ann_path, f"{label}: bbox {bbox} lies outside the {w}x{h} image")

    # -- segmentation ------------------------------------------------------------------------------
    def check_seg(self) -> None:
        self.seg_classes = self.read_class_file("seg")
        ignore = self.raw["seg"].get("ignore_index", 255)
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
            self.problem(self.yaml, f"seg ignore_index must be an integer in 0..255, got {ignore!r}")
        else:
            self.ignore_index = ignore
        for split in ("train", "val"):
            entry = self.entry("seg", split, ("images", "masks"))
            if entry is None:
                continue
            images_dir = self.folder("seg", split, entry["images"])
            masks_dir = self.folder("seg", split, entry["masks"])
            if images_dir is None:
                continue
            images = _list_images(images_dir)
            present = self.check_masks(images, masks_dir, "seg", split)
            if not images:
                self.problem(images_dir, "no images found")
            self.counts.append(CountRow("seg", split, len(images), len(present), labelled=len(images)))
        self.check_test("seg")

    def check_masks(self, images: list[Path], masks_dir: Path | None, task: str, split: str) -> set[int]:
        """Each image needs `<masks_dir>/<stem>.png`, single-channel, same size, valid values.

        Returns the class indices present in the masks.
        """
        present: set[int] = set()
        stems = set()
        for p in images:
            stems.add(p.stem)
            info = self.image(p, task, split)
            if masks_dir is None:
                continue
            mask_path = masks_dir / f"{p.stem}.png"
            if not mask_path.is_file():
                self.problem(mask_path, f"mask missing for image {self.rel(p)}")
                continue
            try:
                mask = read_mask(mask_path)
            except DataError as e:
                self.problem(Path(e.path), _one_line(e.problem))
                continue
            msize = (mask.shape[1], mask.shape[0])
            if info.size is not None and msize != info.size:
                self.problem(mask_path, f"mask size {_size(msize)} differs from its image's {_size(info.size)} "
                                        f"({self.rel(p)})")
            values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
            if self.seg_classes is not None:
                k = len(self.seg_classes)
                bad = [int(v) for v in values if v >= k and v != self.ignore_index]
                if bad:
                    word = "value" if len(bad) == 1 else "values"
                    self.problem(mask_path, f"mask {word} {', '.join(map(str, bad))} not a class "
                                            f"({k} classes, ignore {self.ignore_index})")
            present.update(int(v) for v in values if v != self.ignore_index)
        if masks_dir is not None:
            for m in sorted(masks_dir.glob("*.png")):
                if m.stem not in stems:
                    self.problem(m, "mask has no image")
        if self.seg_classes is not None:
            present &= set(range(len(self.seg_classes)))
        return present

    # -- test, unlabeled ---------------------------------------------------------------------------
    def check_test(self, task: str) -> None:
        """A test split is a folder of readable images, no labels."""
        rel = self.entry(task, "test")
        if rel is None or (folder := self.folder(task, "test", rel)) is None:
            return
        images = _list_images(folder)
        if not images:
            self.problem(folder, "no images found")
        for p in images:
            self.image(p, task, "test")
        self.counts.append(CountRow(task, "test", len(images)))

    def check_unlabeled(self) -> None:
        if "unlabeled" not in self.raw:
            return
        if (folder := self.folder("unlabeled", "-", self.raw["unlabeled"])) is None:
            return
        self.unlabeled_dir = folder
        images = _list_images(folder)
        if not images:
            self.problem(folder, "no images found")
        for p in images:
            self.image(p)
        self.counts.append(CountRow("unlabeled", "-", len(images)))

    # -- sealed truth (validated only) -------------------------------------------------------------
    def test_images(self, task: str) -> list[Path] | None:
        rel = (self.raw.get(task) or {}).get("test")
        if not isinstance(rel, str) or not (folder := self.resolve(rel)).is_dir():
            return None
        return _list_images(folder)

    def check_truth(self) -> None:
        truth = self.raw.get("truth")
        if truth is None:
            return
        if not isinstance(truth, dict):
            self.problem(self.yaml, "section 'truth' must be a mapping")
            return
        for task in truth:
            if task not in TASKS:
                self.problem(self.yaml, f"truth has an unknown task '{task}'")
        if "cls" in truth:
            self.check_truth_cls(self.resolve(truth["cls"]))
        if "det" in truth:
            self.check_truth_det(self.resolve(truth["det"]))
        if "seg" in truth:
            self.check_truth_seg(self.resolve(truth["seg"]))

    def check_truth_cls(self, path: Path) -> None:
        rows = self.read_csv(path)
        if rows is None:
            return
        known = set(self.cls_classes or ())
        for line, image, label in rows:
            if self.cls_classes is not None and label not in known:
                self.problem(path, f"line {line}: unknown class '{label}' for image {image}")
        self.compare_names(path, [r[1] for r in rows], self.test_images("cls"), "cls")

    def check_truth_det(self, path: Path) -> None:
        images = self.test_images("det")
        folder = images[0].parent if images else None
        # the truth images are the test images: inspected (cached) but not hashed as a new split
        self.check_coco(path, folder, "", "")
        try:
            coco = read_coco(path)
        except DataError:
            return  # already reported
        names = [im.get("file_name") for im in coco["images"] if isinstance(im, dict)]
        self.compare_names(path, names, images, "det")
        rel = self.raw["det"].get("test_info") if isinstance(self.raw.get("det"), dict) else None
        if rel is None:
            return
        try:
            info = read_coco(self.resolve(rel), image_list=True)["images"]
        except DataError:
            return  # reported by check_test_info
        listed = {im.get("file_name"): im.get("id") for im in info if isinstance(im, dict)}
        differ = [im.get("file_name") for im in coco["images"]
                  if isinstance(im, dict) and im.get("file_name") in listed and listed[im.get("file_name")] != im.get("id")]
        if differ:
            self.problem(path, f"{len(differ)} image id(s) differ from {self.rel(self.resolve(rel))}: "
                               f"{', '.join(map(str, differ[:5]))}")

    def check_truth_seg(self, folder: Path) -> None:
        if not folder.is_dir():
            self.problem(folder, "truth folder not found")
            return
        images = self.test_images("seg")
        if images is None:
            self.problem(folder, "no seg test folder to compare the truth masks with")
            return
        self.check_masks(images, folder, "", "")

    def compare_names(self, path: Path, names: list, images: list[Path] | None, task: str,
                      missing_text: str = "without truth") -> None:
        """The truth (or an image list) must name every test image of the task exactly once, and nothing else."""
        if images is None:
            self.problem(path, f"no {task} test folder to compare the truth with")
            return
        for name, n in Counter(names).items():
            if n > 1:
                self.problem(path, f"image {name} listed {n} times")
        expected = {p.name for p in images}
        listed = set(names)
        extra, missing = sorted(listed - expected, key=str), sorted(expected - listed)
        if extra:
            self.problem(path, f"{len(extra)} image(s) not in the {task} test folder: {', '.join(map(str, extra[:5]))}"
                               + (" ..." if len(extra) > 5 else ""))
        if missing:
            self.problem(path, f"{len(missing)} {task} test image(s) {missing_text}: "
                               f"{', '.join(missing[:5])}"
                               + (" ..." if len(missing) > 5 else ""))

    # -- leakage -------------------------------------------------------------------------------
    def check_leakage(self) -> None:
        """The same file content in two splits of one task (train/val/test) is leakage.

        So is an unlabeled image identical to a val or test image: distilling on it would carry
        the evaluation images into training.
        """
        unlabeled = [(p, i) for p, i in self.images.items()
                     if self.unlabeled_dir is not None and p.parent == self.unlabeled_dir and i.sha256]
        for path, info in unlabeled:
            for (task, split), paths in self.hashes.get(info.sha256, {}).items():
                if split in ("val", "test"):
                    self.problem(path, f"unlabeled image has the same content as {task} {split} "
                                       f"image {self.rel(paths[0])} (leakage)", warning=True)
        for places in self.hashes.values():
            by_task: dict[str, list[tuple[str, list[Path]]]] = defaultdict(list)
            for (task, split), paths in places.items():
                by_task[task].append((split, paths))
            for task, splits in by_task.items():
                if len(splits) < 2:
                    continue
                splits.sort(key=lambda s: SPLITS.index(s[0]) if s[0] in SPLITS else len(SPLITS))
                (first_split, first), rest = splits[0], splits[1:]
                for split, paths in rest:
                    for p in paths:
                        if p in first:  # one file named by two splits: the split files are wrong
                            self.problem(p, f"listed in both {task} {first_split} and {task} {split} (leakage)")
                        else:  # two files with one content: report, but the data set stays usable
                            self.problem(p, f"{task} {split} image has the same content as {task} {first_split} "
                                            f"image {self.rel(first[0])} (leakage)", warning=True)
