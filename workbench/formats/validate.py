"""Check a Submission against the test image lists and the data sets before anything is written."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from workbench.errors import SubmissionError
from workbench.formats.base import is_int, is_number
from workbench.records.submission import Submission

MAX_LINES = 200  # problems listed in the message; the rest are counted
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image


def validate_submission(sub: Submission, expected: dict[str, list[str]], cls_num_classes: int,
                        det_category_ids: set[int], seg_num_classes: int,
                        image_sizes: dict[str, dict[str, tuple[int, int]]],
                        allow_missing: bool = False) -> dict[str, list[str]]:
    """Check a submission; raise one SubmissionError listing every problem found.

    Checks: cls and seg give every expected image exactly once and no other image; det boxes are
    only on expected images (an image without boxes is fine); class ids are integers in range;
    det category ids are known; boxes are 4 finite numbers with positive width and height, inside
    their image within 1 pixel; scores are finite in [0, 1]; seg masks are 2-D integer arrays of the
    image's (H, W) with values in 0..K-1.

    Args:
        sub: the submission.
        expected: task ("cls", "det", "seg") -> the test image names; a task left out expects none.
        cls_num_classes: number of classification classes.
        det_category_ids: the detection data set's COCO category ids.
        seg_num_classes: K of the segmentation data set.
        image_sizes: task ("det", "seg") -> image name -> (H, W) in pixels.
        allow_missing: a cls or seg image the submission leaves out is not a problem (`mtwb score
            --lenient` scores it as wrong); every other check holds.

    Returns:
        cls and seg -> the expected images the submission leaves out (empty unless `allow_missing`).

    Raises:
        SubmissionError: one line per problem, each naming the image (the first MAX_LINES lines,
            then a count of the rest).
    """
    missing = {t: [n for n in expected.get(t, []) if n not in getattr(sub, t)] for t in ("cls", "seg")}
    problems = _check_cls(sub, expected.get("cls", []), cls_num_classes)
    problems += _check_det(sub, expected.get("det", []), det_category_ids, image_sizes.get("det", {}))
    problems += _check_seg(sub, expected.get("seg", []), seg_num_classes, image_sizes.get("seg", {}))
    if allow_missing:
        problems = [p for p in problems if not p.endswith(": missing")]
    else:
        missing = {t: [] for t in missing}
    if problems:
        lines = problems[:MAX_LINES]
        if len(problems) > MAX_LINES:
            lines.append(f"... and {len(problems) - MAX_LINES} more problems")
        raise SubmissionError(f"submission has {len(problems)} problem(s):\n" + "\n".join(lines))
    return missing


def _check_coverage(task: str, given: list[str], expected: list[str]) -> list[str]:
    """Missing, duplicated and unexpected images of a task that takes every image exactly once."""
    counts = Counter(given)
    wanted = set(expected)
    problems = [f"{task}: image {name}: missing" for name in expected if name not in counts]
    problems += [f"{task}: image {name}: given {n} times" for name, n in counts.items() if n > 1]
    problems += [f"{task}: image {name}: not in the test image list" for name in counts if name not in wanted]
    return problems


def _check_cls(sub: Submission, expected: list[str], num_classes: int) -> list[str]:
    problems = _check_coverage("cls", list(sub.cls), expected)
    for name, c in sub.cls.items():
        if not is_int(c) or not 0 <= c < num_classes:
            problems.append(f"cls: image {name}: class id {c!r} is not an integer in 0..{num_classes - 1}")
    if sub.cls_classes and len(sub.cls_classes) != num_classes:
        problems.append(f"cls: {len(sub.cls_classes)} class names for {num_classes} classes")
    return problems


def _check_det(sub: Submission, expected: list[str], category_ids: set[int],
               sizes: dict[str, tuple[int, int]]) -> list[str]:
    wanted = set(expected)
    problems, outside = [], Counter()
    for i, box in enumerate(sub.det):
        name = box.get("image") if isinstance(box, dict) else None
        where = f"det[{i}] (image {name})"
        missing = [k for k in ("image", "category_id", "bbox", "score") if not isinstance(box, dict) or k not in box]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        if name not in wanted:
            outside[name] += 1
            continue
        if not is_int(box["category_id"]) or box["category_id"] not in category_ids:
            problems.append(f"{where}: category_id {box['category_id']!r} is not one of {sorted(category_ids)}")
        score = box["score"]
        if not is_number(score) or not math.isfinite(score) or not 0 <= score <= 1:
            problems.append(f"{where}: score {score!r} is not a finite number in [0, 1]")
        problems += [f"{where}: {p}" for p in _box_problems(box["bbox"], sizes.get(name))]
    problems += [f"det: image {name}: {n} box(es) on an image not in the test image list"
                 for name, n in outside.items()]
    return problems


def _box_problems(bbox, size: tuple[int, int] | None) -> list[str]:
    """What is wrong with one [x, y, w, h] pixel box of an image of size (H, W)."""
    if (not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4
            or not all(is_number(v) for v in bbox)):
        return [f"bbox {bbox!r} is not 4 numbers [x, y, w, h]"]
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return [f"bbox {[x, y, w, h]} is not finite"]
    problems = []
    if w <= 0 or h <= 0:
        problems.append(f"bbox {[x, y, w, h]} has no positive width and height")
    if size is None:
        problems.append("image size unknown, cannot check the box lies inside it")
    else:
        height, width = size
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            problems.append(f"bbox {[x, y, w, h]} lies outside the {width}x{height} image")
    return problems


def _check_seg(sub: Submission, expected: list[str], num_classes: int,
               sizes: dict[str, tuple[int, int]]) -> list[str]:
    problems = _check_coverage("seg", list(sub.seg), expected)
    wanted = set(expected)
    if sub.seg_num_classes and sub.seg_num_classes != num_classes:
        problems.append(f"seg: submission says {sub.seg_num_classes} classes, the data set has {num_classes}")
    for name, mask in sub.seg.items():
        where = f"seg: image {name}"
        if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            problems.append(f"{where}: mask is not a 2-D integer array")
            continue
        size = sizes.get(name)
        if size is None:
            if name in wanted:
                problems.append(f"{where}: image size unknown, cannot check the mask")
        elif mask.shape != tuple(size):
            problems.append(f"{where}: mask of shape {mask.shape}, the image is {tuple(size)} (H, W)")
        if mask.size and (mask.min() < 0 or mask.max() >= num_classes):
            problems.append(f"{where}: mask values {int(mask.min())}..{int(mask.max())} outside 0..{num_classes - 1}")
    return problems
