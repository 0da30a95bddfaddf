"""`allinone-json`: one submission.json as the organisers' AllInOne scorer reads it.

The scorer is `track1/tools/eval.py` of Open-TransMind (CVPR 2023 foundation-model challenge,
track 1; the same file as `PAZHOU/base/tools/eval.py` of the 2022 Pazhou AllInOne contest):

    {"cls": [{"sign_00001.jpg": 12}, ...],
     "dec": [{"image_id": 5, "category_id": 1, "bbox": [x, y, w, h], "score": 0.93}, ...],
     "seg": [{"0001TP_008550.png": {"3": [[[x, y], [x, y], ...], ...], ...}}, ...]}

- cls: a LIST of one-entry objects {image file name: class index}; Top-1 = correct / entries.
- dec: COCO results for pycocotools' `loadRes` on the organisers' annotation file: `image_id` is
  the INTEGER id of their test image list (`det.test_info` in dataset.yaml); bbox in pixels;
  mAP50 = COCOeval stats[1].
- seg: a LIST of one-entry objects {"<stem>.png": {class id: [polygon, ...]}}, a polygon being
  [[x, y], ...] at pixel centres (see `workbench.formats.polygons`). The scorer paints each class
  in file order onto zeros and saves the mask with cv2.imwrite under the submitted name, so the
  name ends in .png (a .jpg name is JPEG-compressed and its labels change); class 0, the canvas,
  is not written.

The workbench's earlier layout (dicts keyed by image name, file names as `image_id`, pixel-edge
polygons) is still read, with a warning: that scorer cannot read it.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from workbench.errors import DataError, SubmissionError, WorkbenchError, WorkbenchWarning
from workbench.formats.base import (
    Submission,
    SubmissionFormat,
    dumps_compact,
    is_int,
    read_det_entries,
    register_format,
)
from workbench.formats.polygons import edge_polygons_to_mask, mask_to_polygons, polygons_to_mask
from workbench.io import load_json, write_text

FILE_NAME = "submission.json"
SECTIONS = ("cls", "dec", "seg")
MASK_SUFFIX = ".png"  # what the scorer's cv2.imwrite stores losslessly
IDS_HELP = ("name the organisers' COCO image list of the detection test images as `det: test_info: FILE` "
            "in dataset.yaml (images with id, file_name, width, height), or pass --image-ids FILE")


@register_format("allinone-json")
class AllInOneJsonFormat(SubmissionFormat):
    """One JSON file: cls and seg as lists of one-entry objects, dec as COCO results with integer ids."""

    needs_det_image_ids = True

    def write(self, sub: Submission, out_dir: Path) -> list[Path]:
        """Write `out_dir`/submission.json atomically (see SubmissionFormat.write).

        Raises:
            SubmissionError: a box's image has no id in `sub.det_image_ids`, or two seg images share
                a stem (their masks would get the same name).
        """
        no_id = sorted({box["image"] for box in sub.det} - set(sub.det_image_ids))
        if no_id:
            raise SubmissionError(f"allinone-json: {len(no_id)} detection image(s) have no organisers' image id "
                                  f"({', '.join(no_id[:5])}): {IDS_HELP}")
        mask_names = [mask_name(name) for name in sub.seg]
        clashes = sorted({n for n in mask_names if mask_names.count(n) > 1})
        if clashes:
            raise SubmissionError(f"allinone-json: seg images share a stem, their masks would both be named "
                                  f"{', '.join(clashes[:5])}")
        doc = {
            "cls": [{name: int(c)} for name, c in sub.cls.items()],
            "dec": [{"image_id": int(sub.det_image_ids[box["image"]]), "category_id": int(box["category_id"]),
                     "bbox": [float(v) for v in box["bbox"]], "score": float(box["score"])} for box in sub.det],
            "seg": [{mask_name(name): {str(c): polys for c, polys in mask_to_polygons(mask).items()}}
                    for name, mask in sub.seg.items()],
        }
        path = Path(out_dir) / FILE_NAME
        write_text(path, dumps_compact(doc))
        return [path]

    def read(self, out_dir: Path, seg_sizes: dict[str, tuple[int, int]] | None = None,
             cls_classes: list[str] | None = None, seg_num_classes: int | None = None,
             det_image_ids: dict[str, int] | None = None) -> Submission:
        """Read submission.json back as the organisers' scorer would (see SubmissionFormat.read).

        Args:
            seg_sizes: test image name -> (H, W); needed when the file has segmentation (polygons do
                not carry the image size, and a mask name "<stem>.png" is matched to the image by stem).
            det_image_ids: detection test image name -> organisers' id; needed when the file has boxes.

        Raises:
            DataError: the file is malformed; every problem is listed, each naming its image.
        """
        path = Path(out_dir) / FILE_NAME
        doc = load_json(path)
        if not isinstance(doc, dict):
            raise DataError(path, "top level is not an object")
        problems = [f"missing section {k!r}" for k in SECTIONS if k not in doc]
        problems += [f"unknown section {k!r}" for k in doc if k not in SECTIONS]
        if problems:
            raise DataError(path, "\n".join(problems))
        if isinstance(doc["cls"], dict) or isinstance(doc["seg"], dict):
            warnings.warn(f"{path}: the workbench's earlier allinone-json layout (objects keyed by image name); "
                          "the organisers' scorer cannot read it: write the submission again", WorkbenchWarning,
                          stacklevel=2)
            cls, det, seg = _read_earlier(doc, path, seg_sizes, problems)
        else:
            cls = _read_cls(doc["cls"], problems)
            det = _read_dec(doc["dec"], path, det_image_ids, problems)
            seg = _read_seg(doc["seg"], path, seg_sizes, problems)
        if problems:
            raise DataError(path, "\n".join(problems))
        if seg_num_classes is None:
            seg_num_classes = max((int(m.max()) + 1 for m in seg.values() if m.size), default=0)
        return Submission(cls=cls, det=det, seg=seg, cls_classes=list(cls_classes or []),
                          seg_num_classes=int(seg_num_classes), det_image_ids=dict(det_image_ids or {}))


def mask_name(image_name: str) -> str:
    """The name a seg image's mask gets in the file: "<stem>.png"."""
    return Path(image_name).stem + MASK_SUFFIX


def _one_entry_list(section, name: str, what: str, problems: list[str]) -> list[tuple[int, str, object]]:
    """(index, key, value) of a list of one-entry objects; problems for anything else."""
    if not isinstance(section, list):
        problems.append(f"{name!r} is not a list of one-entry objects {what}")
        return []
    out = []
    for i, entry in enumerate(section):
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(f"{name}[{i}]: not a one-entry object {what}")
            continue
        (key, value), = entry.items()
        out.append((i, key, value))
    return out


def _read_cls(section, problems: list[str]) -> dict[str, int]:
    cls = {}
    for i, name, c in _one_entry_list(section, "cls", "{image_name: class_id}", problems):
        if name in cls:
            problems.append(f"cls[{i}] (image {name}): given more than once (each entry counts in Top-1)")
        elif not is_int(c):
            problems.append(f"cls[{i}] (image {name}): class id {c!r} is not an integer")
        else:
            cls[name] = int(c)
    return cls


def _read_dec(section, path: Path, det_image_ids: dict[str, int] | None, problems: list[str]) -> list[dict]:
    if not isinstance(section, list):
        problems.append("'dec' is not a list of boxes")
        return []
    if section and det_image_ids is None:
        raise WorkbenchError(f"{path}: reading detection boxes needs the test image ids (det.test_info)")
    names = {int(i): name for name, i in (det_image_ids or {}).items()}
    return read_det_entries(section, "dec", problems, id_to_name=names)


def _read_seg(section, path: Path, seg_sizes: dict[str, tuple[int, int]] | None,
              problems: list[str]) -> dict[str, np.ndarray]:
    entries = _one_entry_list(section, "seg", '{"<stem>.png": {class_id: polygons}}', problems)
    if entries and seg_sizes is None:
        raise WorkbenchError(f"{path}: reading segmentation polygons needs seg_sizes (H, W) per image")
    by_stem = {Path(name).stem: name for name in seg_sizes or {}}
    seg = {}
    for i, key, polys in entries:
        where = f"seg[{i}] ({key})"
        image = by_stem.get(Path(key).stem)
        if image is None:
            problems.append(f"{where}: no test image of that stem")
        elif image in seg:
            problems.append(f"{where}: image {image} given more than once")
        elif not isinstance(polys, dict):
            problems.append(f"{where}: not an object {{class_id: polygons}}")
        else:
            try:
                mask = polygons_to_mask(polys, *seg_sizes[image])
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            seg[image] = _as_saved(mask, key, path, where, problems)
    return seg


def _as_saved(mask: np.ndarray, key: str, path: Path, where: str, problems: list[str]) -> np.ndarray:
    """The mask as the scorer reads it back after cv2.imwrite(key) and PIL's Image.open."""
    suffix = Path(key).suffix.lower()
    if suffix == MASK_SUFFIX:
        return mask  # lossless
    ok, buf = cv2.imencode(suffix, mask) if suffix else (False, None)
    if not ok:
        problems.append(f"{where}: the scorer saves the mask under this name and cv2 cannot write {suffix or 'it'}")
        return mask
    warnings.warn(f"{path}: {where}: saved as {suffix} by the scorer, which changes labels; name masks <stem>.png",
                  WorkbenchWarning, stacklevel=3)
    with Image.open(io.BytesIO(buf.tobytes())) as im:
        return np.asarray(im, dtype=np.uint8).copy()


def _read_earlier(doc: dict, path: Path, seg_sizes, problems: list[str]) -> tuple[dict, list, dict]:
    """The earlier layout: {"cls": {name: id}, "dec": [COCO with file names], "seg": {name: {id: flat polys}}}."""
    cls = {}
    if not isinstance(doc["cls"], dict):
        problems.append("'cls' is not an object {image_name: class_id}")
    else:
        for name, c in doc["cls"].items():
            if is_int(c):
                cls[name] = int(c)
            else:
                problems.append(f"cls: image {name}: class id {c!r} is not an integer")
    det = []
    if not isinstance(doc["dec"], list):
        problems.append("'dec' is not a list of boxes")
    else:
        det = read_det_entries(doc["dec"], "dec", problems)
    seg = {}
    if not isinstance(doc["seg"], dict):
        problems.append("'seg' is not an object {image_name: {class_id: polygons}}")
    else:
        if doc["seg"] and seg_sizes is None:
            raise WorkbenchError(f"{path}: reading segmentation polygons needs seg_sizes (H, W) per image")
        for name, polys in doc["seg"].items():
            if name not in seg_sizes:
                problems.append(f"seg: image {name}: size unknown (not in seg_sizes)")
            elif not isinstance(polys, dict):
                problems.append(f"seg: image {name}: not an object {{class_id: polygons}}")
            else:
                try:
                    seg[name] = edge_polygons_to_mask(polys, *seg_sizes[name])
                except ValueError as e:
                    problems.append(f"seg: image {name}: {e}")
    return cls, det, seg
