"""The GroundTruth record: the labels of one split, as scoring reads them.

Made by `DatasetSpec.ground_truth` (train, val) and by the score stage (the sealed test truth).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GroundTruth:
    """Labels of one split. cls: name -> class index; det: COCO dict (file_name identifies images);
    seg: name -> mask file."""

    cls: dict[str, int] = field(default_factory=dict)
    det: dict | None = None
    seg: dict[str, Path] = field(default_factory=dict)
    seg_num_classes: int = 0
    ignore_index: int = 255

    def names(self, task: str) -> list[str]:
        """Image names of a task, in order."""
        if task == "det":
            return [im["file_name"] for im in (self.det or {}).get("images", [])]
        return list(getattr(self, task))
