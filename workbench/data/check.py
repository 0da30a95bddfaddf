"""Validate a whole data set (the `dataset.yaml` schema of DESIGN.md) and collect every problem.

The schema is read by the readers of `workbench.data.spec`, given a collecting `Problems`: instead
of raising `DataError` at the first fault they record each and read on, so the check reports all it
finds, one line per problem: `"<file>: <problem>"`, the file given relative to the data set's
folder. What is the check's own: it decodes every image once (a cache, with a hash per image),
checks boxes against their images and masks against theirs and the classes, compares the truth and
the test image list with the test folders, counts images, classes and boxes per task and split, and
warns of images whose bytes appear in two splits of one task, or in `unlabeled/` and a val or test
split (leakage: a warning, since a data set handed out by organisers cannot be fixed by its users,
but they should know which scores it inflates).

The check reads the sealed `truth/` labels too, but only to validate them: nothing here trains,
selects or tunes on them.
"""
from __future__ import annotations

import hashlib
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from workbench.data.spec import (CocoImage, DatasetSpec, Problems, coco_annotations, coco_categories, coco_images,
                                 MAX_PIXELS, read_coco, read_label_csv, upright_size)
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
            size = upright_size(im)  # as read_image returns it: EXIF orientation applied
            if im.size[0] * im.size[1] > MAX_PIXELS:
                return _ImageInfo(sha256=sha, problem=f"image of {im.size[0]} x {im.size[1]} pixels exceeds the "
                                                      f"decoding limit of {MAX_PIXELS} pixels")
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


class _Checker:
    """Walks one data set; each `check_*` method reports problems and appends count rows."""

    def __init__(self, yaml_path: Path):
        self.yaml = yaml_path.resolve()
        self.root = self.yaml.parent
        self.found = Problems()  # the readers' problems and the check's own, in the order met
        self.spec: DatasetSpec | None = None
        self.warnings: list[str] = []
        self.counts: list[CountRow] = []
        self.images: dict[Path, _ImageInfo] = {}
        # sha256 -> {(task, split): [path, ...]}, for the leakage check
        self.hashes: dict[str, dict[tuple[str, str], list[Path]]] = defaultdict(lambda: defaultdict(list))
        self.det_categories: dict[int, str] | None = None
        self.det_categories_file: Path | None = None
        self.test_info: dict | None = None  # the det test image list, as read
        self.unlabeled_dir: Path | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def run(self) -> CheckReport:
        try:
            self.spec = DatasetSpec(self.yaml, problems=self.found)
        except DataError as e:  # the yaml cannot be read at all: nothing else can be checked
            self.problem(Path(e.path), e.problem)
        else:
            for task in self.spec.tasks:
                getattr(self, f"check_{task}")()
            self.check_unlabeled()
            self.check_truth()
            self.check_leakage()
        lines = [f"{self.rel(Path(e.path))}: {e.problem}" for e in self.found.errors]
        return CheckReport(self.counts, list(dict.fromkeys(lines)), str(self.root), list(dict.fromkeys(self.warnings)))

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(self, path: Path, text: str, warning: bool = False) -> None:
        if warning:
            self.warnings.append(f"{self.rel(path)}: {text}")
        else:
            self.found.fail(path, text)

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

    def test_images(self, task: str) -> list[Path] | None:
        """A task's test images (their problems were reported by `check_test`)."""
        return self.spec.test_images(task) if task in self.spec.tasks else None

    # -- classification --------------------------------------------------------------------------
    def check_cls(self) -> None:
        classes = self.spec.cls_classes  # read first: the splits are checked against it
        for split in ("train", "val"):
            labels = self.spec.cls_labels(split)
            if labels is None:
                continue
            n_images, present = 0, set()
            for path, label in labels:
                self.image(path, "cls", split)
                n_images += 1
                if classes is None or label in classes:
                    present.add(label)
            self.counts.append(CountRow("cls", split, n_images, len(present), labelled=n_images))
        self.check_test("cls")

    # -- detection ---------------------------------------------------------------------------------
    def check_det(self) -> None:
        for split in ("train", "val"):
            paths = self.spec.split_paths("det", split)
            if paths is None:
                continue
            folder = self.spec.split_folder("det", split, "images")
            found = self.check_coco(paths["annotations"], folder, "det", split)
            if found is not None:
                self.counts.append(found[1])
        self.check_test("det")
        if (path := self.spec.det_test_info) is not None:
            self.check_test_info(path)

    def check_test_info(self, path: Path) -> None:
        """The organisers' image list of the det test split: every test image once, true sizes, unique ids."""
        images = self.test_images("det")
        found = self.check_coco(path, images[0].parent if images else None, "", "", image_list=True)
        if found is None:
            return
        self.test_info = found[0]
        self.compare_names(path, _file_names(self.test_info), images, "det", missing_text="not listed")

    def check_coco(self, ann_path: Path, images_dir: Path | None, task: str, split: str,
                   image_list: bool = False) -> tuple[dict, CountRow] | None:
        """Check a COCO file (or an image list) and its images; returns it and the split's counts (None if unusable)."""
        coco = read_coco(ann_path, image_list, self.found)
        if coco is None:
            return None
        categories = (self.check_categories(ann_path, coco)
                      if coco["categories"] or not image_list else None)
        images: dict[object, CocoImage] = {}
        for im in coco_images(coco, ann_path, self.found, image_list):
            images.setdefault(im.id, im)
            if images_dir is None:
                continue
            path = images_dir / im.file_name
            if not path.is_file():  # name the json too: the file may be missing or the json wrong
                self.problem(path, f"image not found (listed in {self.rel(ann_path)})")
                continue
            info = self.image(path, task, split)
            if info.size is not None and im.size is not None and info.size != im.size:
                self.problem(path, f"real size {_size(info.size)} differs from {_size(im.size)} "
                                   f"in {self.rel(ann_path)}")
        boxed: set[object] = set()
        present: set[object] = set()
        for box in coco_annotations(coco, ann_path, images, categories, self.found):
            boxed.add(box.image.id)
            if categories is None or box.category_id in categories:
                present.add(box.category_id)
            if box.bbox is not None:
                self.check_box(ann_path, f"{box.label} of {box.image.file_name}", box.bbox, box.image.size)
        return coco, CountRow(task, split, len(coco["images"]), len(present), len(coco["annotations"]), len(boxed))

    def check_categories(self, ann_path: Path, coco: dict) -> set[int] | None:
        """A COCO file's categories; the first file read sets the data set's, the others must equal them."""
        # a category without a name was reported; the check does not count it
        found = {cid: c["name"] for cid, c in coco_categories(coco, ann_path, self.found).items()
                 if isinstance(c.get("name"), str)}
        if not found:
            return None
        if self.det_categories is None:
            self.det_categories, self.det_categories_file = found, ann_path
        elif found != self.det_categories:
            self.problem(ann_path, f"categories {sorted(found.items())} differ from "
                                   f"{sorted(self.det_categories.items())} in {self.rel(self.det_categories_file)}")
        return set(found)

    def check_box(self, ann_path: Path, label: str, bbox: list, size: tuple[int, int] | None) -> None:
        """A COCO box [x, y, w, h] in pixels (4 numbers): finite, positive size, inside the image."""
        if not all(math.isfinite(v) for v in bbox):
            self.problem(ann_path, f"{label}: bbox {bbox} is not finite")
            return
        x, y, bw, bh = bbox
        if bw <= 0 or bh <= 0:
            self.problem(ann_path, f"{label}: bbox {bbox} has no positive width and height")
        elif size is not None and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE
                                   or x + bw > size[0] + BOX_TOLERANCE or y + bh > size[1] + BOX_TOLERANCE):
            self.problem(ann_path, f"{label}: bbox {bbox} lies outside the {_size(size)} image")

    # -- segmentation ------------------------------------------------------------------------------
    def check_seg(self) -> None:
        classes, ignore = self.spec.seg_classes, self.spec.ignore_index
        for split in ("train", "val"):
            pairs = self.spec.seg_pairs(split)
            if pairs is None:
                continue
            n_images, present = self.check_masks(pairs, classes, ignore, "seg", split)
            self.counts.append(CountRow("seg", split, n_images, len(present), labelled=n_images))
        self.check_test("seg")

    def check_masks(self, pairs: Iterator[tuple[Path, Path | None]], classes: list[str] | None, ignore: int,
                    task: str, split: str) -> tuple[int, set[int]]:
        """Each mask single-channel, of its image's size, holding classes or `ignore` only.

        Returns the number of images and the class indices present in the masks.
        """
        present: set[int] = set()
        n_images = 0
        for p, mask_path in pairs:
            n_images += 1
            info = self.image(p, task, split)
            if mask_path is None:
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
            if classes is not None:
                k = len(classes)
                bad = [int(v) for v in values if v >= k and v != ignore]
                if bad:
                    word = "value" if len(bad) == 1 else "values"
                    self.problem(mask_path, f"mask {word} {', '.join(map(str, bad))} not a class "
                                            f"({k} classes, ignore {ignore})")
            present.update(int(v) for v in values if v != ignore)
        if classes is not None:
            present &= set(range(len(classes)))
        return n_images, present

    # -- test, unlabeled ---------------------------------------------------------------------------
    def check_test(self, task: str) -> None:
        """A test split is a folder of readable images, no labels."""
        images = self.spec.test_images(task)
        if images is None:
            return
        for p in images:
            self.image(p, task, "test")
        self.counts.append(CountRow(task, "test", len(images)))

    def check_unlabeled(self) -> None:
        if not self.spec.has_unlabeled or (folder := self.spec.unlabeled_folder()) is None:
            return
        self.unlabeled_dir = folder
        images = self.spec.unlabeled_images()
        for p in images:
            self.image(p)
        self.counts.append(CountRow("unlabeled", "-", len(images)))

    # -- sealed truth (validated only) -------------------------------------------------------------
    def check_truth(self) -> None:
        for task in self.spec.truth_tasks():
            getattr(self, f"check_truth_{task}")()

    def check_truth_cls(self) -> None:
        path = self.spec.truth_path("cls")
        rows = read_label_csv(path, self.spec.cls_classes if "cls" in self.spec.tasks else None, self.found)
        if rows is not None:
            self.compare_names(path, [image for _, image, _ in rows], self.test_images("cls"), "cls")

    def check_truth_det(self) -> None:
        path = self.spec.truth_path("det")
        images = self.test_images("det")
        # the truth images are the test images: inspected (cached) but not hashed as a new split
        found = self.check_coco(path, images[0].parent if images else None, "", "")
        if found is None:
            return
        truth = found[0]
        self.compare_names(path, _file_names(truth), images, "det")
        if self.test_info is None:
            return
        listed = {im.get("file_name"): im.get("id") for im in self.test_info["images"] if isinstance(im, dict)}
        differ = [im.get("file_name") for im in truth["images"]
                  if isinstance(im, dict) and im.get("file_name") in listed and listed[im.get("file_name")] != im.get("id")]
        if differ:
            self.problem(path, f"{len(differ)} image id(s) differ from {self.rel(self.spec.det_test_info)}: "
                               f"{', '.join(map(str, differ[:5]))}")

    def check_truth_seg(self) -> None:
        folder = self.spec.truth_seg()
        if folder is None:
            return
        images = self.test_images("seg")
        if images is None:
            self.problem(folder, "no seg test folder to compare the truth masks with")
            return
        classes = self.spec.seg_classes if "seg" in self.spec.tasks else None
        ignore = self.spec.ignore_index if "seg" in self.spec.tasks else 255
        self.check_masks(self.spec.pair_masks(images, folder), classes, ignore, "", "")

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


def _file_names(coco: dict) -> list:
    """The `file_name` of every image entry of a COCO file, as written (to compare with a test folder)."""
    return [im.get("file_name") for im in coco["images"] if isinstance(im, dict)]
