"""`coco`: three files in COCO conventions, lossless.

- cls.csv: header `image,label`, label = class NAME (from the data set's classes.txt);
- det.json: COCO results [{"image_id": image file name, "category_id", "bbox": [x, y, w, h] pixels, "score"}];
- seg.json: [{"image_id": image file name, "category_id": class index,
  "segmentation": {"size": [H, W], "counts": str}}], one COCO RLE (pycocotools.mask.encode, counts
  as text) per image and class present.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from workbench.errors import DataError, SubmissionError, WorkbenchError
from workbench.formats.base import (
    Submission,
    SubmissionFormat,
    det_to_entry,
    dumps_compact,
    is_int,
    read_det_entries,
    register_format,
)
from workbench.formats.polygons import CANVAS_CLASS, quiet_pycocotools
from workbench.io import load_json, write_text

CLS_FILE, DET_FILE, SEG_FILE = "cls.csv", "det.json", "seg.json"


def encode_mask(mask: np.ndarray) -> list[dict]:
    """Encode a class mask as one COCO RLE per class present.

    Args:
        mask: (H, W) integer class mask.

    Returns:
        [{"category_id": class index, "segmentation": {"size": [H, W], "counts": str}}], classes ascending.
    """
    out = []
    for c in np.unique(mask).tolist():
        rle = mask_utils.encode(np.asfortranarray(mask == c, dtype=np.uint8))
        out.append({"category_id": int(c),
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}})
    return out


@register_format("coco")
class CocoFormat(SubmissionFormat):
    """cls.csv + det.json + seg.json (RLE): lossless."""

    def write(self, sub: Submission, out_dir: Path) -> list[Path]:
        """Write cls.csv, det.json and seg.json atomically (see SubmissionFormat.write).

        Raises:
            SubmissionError: a class index has no name in `sub.cls_classes`.
        """
        out_dir = Path(out_dir)
        bad = [f"cls: image {name}: class {c} has no name in cls_classes ({len(sub.cls_classes)} classes)"
               for name, c in sub.cls.items() if not 0 <= int(c) < len(sub.cls_classes)]
        if bad:
            raise SubmissionError("\n".join(bad))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows([name, sub.cls_classes[int(c)]] for name, c in sub.cls.items())
        seg = [{"image_id": name, **entry} for name, mask in sub.seg.items() for entry in encode_mask(mask)]
        files = [
            (out_dir / CLS_FILE, buf.getvalue()),
            (out_dir / DET_FILE, dumps_compact([det_to_entry(box) for box in sub.det])),
            (out_dir / SEG_FILE, dumps_compact(seg)),
        ]
        for path, text in files:
            write_text(path, text)
        return [path for path, _ in files]

    def read(self, out_dir: Path, seg_sizes: dict[str, tuple[int, int]] | None = None,
             cls_classes: list[str] | None = None, seg_num_classes: int | None = None,
             det_image_ids: dict[str, int] | None = None) -> Submission:
        """Read the three files back exactly (see SubmissionFormat.read; boxes name images by file name).

        Args:
            seg_sizes: unused (each RLE carries its size).
            cls_classes: required when cls.csv has rows: labels are names, mapped to their index.
        """
        out_dir = Path(out_dir)
        cls = _read_cls(out_dir / CLS_FILE, cls_classes)
        det = _read_det(out_dir / DET_FILE)
        seg = _read_seg(out_dir / SEG_FILE)
        if seg_num_classes is None:
            seg_num_classes = max((int(m.max()) + 1 for m in seg.values() if m.size), default=0)
        return Submission(cls=cls, det=det, seg=seg, cls_classes=list(cls_classes or []),
                          seg_num_classes=int(seg_num_classes), det_image_ids=dict(det_image_ids or {}))


def _read_cls(path: Path, cls_classes: list[str] | None) -> dict[str, int]:
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["image", "label"]:
        raise DataError(path, "first line must be the header 'image,label'")
    if len(rows) > 1 and cls_classes is None:
        raise WorkbenchError(f"{path}: reading class names needs cls_classes")
    index = {name: i for i, name in enumerate(cls_classes or [])}
    cls, problems = {}, []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            problems.append(f"line {line}: expected 2 fields, got {len(row)}")
            continue
        name, label = row
        if name in cls:
            problems.append(f"line {line}: image {name}: appears more than once")
        elif label not in index:
            problems.append(f"line {line}: image {name}: label {label!r} is not a class name")
        else:
            cls[name] = index[label]
    if problems:
        raise DataError(path, "\n".join(problems))
    return cls


def _read_det(path: Path) -> list[dict]:
    entries = load_json(path)
    if not isinstance(entries, list):
        raise DataError(path, "not a list of COCO results")
    problems = []
    det = read_det_entries(entries, "", problems)
    if problems:
        raise DataError(path, "\n".join(problems))
    return det


def _read_seg(path: Path) -> dict[str, np.ndarray]:
    entries = load_json(path)
    if not isinstance(entries, list):
        raise DataError(path, "not a list of {image_id, category_id, segmentation}")
    masks: dict[str, np.ndarray] = {}
    covered: dict[str, np.ndarray] = {}
    seen, problems = set(), []
    for i, entry in enumerate(entries):
        try:
            name, c, rle = entry["image_id"], entry["category_id"], entry["segmentation"]
            h, w = (int(v) for v in rle["size"])
            counts = rle["counts"]
        except (TypeError, KeyError, ValueError):
            problems.append(f"[{i}]: expected {{image_id, category_id, segmentation: {{size: [H, W], counts}}}}")
            continue
        where = f"[{i}] (image {name})"
        if not isinstance(name, str) or not isinstance(counts, str) or not is_int(c) or not 0 <= c <= 255:
            problems.append(f"{where}: image_id must be a name, category_id an integer in 0..255, counts text")
            continue
        if (name, c) in seen:
            problems.append(f"{where}: class {c} appears more than once")
            continue
        seen.add((name, c))
        try:
            with quiet_pycocotools():
                binary = mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")}).astype(bool)
        except Exception as e:  # pycocotools raises assorted errors on corrupt RLE
            problems.append(f"{where}: undecodable RLE ({e})")
            continue
        if name not in masks:
            masks[name] = np.full((h, w), CANVAS_CLASS, dtype=np.uint8)
            covered[name] = np.zeros((h, w), dtype=bool)
        if masks[name].shape != (h, w):
            problems.append(f"{where}: size {[h, w]} differs from {list(masks[name].shape)} of its other classes")
            continue
        if (covered[name] & binary).any():
            problems.append(f"{where}: class {c} overlaps another class of the same image")
            continue
        masks[name][binary] = c
        covered[name] |= binary
    if problems:
        raise DataError(path, "\n".join(problems))
    return masks
