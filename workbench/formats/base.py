"""The registry of leaderboard formats (the Submission they write is a record: workbench.records)."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np

from workbench.errors import SubmissionError, WorkbenchError
from workbench.records.submission import Submission


class SubmissionFormat(ABC):
    """A leaderboard format: writes a Submission to files and reads them back.

    Subclasses set `name` (done by `register_format`) and implement `write` and `read`.
    """

    name: str = ""
    needs_det_image_ids: bool = False  # write() names detection images by the organisers' integer ids

    @abstractmethod
    def write(self, sub: Submission, out_dir: Path) -> list[Path]:
        """Write `sub` into `out_dir` (created if missing), every file atomically.

        Args:
            sub: the submission, assumed to have passed `validate_submission`.
            out_dir: folder receiving the format's files.

        Returns:
            The paths written, in a fixed order.
        """

    @abstractmethod
    def read(self, out_dir: Path, seg_sizes: dict[str, tuple[int, int]] | None = None,
             cls_classes: list[str] | None = None, seg_num_classes: int | None = None,
             det_image_ids: dict[str, int] | None = None) -> Submission:
        """Read the files `write` produced.

        Args:
            out_dir: the folder `write` wrote into.
            seg_sizes: image name -> (H, W), for formats that cannot recover the mask size.
            cls_classes: class names in index order (needed where the files hold names).
            seg_num_classes: K; when None, one more than the largest class id found.
            det_image_ids: detection image name -> organisers' id, for formats that write ids.

        Returns:
            The Submission (its `cls_classes` is `cls_classes` or []).

        Raises:
            DataError: a file is missing or malformed (the message names the file and the image).
        """


_FORMATS: dict[str, type[SubmissionFormat]] = {}


def register_format(name: str) -> Callable[[type[SubmissionFormat]], type[SubmissionFormat]]:
    """Class decorator adding a SubmissionFormat subclass to the registry under `name`."""

    def decorate(cls: type[SubmissionFormat]) -> type[SubmissionFormat]:
        if name in _FORMATS and _FORMATS[name] is not cls:
            raise WorkbenchError(f"submission format {name!r} is registered twice")
        cls.name = name
        _FORMATS[name] = cls
        return cls

    return decorate


def get_format(name: str) -> SubmissionFormat:
    """Return an instance of the format registered as `name`.

    Raises:
        WorkbenchError: no such format (the message lists the known ones).
    """
    if name not in _FORMATS:
        raise WorkbenchError(f"unknown submission format {name!r}; known formats: {', '.join(list_formats())}")
    return _FORMATS[name]()


def list_formats() -> list[str]:
    """Return the registered format names, sorted."""
    return sorted(_FORMATS)


# ---- helpers shared by the readers -------------------------------------------------------------

def is_int(value) -> bool:
    """True for Python/NumPy integers (bool excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """True for Python/NumPy real numbers (bool excluded)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_det_entry(entry, image_key: str, integer_ids: bool = False) -> str | None:
    """Return what is wrong with the schema of one box entry read from a file, or None.

    Args:
        entry: the decoded JSON object.
        image_key: the key identifying the image in this format ("image_id").
        integer_ids: the image is named by an integer id (COCO results) rather than a file name.
    """
    if not isinstance(entry, dict):
        return "not an object"
    missing = [k for k in (image_key, "category_id", "bbox", "score") if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    if integer_ids and not is_int(entry[image_key]):
        return f"{image_key} {entry[image_key]!r} is not an integer image id"
    if not integer_ids and not isinstance(entry[image_key], str):
        return f"{image_key} {entry[image_key]!r} is not an image file name"
    if not is_int(entry["category_id"]):
        return f"category_id {entry['category_id']!r} is not an integer"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not 4 numbers"
    if not is_number(entry["score"]):
        return f"score {entry['score']!r} is not a number"
    return None


def read_det_entries(entries: list, where: str, problems: list[str],
                     id_to_name: dict[int, str] | None = None) -> list[dict]:
    """Check COCO result entries read from a file and convert the good ones to Submission boxes.

    Args:
        entries: the decoded list.
        where: prefix of each problem line, e.g. "dec" -> "dec[3] (image 12): ...".
        problems: receives one line per bad entry.
        id_to_name: images named by integer ids, mapped back to file names with this; None: by file name.

    Returns:
        The boxes {"image", "category_id", "bbox", "score"} of the good entries, in file order.
    """
    det = []
    for i, entry in enumerate(entries):
        problem = check_det_entry(entry, "image_id", integer_ids=id_to_name is not None)
        image = entry.get("image_id") if isinstance(entry, dict) else None
        if problem is None and id_to_name is not None and int(image) not in id_to_name:
            problem = f"image_id {image} is not in the test image list"
        if problem:
            problems.append(f"{where}[{i}] (image {image}): {problem}")
        else:
            named = entry if id_to_name is None else {**entry, "image_id": id_to_name[int(image)]}
            det.append(det_from_entry(named, "image_id"))
    return det


def det_from_entry(entry: dict, image_key: str) -> dict:
    """Convert a checked file entry to a Submission box {"image", "category_id", "bbox", "score"}."""
    return {
        "image": entry[image_key],
        "category_id": int(entry["category_id"]),
        "bbox": [float(v) for v in entry["bbox"]],
        "score": float(entry["score"]),
    }


def det_to_entry(box: dict) -> dict:
    """Convert a Submission box to a COCO result with the image name as "image_id"."""
    return {
        "image_id": box["image"],
        "category_id": int(box["category_id"]),
        "bbox": [float(v) for v in box["bbox"]],
        "score": float(box["score"]),
    }


def dumps_compact(obj) -> str:
    """Return JSON without spaces (submission files get large).

    Raises:
        SubmissionError: a value is NaN or infinite (validate_submission reports which).
    """
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as e:
        raise SubmissionError(f"cannot write a non-finite number ({e}); run validate_submission first") from None


