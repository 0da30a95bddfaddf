"""Read a `dataset.yaml` (schema in DESIGN.md) into typed sample lists.

Readers are strict: a missing file, an unreadable annotation or a class that does not exist raises
`DataError` naming the file. Only `workbench.score` may call the `truth_*` methods: the sealed test
labels are read by scoring alone.
"""
from __future__ import annotations

import csv
import fnmatch
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from workbench.errors import DataError
from workbench.records.ground_truth import GroundTruth
from workbench.records.tasks import TASKS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


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
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> Image.Image:
    """Open an image as RGB; DataError naming the file when it is missing or corrupt."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(path, "image not found") from None
    except Exception as e:  # PIL raises several types for truncated or corrupt files
        raise DataError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def read_classes(path: Path) -> list[str]:
    """Read a classes.txt (one name a line, index order)."""
    if not path.is_file():
        raise DataError(path, "classes file not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(path, "classes file is empty")
    if len(set(names)) != len(names):
        raise DataError(path, "classes file repeats a name")
    return names


def read_coco(path: Path, image_list: bool = False) -> dict:
    """Read a COCO json and check its top-level structure.

    Args:
        path: the file.
        image_list: the file is an image list (organisers' `test_info`): only `images` is required;
            `annotations` is then [] and `categories` [] when absent.
    """
    if not path.is_file():
        raise DataError(path, "image list not found" if image_list else "annotation file not found")
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"invalid JSON ({e})") from None
    if not isinstance(coco, dict):
        raise DataError(path, "COCO file is not an object")
    if image_list:
        coco.setdefault("annotations", [])
        coco.setdefault("categories", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(path, f"COCO file has no '{key}' list")
    return coco


def read_image_ids(path: Path) -> dict[str, int]:
    """Read a COCO image list (`det.test_info`, `--image-ids`): file name -> integer image id.

    Raises:
        DataError: missing or malformed file, an entry without an integer id or a file name, a
            repeated id or file name (the message names the file and the entry).
    """
    path = Path(path)
    out: dict[str, int] = {}
    for i, im in enumerate(read_coco(path, image_list=True)["images"]):
        iid = im.get("id") if isinstance(im, dict) else None
        name = im.get("file_name") if isinstance(im, dict) else None
        if not isinstance(iid, int) or isinstance(iid, bool) or not isinstance(name, str) or not name:
            raise DataError(path, f"images[{i}] needs an integer id and a file_name")
        if name in out:
            raise DataError(path, f"image {name} listed twice")
        out[name] = iid
    if len(set(out.values())) != len(out):
        dup = next(v for v in out.values() if list(out.values()).count(v) > 1)
        raise DataError(path, f"image id {dup} used by more than one image")
    return out


class DatasetSpec:
    """A data set described by a `dataset.yaml`; paths in it are relative to that file.

    Args:
        path: the dataset.yaml.
        route: which images of the `unlabeled` folder serve which task, as the split "unlabeled"
            reads them: task -> file-name glob patterns joined by "|" (e.g. {"cls": "crop_*",
            "seg": "scene_*"}); a task not named gets none; None: every image for every task.
        unlabeled: a folder of unlabelled images to use instead of the data set's `unlabeled`.
    """

    def __init__(self, path: str | Path, route: dict[str, str] | None = None, unlabeled: str | Path | None = None):
        self.route = dict(route) if route is not None else None
        self.unlabeled_dir = Path(unlabeled).resolve() if unlabeled else None
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise DataError(self.path, "dataset file not found")
        try:
            self.raw = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as e:
            raise DataError(self.path, f"invalid YAML ({e})") from None
        if not isinstance(self.raw, dict):
            raise DataError(self.path, "dataset file must be a mapping")
        missing = [t for t in TASKS if t not in self.raw]
        if missing:
            raise DataError(self.path, f"missing task section(s): {', '.join(missing)}")
        self.root = self.path.parent
        self.name = str(self.raw.get("name", self.root.name))

    def _entry(self, task: str, split: str):
        section = self.raw[task]
        if not isinstance(section, dict) or split not in section:
            raise DataError(self.path, f"{task} has no '{split}' split")
        return section[split]

    def has_split(self, task: str, split: str) -> bool:
        """True when dataset.yaml names `split` for `task`."""
        return isinstance(self.raw[task], dict) and split in self.raw[task]

    def split_paths(self, task: str, split: str) -> Path | dict[str, Path]:
        """Where a split lives, resolved: a folder or file (cls, test), or {"images", "annotations"|"masks"}.

        Raises:
            DataError: the task has no such split.
        """
        entry = self._entry(task, split)
        if isinstance(entry, dict):
            return {k: self._resolve(v) for k, v in entry.items()}
        return self._resolve(entry)

    def classes_file(self, task: str) -> Path:
        """The classes.txt of cls or seg."""
        return self._resolve(self.raw[task]["classes"])

    def _resolve(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    # -- classes ---------------------------------------------------------------------------
    @cached_property
    def cls_classes(self) -> list[str]:
        """Classification class names, index order."""
        return read_classes(self.classes_file("cls"))

    @cached_property
    def seg_classes(self) -> list[str]:
        """Segmentation class names, index order."""
        return read_classes(self.classes_file("seg"))

    @property
    def ignore_index(self) -> int:
        return int(self.raw["seg"].get("ignore_index", 255))

    @cached_property
    def det_categories(self) -> list[dict]:
        """COCO categories of the detection train split, sorted by id."""
        entry = self._entry("det", "train")
        coco = read_coco(self._resolve(entry["annotations"]))
        return sorted(coco["categories"], key=lambda c: c["id"])

    @property
    def det_category_ids(self) -> list[int]:
        return [int(c["id"]) for c in self.det_categories]

    # -- splits ----------------------------------------------------------------------------
    def cls_samples(self, split: str) -> list[ClsSample]:
        """Classification samples of a split: ImageFolder, a CSV `image,label`, or (test) a folder."""
        if split == "unlabeled":
            return [ClsSample(p) for p in self.unlabeled_images("cls")]
        folder = self._resolve(self._entry("cls", split))
        if split == "test":
            return [ClsSample(p) for p in list_images(folder)]
        if folder.suffix == ".csv":
            return self._cls_from_csv(folder)
        if not folder.is_dir():
            raise DataError(folder, "folder not found")
        index = {name: i for i, name in enumerate(self.cls_classes)}
        samples = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name not in index:
                raise DataError(sub, "class folder not in classes.txt")
            samples += [ClsSample(p, index[sub.name]) for p in list_images(sub)]
        if not samples:
            raise DataError(folder, "no images found")
        return samples

    def _cls_from_csv(self, path: Path) -> list[ClsSample]:
        index = {name: i for i, name in enumerate(self.cls_classes)}
        samples = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("label") not in index:
                    raise DataError(path, f"unknown class '{row.get('label')}' for image {row.get('image')}")
                samples.append(ClsSample(path.parent / row["image"], index[row["label"]]))
        return samples

    def det_samples(self, split: str) -> list[DetSample]:
        """Detection samples of a split, boxes in COCO [x, y, w, h] pixels (test: no boxes)."""
        if split in ("test", "unlabeled"):
            samples = []
            images = self.unlabeled_images("det") if split == "unlabeled" else list_images(self._resolve(self._entry("det", split)))
            for p in images:
                with Image.open(p) as im:
                    w, h = im.size
                samples.append(DetSample(p, w, h))
            return samples
        entry = self._entry("det", split)
        ann_path = self._resolve(entry["annotations"])
        return coco_to_samples(read_coco(ann_path), self._resolve(entry["images"]), ann_path,
                               set(self.det_category_ids))

    def seg_samples(self, split: str) -> list[SegSample]:
        """Segmentation samples of a split; every image needs a mask of the same stem (not test)."""
        if split == "unlabeled":
            return [SegSample(p) for p in self.unlabeled_images("seg")]
        entry = self._entry("seg", split)
        if split == "test":
            return [SegSample(p) for p in list_images(self._resolve(entry))]
        images = list_images(self._resolve(entry["images"]))
        masks_dir = self._resolve(entry["masks"])
        if not masks_dir.is_dir():
            raise DataError(masks_dir, "folder not found")
        samples = []
        for p in images:
            mask = masks_dir / f"{p.stem}.png"
            if not mask.is_file():
                raise DataError(mask, f"mask missing for image {p.name}")
            samples.append(SegSample(p, mask))
        return samples

    def test_names(self, task: str) -> list[str]:
        """File names of a task's test images, sorted."""
        return [p.name for p in list_images(self._resolve(self._entry(task, "test")))]

    @property
    def det_test_info(self) -> Path | None:
        """The organisers' image list of the detection test split (`det: test_info:`), or None."""
        rel = self.raw["det"].get("test_info") if isinstance(self.raw["det"], dict) else None
        return self._resolve(rel) if rel else None

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

    def unlabeled_images(self, task: str | None = None) -> list[Path]:
        """Images of the `unlabeled` folder (those routed to `task` when given; see `route`)."""
        if self.unlabeled_dir is None and "unlabeled" not in self.raw:
            raise DataError(self.path, "the data set has no 'unlabeled' folder")
        images = list_images(self.unlabeled_dir or self._resolve(self.raw["unlabeled"]))
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
            raise DataError(self.path, "the test split has no labels here; only `wb score` reads the sealed truth")
        gt = GroundTruth(seg_num_classes=len(self.seg_classes), ignore_index=self.ignore_index)
        if "cls" in tasks:
            gt.cls = {s.name: s.label for s in self.cls_samples(split)}
        if "det" in tasks:
            gt.det = samples_to_coco(self.det_samples(split), self.det_categories)
        if "seg" in tasks:
            gt.seg = {s.name: s.mask for s in self.seg_samples(split)}
        return gt

    # -- sealed truth (scoring only) ---------------------------------------------------------
    def _truth(self, task: str) -> Path:
        truth = self.raw.get("truth") or {}
        if task not in truth:
            raise DataError(self.path, f"no truth for {task}: the data set has no sealed test labels")
        return self._resolve(truth[task])

    def truth_cls(self) -> dict[str, int]:
        """Test image name -> class index, from the sealed truth CSV. Scoring only."""
        path = self._truth("cls")
        if not path.is_file():
            raise DataError(path, "truth file not found")
        index = {name: i for i, name in enumerate(self.cls_classes)}
        out = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("label") not in index:
                    raise DataError(path, f"unknown class '{row.get('label')}' for image {row.get('image')}")
                out[row["image"]] = index[row["label"]]
        return out

    def truth_det(self) -> dict:
        """COCO ground truth of the test images. Scoring only."""
        return read_coco(self._truth("det"))

    def truth_seg(self) -> Path:
        """Folder of the test masks. Scoring only."""
        return self._truth("seg")


def coco_to_samples(coco: dict, images_dir: Path, ann_path: Path, category_ids: set[int]) -> list[DetSample]:
    """Turn a COCO dict into DetSamples, checking ids, categories and boxes.

    Args:
        coco: the parsed COCO json.
        images_dir: the folder the `file_name`s are relative to.
        ann_path: the json's path, for messages.
        category_ids: the data set's category ids.
    Returns:
        One DetSample per COCO image, in the file's order; boxes [x, y, w, h] pixels.
    """
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    ids = {im.get("id") for im in coco["images"]}
    orphans = set(by_image) - ids
    if orphans:
        raise DataError(ann_path, f"annotations refer to unknown image id(s) {sorted(orphans, key=str)[:5]}")
    samples = []
    for im in coco["images"]:
        try:
            w, h, name = int(im["width"]), int(im["height"]), im["file_name"]
        except (KeyError, TypeError, ValueError):
            raise DataError(ann_path, f"image entry {im.get('id')} lacks file_name/width/height") from None
        anns = by_image.get(im["id"], [])
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], np.int64)
        for a in anns:
            if a["category_id"] not in category_ids:
                raise DataError(ann_path, f"annotation {a.get('id')} of {name}: unknown category_id {a['category_id']}")
        samples.append(DetSample(images_dir / name, w, h, boxes, labels, int(im["id"])))
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
