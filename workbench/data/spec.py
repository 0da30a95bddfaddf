"""Read a `dataset.yaml` (schema in DESIGN.md) into typed sample lists.

The schema lives here once, in the readers. By default they are strict: a missing file, an
unreadable annotation or a class that does not exist raises `DataError` naming the file. Given a
`Problems` collector (as `mtwb data check` passes one) they record every problem instead and read on
past it. Only `workbench.score` may call the `truth_*` methods: the sealed test labels are read by
scoring alone (and validated by the check).
"""
from __future__ import annotations

import csv
import fnmatch
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import yaml
from PIL import Image, ImageOps

from workbench.errors import DataError
from workbench.records.ground_truth import GroundTruth
from workbench.records.tasks import TASKS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")
# the keys of a labelled split's mapping; a cls split and every test split are one path
SPLIT_KEYS = {"det": ("images", "annotations"), "seg": ("images", "masks")}


class Problems:
    """Where the readers report what is wrong with a data set: raised at the first, or collected.

    The readers report two kinds of problem:
      - `fail`: the entry cannot be read as the schema says (an unknown class, a missing mask).
        Strict: `DataError`. Collecting: recorded, and the reader skips what it cannot read.
      - `note`: the entry can be read but is suspect (an empty class folder, a repeated id).
        Strict: ignored, as the readers always have. Collecting: recorded.

    Args:
        collect: record problems in `errors` (True) or raise at the first failure (False).
    """

    def __init__(self, collect: bool = True):
        self.collect = collect
        self.errors: list[DataError] = []  # what was found, in the order the readers met it

    def fail(self, path: str | Path, problem: str) -> None:
        """Report a problem that stops a strict reader."""
        if not self.collect:
            raise DataError(path, problem)
        self.errors.append(DataError(path, problem))

    def note(self, path: str | Path, problem: str) -> None:
        """Report a problem a strict reader reads past."""
        if self.collect:
            self.errors.append(DataError(path, problem))


STRICT = Problems(collect=False)  # the readers' default: raise at the first failure (it stores nothing)


def _one_line(e: object) -> str:
    return " ".join(str(e).split())


def _key(v: object) -> object:
    """A dict key for a JSON value (a list or object in an id field becomes its text)."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_like(*values: object) -> bool:
    """True when int() reads every value."""
    try:
        for v in values:
            int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return False
    return True


@dataclass(frozen=True)
class ClsSample:
    """One classification image; `label` is the class index (-1 when unlabelled)."""

    path: Path
    label: int = -1

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class DetSample:
    """One detection image with its boxes.

    `boxes` is (N, 4) float32 [x, y, w, h] in pixels; `labels` (N,) int64 COCO category ids.
    `width`, `height` are the image's size in pixels as the annotation file states it.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    image_id: int = -1

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class SegSample:
    """One segmentation image and its mask path (None when unlabelled)."""

    path: Path
    mask: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name


def list_images(folder: Path) -> list[Path]:
    """Return the image files of a folder, sorted by name; DataError when the folder is missing."""
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's decompression-bomb limit (89.5 M pixels); larger is refused
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter: width and height swap


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as it is shown: after its EXIF orientation, as timm, detectron2
    and ultralytics load it (a phone photo stored sideways with orientation 6 is taller than wide)."""
    w, h = im.size
    return (h, w) if im.getexif().get(0x0112) in _TRANSPOSED else (w, h)


def _check_pixels(path: Path, im: Image.Image) -> None:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataError(path, f"image of {w} x {h} pixels exceeds the decoding limit of {MAX_PIXELS} pixels "
                              "(a decompression bomb, or a file that needs resizing first)")


def read_image(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB, upright (EXIF orientation applied); 16-bit images are scaled to 8 bits
    (65535 -> 255), not clipped. Every image the workbench decodes (train, val, test, unlabelled,
    reports) goes through here.

    Raises:
        DataError: naming the file when it is missing, corrupt or larger than MAX_PIXELS.
    """
    try:
        with Image.open(path) as im:
            _check_pixels(path, im)
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):  # I;16 (16-bit PNG, TIFF) or I (32-bit): scale, as convert() clips
                a = np.asarray(im, np.float64)
                a = a / 257.0 if im.mode.startswith("I;16") or a.max() > 255 else a
                im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
            return im.convert("RGB")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "image not found") from None
    except Exception as e:  # PIL raises several types for truncated or corrupt files (and bombs past 2x)
        raise DataError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as `read_image` returns it (upright), without decoding it.

    Raises:
        DataError: naming the file when it is missing, not an image or larger than MAX_PIXELS.
    """
    try:
        with Image.open(path) as im:
            _check_pixels(path, im)
            return upright_size(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "image not found") from None
    except Exception as e:
        raise DataError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def read_classes(path: Path, problems: Problems = STRICT) -> list[str] | None:
    """Read a classes.txt (one name a line, index order).

    Returns:
        The names (a repeated name is reported, the list kept); None when the file cannot be used
        (collecting only: a strict reader raises).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        problems.fail(path, "classes file not found")
        return None
    except (OSError, UnicodeDecodeError) as e:
        problems.fail(path, f"cannot read classes file ({type(e).__name__}: {_one_line(e)})")
        return None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        problems.fail(path, "classes file is empty")
        return None
    for name, n in Counter(names).items():
        if n > 1:
            problems.fail(path, f"class '{name}' listed {n} times")
    return names


def read_label_csv(path: Path, classes: list[str] | None,
                   problems: Problems = STRICT) -> Iterator[tuple[int, str, str]] | None:
    """Read an `image,label` CSV (a cls split, the cls truth); labels are class names.

    The file is read at once; a row naming an unknown class is reported as the rows are iterated,
    so a caller's findings about a row come right after the row's own.

    Args:
        classes: the class names, or None to accept any label (classes.txt unusable).
    Returns:
        An iterator of (line number, image, label), every row; None when the file cannot be read
        (collecting only).
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"image", "label"} <= set(reader.fieldnames):
                problems.fail(path, "CSV needs the header 'image,label'")
                return None
            rows = [(i + 2, r["image"] or "", r["label"] or "") for i, r in enumerate(reader)]
    except FileNotFoundError:
        problems.fail(path, "CSV file not found")
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.fail(path, f"cannot read CSV ({type(e).__name__}: {_one_line(e)})")
        return None
    if not rows:
        problems.note(path, "CSV has no rows")
    return _check_labels(path, rows, classes, problems)


def _check_labels(path: Path, rows: list[tuple[int, str, str]], classes: list[str] | None,
                  problems: Problems) -> Iterator[tuple[int, str, str]]:
    known = set(classes or ())
    for line, image, label in rows:
        if classes is not None and label not in known:
            problems.fail(path, f"line {line}: unknown class '{label}' for image {image}")
        yield line, image, label


def read_coco(path: Path, image_list: bool = False, problems: Problems = STRICT) -> dict | None:
    """Read a COCO json and check its top-level structure.

    Args:
        path: the file.
        image_list: the file is an image list (organisers' `test_info`): only `images` is required;
            `annotations` is then [] and `categories` [] when absent.
    Returns:
        The parsed file; None when it cannot be used (collecting only).
    """
    if not path.is_file():
        problems.fail(path, "image list not found" if image_list else "annotation file not found")
        return None
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.fail(path, f"invalid JSON ({e})")
        return None
    if not isinstance(coco, dict):
        problems.fail(path, "COCO file is not an object")
        return None
    if image_list:
        coco.setdefault("annotations", [])
        coco.setdefault("categories", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problems.fail(path, f"COCO file has no '{key}' list")
            return None
    return coco


@dataclass(frozen=True)
class CocoImage:
    """One entry of a COCO file's `images` that has an id and a file name (values as written)."""

    id: object  # an integer in a sound file; other JSON values are reported by `coco_images`
    file_name: str
    width: object
    height: object

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) in pixels; None unless both are positive integers."""
        w, h = self.width, self.height
        return (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None


@dataclass(frozen=True)
class CocoBox:
    """One annotation of a COCO file whose image is known (values as written)."""

    label: str  # how messages name it: "annotation <id>", or "annotations[<index>]" without an id
    image: CocoImage
    category_id: object
    bbox: list | None  # [x, y, w, h] in pixels; None when it is not 4 numbers (reported)


def coco_categories(coco: dict, path: Path, problems: Problems = STRICT) -> dict[int, dict]:
    """The categories of a COCO file with an integer id: id -> its entry (the first of a repeated id).

    A category without a name is reported but kept: the readers use the id alone.
    """
    found: dict[int, dict] = {}
    for i, c in enumerate(coco["categories"]):
        cid = c.get("id") if isinstance(c, dict) else None
        if not _is_int(cid):
            problems.fail(path, f"categories[{i}] needs an integer id and a name")
            continue
        if not isinstance(c.get("name"), str):
            problems.note(path, f"categories[{i}] needs an integer id and a name")
        if cid in found:
            problems.note(path, f"category id {cid} listed twice")
        else:
            found[cid] = c
    if not found:
        problems.note(path, "no categories")
    return found


def coco_images(coco: dict, path: Path, problems: Problems = STRICT, image_list: bool = False) -> Iterator[CocoImage]:
    """The entries of a COCO file's `images` that have an id and a file name, in the file's order.

    An image list's ids are what a submission writes, so they must be unique integers; an
    annotation file's ids only join annotations to images, so odd ones are noted and read on.
    An entry's problems are reported before it is yielded.
    """
    entries = coco["images"]
    ids = Counter(_key(im.get("id")) if isinstance(im, dict) else None for im in entries)
    names = Counter(_key(im.get("file_name")) if isinstance(im, dict) else None for im in entries)
    odd = problems.fail if image_list else problems.note
    for i, im in enumerate(entries):
        if not isinstance(im, dict):
            problems.fail(path, f"images[{i}] is not an object")
            continue
        iid, name = _key(im.get("id")), im.get("file_name")
        if iid is None or not isinstance(name, str) or not name:
            problems.fail(path, f"images[{i}] lacks an id or a file_name")
            continue
        if not _is_int(iid):
            odd(path, f"image {name}: id {iid} is not an integer")
        if ids[iid] > 1:
            odd(path, f"image id {iid} used by {ids[iid]} images")
        if names[name] > 1:
            odd(path, f"image {name} listed {names[name]} times")
        image = CocoImage(iid, name, im.get("width"), im.get("height"))
        if image.size is None:  # an annotation file's sizes make the samples: int() must read them
            (problems.note if image_list or _int_like(image.width, image.height) else problems.fail)(
                path, f"image {name}: width/height must be positive integers, got {image.width}/{image.height}")
        yield image


def coco_annotations(coco: dict, path: Path, images: Mapping[object, CocoImage], category_ids: set | None,
                     problems: Problems = STRICT) -> Iterator[CocoBox]:
    """The annotations of a COCO file whose image is known, in the file's order.

    Args:
        images: image id -> image (`coco_images` of the same file).
        category_ids: the data set's category ids; None: not checked (no usable categories).
    An annotation's problems are reported before it is yielded; one with an unknown category or
    a malformed box is still yielded when collecting (its box then None).
    """
    ids = Counter(_key(a.get("id")) if isinstance(a, dict) else None for a in coco["annotations"])
    for i, a in enumerate(coco["annotations"]):
        if not isinstance(a, dict):
            problems.fail(path, f"annotations[{i}] is not an object")
            continue
        aid = _key(a.get("id"))
        label = f"annotation {aid}" if aid is not None else f"annotations[{i}]"
        if aid is None:
            problems.note(path, f"annotations[{i}] has no id")
        elif not _is_int(aid):
            problems.note(path, f"{label}: id is not an integer")
        elif ids[aid] > 1:
            problems.note(path, f"annotation id {aid} used {ids[aid]} times")
        iid = _key(a.get("image_id"))
        if iid not in images:
            problems.fail(path, f"{label}: unknown image_id {iid}")
            continue
        image = images[iid]
        cat = _key(a.get("category_id"))
        if category_ids is not None and cat not in category_ids:
            problems.fail(path, f"{label} of {image.file_name}: unknown category_id {cat}")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.fail(path, f"{label} of {image.file_name}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
            bbox = None
        yield CocoBox(label, image, cat, bbox)


def read_image_ids(path: Path) -> dict[str, int]:
    """Read a COCO image list (`det.test_info`, `--image-ids`): file name -> integer image id.

    Raises:
        DataError: missing or malformed file, an entry without an integer id or a file name, a
            repeated id or file name (the message names the file and the entry).
    """
    path = Path(path)
    return {im.file_name: im.id for im in coco_images(read_coco(path, image_list=True), path, image_list=True)}


class DatasetSpec:
    """A data set described by a `dataset.yaml`; paths in it are relative to that file.

    Args:
        path: the dataset.yaml.
        route: which images of the `unlabeled` folder serve which task, as the split "unlabeled"
            reads them: task -> file-name glob patterns joined by "|" (e.g. {"cls": "crop_*",
            "seg": "scene_*"}); a task not named gets none; None: every image for every task.
        unlabeled: a folder of unlabelled images to use instead of the data set's `unlabeled`.
        problems: a collecting `Problems` (`mtwb data check`): the readers record every problem in it
            and read on; a method typed `... | None` then returns None for what it cannot read.
            The sample builders (`*_samples`, `ground_truth`, `det_categories`, `truth_cls`,
            `truth_det`) expect the default, strict readers.
    Raises:
        DataError: the file is missing, not YAML or not a mapping (even when collecting: nothing
            else can be read), or (strict) lacks a task section.
    """

    def __init__(self, path: str | Path, route: dict[str, str] | None = None, unlabeled: str | Path | None = None,
                 problems: Problems = STRICT):
        self.route = dict(route) if route is not None else None
        self.unlabeled_dir = Path(unlabeled).resolve() if unlabeled else None
        self.problems = problems
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise DataError(self.path, "dataset file not found")
        try:
            self.raw = yaml.safe_load(self.path.read_text()) or {}
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            raise DataError(self.path, f"invalid YAML ({_one_line(e)})") from None
        if not isinstance(self.raw, dict):
            raise DataError(self.path, "dataset file must be a mapping")
        for task in TASKS:
            if task not in self.raw:
                problems.fail(self.path, f"missing task section '{task}'")
            elif not isinstance(self.raw[task], dict):
                problems.note(self.path, f"section '{task}' must be a mapping")
        self.tasks = tuple(t for t in TASKS if isinstance(self.raw.get(t), dict))  # the readable sections
        self.root = self.path.parent
        self.name = str(self.raw.get("name", self.root.name))

    def _entry(self, task: str, split: str) -> str | dict | None:
        """A split's entry: a path, or (det, seg labelled splits) a mapping with SPLIT_KEYS."""
        section = self.raw[task]
        if not isinstance(section, dict) or split not in section:
            self.problems.fail(self.path, f"{task} has no '{split}' split")
            return None
        value = section[split]
        keys = SPLIT_KEYS.get(task, ()) if split != "test" else ()
        if keys:
            if not isinstance(value, dict) or any(k not in value for k in keys):
                self.problems.fail(self.path, f"{task} {split} must be a mapping with keys {', '.join(keys)}")
                return None
        elif not isinstance(value, str):
            self.problems.fail(self.path, f"{task} {split} must be a path")
            return None
        return value

    def has_split(self, task: str, split: str) -> bool:
        """True when dataset.yaml names `split` for `task`."""
        return isinstance(self.raw[task], dict) and split in self.raw[task]

    def split_paths(self, task: str, split: str) -> Path | dict[str, Path] | None:
        """Where a split lives, resolved: a folder or file (cls, test), or {"images", "annotations"|"masks"}.

        Raises:
            DataError: the task has no such split, or its entry has the wrong shape (None when collecting).
        """
        entry = self._entry(task, split)
        if entry is None:
            return None
        if isinstance(entry, dict):
            return {k: self._resolve(v) for k, v in entry.items()}
        return self._resolve(entry)

    def split_folder(self, task: str, split: str, key: str | None = None) -> Path | None:
        """A folder of a split (`key`: "images" or "masks" of a det or seg mapping), resolved.

        Raises:
            DataError: the entry is malformed or the folder is missing (None when collecting).
        """
        entry = self._entry(task, split)
        if entry is None:
            return None
        return self._folder(entry[key] if key else entry, task, split)

    def _folder(self, rel: object, task: str, split: str) -> Path | None:
        path = self._resolve(rel)
        if not path.is_dir():
            self.problems.fail(path, f"folder not found ({task} {split} in {self.path.name})")
            return None
        return path

    def _images_in(self, folder: Path) -> list[Path]:
        images = list_images(folder)
        if not images:
            self.problems.note(folder, "no images found")
        return images

    def classes_file(self, task: str) -> Path | None:
        """The classes.txt of cls or seg (None when the yaml names none and problems are collected)."""
        rel = self.raw[task].get("classes") if isinstance(self.raw[task], dict) else None
        if rel is None:
            self.problems.fail(self.path, f"{task} has no 'classes' file")
            return None
        return self._resolve(rel)

    def _resolve(self, rel: object) -> Path:
        return (self.root / str(rel)).resolve()

    def _rel(self, path: Path) -> str:
        """A path as messages give it: relative to the data set's folder when inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # -- classes ---------------------------------------------------------------------------
    @cached_property
    def cls_classes(self) -> list[str] | None:
        """Classification class names, index order (None: unusable, collecting only)."""
        path = self.classes_file("cls")
        return None if path is None else read_classes(path, self.problems)

    @property
    def allow_empty_classes(self) -> bool:
        """`cls: allow_empty_classes: true`: a class without training images is not a problem (a
        pseudo-label set, `mtwb distill`, where the teacher chose no image of some class)."""
        section = self.raw.get("cls")
        return isinstance(section, dict) and section.get("allow_empty_classes") is True

    @cached_property
    def seg_classes(self) -> list[str] | None:
        """Segmentation class names, index order (None: unusable, collecting only)."""
        path = self.classes_file("seg")
        return None if path is None else read_classes(path, self.problems)

    @cached_property
    def ignore_index(self) -> int:
        """The seg mask value of unlabelled pixels (`seg: ignore_index:`, default 255)."""
        value = self.raw["seg"].get("ignore_index", 255)
        if _is_int(value) and 0 <= value <= 255:
            return value
        # strict readers go on with int() of a value it reads, as they always have; the check with the default
        (self.problems.note if _int_like(value) else self.problems.fail)(
            self.path, f"seg ignore_index must be an integer in 0..255, got {value!r}")
        return 255 if self.problems.collect else int(value)

    @cached_property
    def det_categories(self) -> list[dict]:
        """COCO categories of the detection train split, sorted by id."""
        path = self.split_paths("det", "train")["annotations"]
        return sorted(coco_categories(read_coco(path), path).values(), key=lambda c: c["id"])

    @property
    def det_category_ids(self) -> list[int]:
        return [int(c["id"]) for c in self.det_categories]

    def class_lists(self, tasks=TASKS) -> dict[str, list]:
        """What a model's outputs mean, per task of `tasks` the data set has: cls and seg class names in
        index order, det [category id, name] pairs in id order. Recorded in run.json at training; a run
        is refused on a data set whose lists differ (`workbench.runs.check_classes`)."""
        lists = {"cls": lambda: list(self.cls_classes or []),
                 "det": lambda: [[int(c["id"]), str(c.get("name", ""))] for c in self.det_categories],
                 "seg": lambda: list(self.seg_classes or [])}
        known = [t for t in TASKS if t in tasks and t in self.tasks and (t != "det" or self.has_split("det", "train"))]
        return {t: lists[t]() for t in known}  # det's categories live in its train annotations

    # -- splits ----------------------------------------------------------------------------
    def cls_labels(self, split: str) -> Iterator[tuple[Path, str]] | None:
        """(image, class name) of every image of a labelled cls split, in the files' order.

        The split is an ImageFolder (`<split>/<class>/<image>`) or a CSV `image,label` (images
        relative to the CSV's folder). Problems of an image are reported before it is yielded;
        those of the whole split (a class with no images) once the iterator is exhausted.

        Returns:
            The iterator; None when the split cannot be read (collecting only).
        """
        rel = self._entry("cls", split)
        if rel is None:
            return None
        path = self._resolve(rel)
        if path.suffix.lower() == ".csv":
            rows = read_label_csv(path, self.cls_classes, self.problems)
            return None if rows is None else self._csv_labels(path, rows)
        folder = self._folder(rel, "cls", split)
        return None if folder is None else self._folder_labels(folder)

    def _folder_labels(self, folder: Path) -> Iterator[tuple[Path, str]]:
        classes = self.cls_classes
        for p in list_images(folder):
            self.problems.note(p, "image outside a class folder")
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
        n_images = 0
        for sub in subs:
            if classes is not None and sub.name not in classes:
                self.problems.fail(sub, f"class folder not in {self._rel(self.classes_file('cls'))}")
            images = list_images(sub)
            if not images and not self.allow_empty_classes:
                self.problems.note(sub, "class folder has no images")
            n_images += len(images)
            for p in images:
                yield p, sub.name
        if classes is not None and not self.allow_empty_classes:
            names = {s.name for s in subs}
            for name in classes:
                if name not in names:
                    self.problems.note(folder, f"no folder for class '{name}'")
        if not n_images:
            self.problems.fail(folder, "no images found")

    def _csv_labels(self, path: Path, rows: Iterator[tuple[int, str, str]]) -> Iterator[tuple[Path, str]]:
        seen = []
        for _, image, label in rows:
            seen.append((image, label))
            yield path.parent / image, label
        for image, n in Counter(image for image, _ in seen).items():
            if n > 1:
                self.problems.note(path, f"image {image} listed {n} times")
        if self.cls_classes is not None and not self.allow_empty_classes:
            present = {label for _, label in seen}
            for name in self.cls_classes:
                if name not in present:
                    self.problems.note(path, f"class '{name}' has no images")

    def cls_samples(self, split: str) -> list[ClsSample]:
        """Classification samples of a split: ImageFolder, a CSV `image,label`, or (test) a folder."""
        if split == "unlabeled":
            return [ClsSample(p) for p in self.unlabeled_images("cls")]
        if split == "test":
            return [ClsSample(p) for p in self.test_images("cls")]
        labels = self.cls_labels(split)
        index = {name: i for i, name in enumerate(self.cls_classes)}
        return [ClsSample(p, index[name]) for p, name in labels]

    def det_samples(self, split: str) -> list[DetSample]:
        """Detection samples of a split, boxes in COCO [x, y, w, h] pixels (test: no boxes)."""
        if split in ("test", "unlabeled"):
            samples = []
            for p in self.unlabeled_images("det") if split == "unlabeled" else self.test_images("det"):
                w, h = image_size(p)
                samples.append(DetSample(p, w, h))
            return samples
        paths = self.split_paths("det", split)
        ann_path = paths["annotations"]
        return coco_to_samples(read_coco(ann_path), paths["images"], ann_path, set(self.det_category_ids))

    def seg_pairs(self, split: str) -> Iterator[tuple[Path, Path | None]] | None:
        """(image, mask) of every image of a labelled seg split; see `pair_masks`.

        Returns:
            The iterator; None when the images folder cannot be read (collecting only).
        """
        images_dir = self.split_folder("seg", split, "images")
        masks_dir = self.split_folder("seg", split, "masks")
        return None if images_dir is None else self._seg_pairs(images_dir, masks_dir)

    def _seg_pairs(self, images_dir: Path, masks_dir: Path | None) -> Iterator[tuple[Path, Path | None]]:
        images = list_images(images_dir)
        yield from self.pair_masks(images, masks_dir)
        if not images:
            self.problems.note(images_dir, "no images found")

    def pair_masks(self, images: list[Path], masks_dir: Path | None) -> Iterator[tuple[Path, Path | None]]:
        """(image, mask) for each image: its mask is `<masks_dir>/<stem>.png`, and every mask has an image.

        Args:
            masks_dir: the masks' folder; None: unknown (every mask None, nothing checked).
        Yields:
            Each image with its mask, None when missing: that is reported right AFTER the image
            is yielded, so a caller's own finding about the image comes first.
        """
        stems = set()
        for p in images:
            stems.add(p.stem)
            mask = None if masks_dir is None else masks_dir / f"{p.stem}.png"
            found = mask is not None and mask.is_file()
            yield p, (mask if found else None)
            if mask is not None and not found:
                self.problems.fail(mask, f"mask missing for image {self._rel(p)}")
        if masks_dir is not None:
            for m in sorted(masks_dir.glob("*.png")):
                if m.stem not in stems:
                    self.problems.note(m, "mask has no image")

    def seg_samples(self, split: str) -> list[SegSample]:
        """Segmentation samples of a split; every image needs a mask of the same stem (not test)."""
        if split == "unlabeled":
            return [SegSample(p) for p in self.unlabeled_images("seg")]
        if split == "test":
            return [SegSample(p) for p in self.test_images("seg")]
        return [SegSample(p, mask) for p, mask in self.seg_pairs(split)]

    def test_images(self, task: str) -> list[Path] | None:
        """A task's test images, sorted by name (None when the folder cannot be read, collecting only)."""
        folder = self.split_folder(task, "test")
        return None if folder is None else self._images_in(folder)

    def test_names(self, task: str) -> list[str]:
        """File names of a task's test images, sorted."""
        return [p.name for p in self.test_images(task)]

    @property
    def det_test_info(self) -> Path | None:
        """The organisers' image list of the detection test split (`det: test_info:`), or None."""
        rel = self.raw["det"].get("test_info") if isinstance(self.raw["det"], dict) else None
        return None if rel is None else self._resolve(rel)

    def det_test_ids(self, image_list: str | Path | None = None) -> dict[str, int] | None:
        """Detection test image name -> the organisers' integer id, or None when no list is known.

        Args:
            image_list: a COCO image list to use instead of `det_test_info` (`--image-ids`).

        Raises:
            DataError: the list is malformed, or a test image is missing from it.
        """
        path = Path(image_list) if image_list else self.det_test_info
        if path is None:
            return None
        ids = read_image_ids(path)
        missing = [n for n in self.test_names("det") if n not in ids]
        if missing:
            raise DataError(path, f"{len(missing)} detection test image(s) not listed: {', '.join(missing[:5])}")
        return ids

    @property
    def has_unlabeled(self) -> bool:
        """True when there is a folder of unlabelled images (the data set's, or one given)."""
        return self.unlabeled_dir is not None or "unlabeled" in self.raw

    def unlabeled_folder(self) -> Path | None:
        """The folder of unlabelled images (None when it is missing, collecting only)."""
        if self.unlabeled_dir is not None:
            if not self.unlabeled_dir.is_dir():
                self.problems.fail(self.unlabeled_dir, "folder not found")
                return None
            return self.unlabeled_dir
        if "unlabeled" not in self.raw:
            raise DataError(self.path, "the data set has no 'unlabeled' folder")
        return self._folder(self.raw["unlabeled"], "unlabeled", "-")  # "-": its split in the check's table

    def unlabeled_images(self, task: str | None = None) -> list[Path]:
        """Images of the `unlabeled` folder (those routed to `task` when given; see `route`)."""
        folder = self.unlabeled_folder()
        images = [] if folder is None else self._images_in(folder)
        if task is None or self.route is None:
            return images
        patterns = [p for p in self.route.get(task, "").split("|") if p]
        return [p for p in images if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]

    def ground_truth(self, split: str, tasks=TASKS) -> GroundTruth:
        """Labels of a labelled split (train or val), as scoring reads them.

        Raises:
            DataError: asked for the test split, whose labels only the score stage reads.
        """
        if split == "test":
            raise DataError(self.path, "the test split has no labels here; only `mtwb score` reads the sealed truth")
        gt = GroundTruth(seg_num_classes=len(self.seg_classes), ignore_index=self.ignore_index)
        if "cls" in tasks:
            gt.cls = {s.name: s.label for s in self.cls_samples(split)}
        if "det" in tasks:
            gt.det = samples_to_coco(self.det_samples(split), self.det_categories)
        if "seg" in tasks:
            gt.seg = {s.name: s.mask for s in self.seg_samples(split)}
        return gt

    # -- sealed truth (scoring only) ---------------------------------------------------------
    def truth_tasks(self) -> tuple[str, ...]:
        """The tasks whose sealed test labels the data set holds (`truth:`), in TASKS order."""
        truth = self.raw.get("truth")
        if truth is None:
            return ()
        if not isinstance(truth, dict):
            self.problems.fail(self.path, "section 'truth' must be a mapping")
            return ()
        for task in truth:
            if task not in TASKS:
                self.problems.note(self.path, f"truth has an unknown task '{task}'")
        return tuple(t for t in TASKS if t in truth)

    def truth_path(self, task: str) -> Path:
        """The sealed truth file (cls, det) or folder (seg) of a task, resolved."""
        if task not in self.truth_tasks():
            raise DataError(self.path, f"no truth for {task}: the data set has no sealed test labels")
        return self._resolve(self.raw["truth"][task])

    def truth_cls(self) -> dict[str, int]:
        """Test image name -> class index, from the sealed truth CSV. Scoring only."""
        index = {name: i for i, name in enumerate(self.cls_classes)}
        return {image: index[label] for _, image, label in read_label_csv(self.truth_path("cls"), self.cls_classes)}

    def truth_det(self) -> dict:
        """COCO ground truth of the test images. Scoring only."""
        return read_coco(self.truth_path("det"))

    def truth_seg(self) -> Path | None:
        """Folder of the test masks (None when missing, collecting only). Scoring only."""
        folder = self.truth_path("seg")
        if not folder.is_dir():
            self.problems.fail(folder, "truth folder not found")
            return None
        return folder


def coco_to_samples(coco: dict, images_dir: Path, ann_path: Path, category_ids: set[int]) -> list[DetSample]:
    """Turn a COCO dict into DetSamples, checking ids, categories and boxes (strict).

    Args:
        coco: the parsed COCO json.
        images_dir: the folder the `file_name`s are relative to.
        ann_path: the json's path, for messages.
        category_ids: the data set's category ids.
    Returns:
        One DetSample per COCO image, in the file's order; boxes [x, y, w, h] pixels.
    """
    entries = list(coco_images(coco, ann_path))
    images: dict[object, CocoImage] = {}
    for im in entries:
        images.setdefault(im.id, im)
    by_image: dict[object, list[CocoBox]] = defaultdict(list)
    for box in coco_annotations(coco, ann_path, images, category_ids):
        by_image[box.image.id].append(box)
    samples = []
    for im in entries:
        boxes = by_image.get(im.id, [])
        samples.append(DetSample(images_dir / im.file_name, int(im.width), int(im.height),
                                 np.array([b.bbox for b in boxes], np.float32).reshape(-1, 4),
                                 np.array([b.category_id for b in boxes], np.int64), int(im.id)))
    return samples


def samples_to_coco(samples: list[DetSample], categories: list[dict]) -> dict:
    """COCO ground-truth dict of DetSamples (ids renumbered from 1)."""
    images, annotations = [], []
    for i, s in enumerate(samples, start=1):
        images.append({"id": i, "file_name": s.name, "width": s.width, "height": s.height})
        for box, lab in zip(s.boxes.tolist(), s.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(lab),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": categories}
