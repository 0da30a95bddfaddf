"""`allinone-json`: one submission.json in the layout of the CVPR 2023 foundation-model challenge, track 1.

    {"cls": {image_name: class_id},
     "dec": [{"image_id": image_name, "category_id": int, "bbox": [x, y, w, h], "score": float}],
     "seg": {image_name: {"<class_id>": [[x1, y1, x2, y2, ...], ...]}}}

Boxes are in pixels; polygons follow pixel edges (see `workbench.formats.polygons`), so the seg
round trip is exact except at diagonal pinches; `polygon_roundtrip_miou` measures the loss.
"""
from __future__ import annotations

from pathlib import Path


from workbench.errors import DataError, WorkbenchError
from workbench.formats.base import (
    Submission,
    SubmissionFormat,
    check_det_entry,
    det_from_entry,
    det_to_entry,
    dumps_compact,
    is_int,
    load_json,
    register_format,
)
from workbench.formats.polygons import mask_to_polygons, polygons_to_mask
from workbench.io import write_text

FILE_NAME = "submission.json"
SECTIONS = ("cls", "dec", "seg")


@register_format("allinone-json")
class AllInOneJsonFormat(SubmissionFormat):
    """One JSON file; segmentation as per-class polygons (lossy only at diagonal pinches)."""

    def write(self, sub: Submission, out_dir: Path) -> list[Path]:
        """Write `out_dir`/submission.json atomically (see SubmissionFormat.write)."""
        path = Path(out_dir) / FILE_NAME
        doc = {
            "cls": {name: int(c) for name, c in sub.cls.items()},
            "dec": [det_to_entry(box) for box in sub.det],
            "seg": {name: {str(c): polys for c, polys in mask_to_polygons(mask).items()}
                    for name, mask in sub.seg.items()},
        }
        write_text(path, dumps_compact(doc))
        return [path]

    def read(self, out_dir: Path, seg_sizes: dict[str, tuple[int, int]] | None = None,
             cls_classes: list[str] | None = None, seg_num_classes: int | None = None) -> Submission:
        """Read submission.json back (see SubmissionFormat.read).

        Args:
            seg_sizes: image name -> (H, W); required when the file has segmentation, since
                polygons do not carry the image size.
        """
        path = Path(out_dir) / FILE_NAME
        doc = load_json(path)
        if not isinstance(doc, dict):
            raise DataError(path, "top level is not an object")
        problems = [f"missing section {k!r}" for k in SECTIONS if k not in doc]
        problems += [f"unknown section {k!r}" for k in doc if k not in SECTIONS]
        if problems:
            raise DataError(path, "\n".join(problems))

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
            for i, entry in enumerate(doc["dec"]):
                problem = check_det_entry(entry, "image_id")
                if problem:
                    image = entry.get("image_id") if isinstance(entry, dict) else None
                    problems.append(f"dec[{i}] (image {image}): {problem}")
                else:
                    det.append(det_from_entry(entry, "image_id"))

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
                        seg[name] = polygons_to_mask(polys, *seg_sizes[name])
                    except ValueError as e:
                        problems.append(f"seg: image {name}: {e}")
        if problems:
            raise DataError(path, "\n".join(problems))

        if seg_num_classes is None:
            seg_num_classes = max((int(m.max()) + 1 for m in seg.values() if m.size), default=0)
        return Submission(cls=cls, det=det, seg=seg, cls_classes=list(cls_classes or []),
                          seg_num_classes=int(seg_num_classes))


