"""The Submission record: hard predictions of every test image, in leaderboard terms.

Formats (workbench.formats) write it to leaderboard files and read it back; scoring reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Submission:
    """Predictions for the test images of every task, in leaderboard terms.

    Attributes:
        cls: image file name -> class index (0-based, in the order of `cls_classes`).
        det: boxes [{"image": file name, "category_id": the data set's COCO category id,
            "bbox": [x, y, w, h] float pixels, "score": float}].
        seg: image file name -> (H, W) uint8 class-index mask at the image's original size.
        cls_classes: class names in index order (the cls data set's classes.txt).
        seg_num_classes: K of the segmentation data set.
        det_image_ids: detection test image file name -> the organisers' integer image id (their
            COCO image list, `det.test_info` of dataset.yaml); formats that write ids need it.
    """

    cls: dict[str, int] = field(default_factory=dict)
    det: list[dict] = field(default_factory=list)
    seg: dict[str, np.ndarray] = field(default_factory=dict)
    cls_classes: list[str] = field(default_factory=list)
    seg_num_classes: int = 0
    det_image_ids: dict[str, int] = field(default_factory=dict)

    def __eq__(self, other) -> bool:
        """Equal when every field is equal (masks compared by shape and values, not dtype)."""
        if not isinstance(other, Submission):
            return NotImplemented
        return (
            self.cls == other.cls
            and self.det == other.det
            and list(self.cls_classes) == list(other.cls_classes)
            and self.seg_num_classes == other.seg_num_classes
            and self.det_image_ids == other.det_image_ids
            and self.seg.keys() == other.seg.keys()
            and all(np.array_equal(self.seg[k], other.seg[k]) for k in self.seg)
        )

    __hash__ = None  # mutable, compared by value
