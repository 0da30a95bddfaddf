"""Torch datasets of the three tasks, at the network's input size.

Images are decoded and resized once, then kept in memory as uint8 (the real benchmark is ~90 MB of
JPEG; at training sizes it is a few hundred MB at most). Training augmentation (`augment`, one
`workbench.data.augment.Augment` per data set; defaults: flip + colour for det and seg, shift + colour
for cls, whose mirrored signs change meaning) works on the cached canvases and moves boxes and masks
with the image. Its random draws come from torch's global generator, which the trainer reseeds
every step: a resumed run repeats them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.data.augment import DEFAULT_AUGMENT, Augment, augment_cls, augment_det, augment_seg
from workbench.data.spec import ClsSample, DetSample, SegSample, read_image
from workbench.io import read_mask
from workbench.errors import DataError
from workbench.data.transforms import letterbox_image, letterbox_mask, resize_square, xywh_to_xyxy


def _to_tensor(canvas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1)  # (3, S, S) uint8


class ClsDataset(Dataset):
    """Classification crops resized to (size, size). Items: (image (3,S,S) uint8, label int)."""

    def __init__(self, samples: Sequence[ClsSample], size: int, augment: Augment | None = None):
        self.samples, self.size, self.augment = list(samples), size, augment
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            self._cache[i] = _to_tensor(resize_square(read_image(self.samples[i].path), self.size))
        return self._cache[i]

    def __getitem__(self, i: int):
        image = self.image(i)
        if self.augment is not None:
            image = augment_cls(image, self.augment)
        return image, self.samples[i].label


class DetDataset(Dataset):
    """Letterboxed detection images. Items: (image (3,S,S) uint8, boxes (N,4) xyxy canvas px, labels (N,) index).

    Args:
        samples: DetSamples (COCO boxes in pixels of the original image).
        category_ids: the data set's COCO category ids; a label is its position in this list.
    """

    def __init__(self, samples: Sequence[DetSample], size: int, category_ids: Sequence[int],
                 augment: Augment | None = None):
        self.samples, self.size, self.augment = list(samples), size, augment
        self.index = {c: i for i, c in enumerate(category_ids)}
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def item(self, i: int):
        if i not in self._cache:
            s = self.samples[i]
            canvas, box = letterbox_image(read_image(s.path), self.size)
            xyxy = xywh_to_xyxy(s.boxes) * box.scale
            labels = np.array([self.index[int(c)] for c in s.labels], np.int64)
            self._cache[i] = (_to_tensor(canvas), torch.from_numpy(xyxy), torch.from_numpy(labels))
        return self._cache[i]

    def __getitem__(self, i: int):
        image, boxes, labels = self.item(i)
        if self.augment is not None:
            image, boxes, labels = augment_det(image, boxes, labels, self.augment)
        return image, boxes, labels


class SegDataset(Dataset):
    """Letterboxed segmentation images. Items: (image (3,S,S) uint8, mask (S,S) int64, padding = ignore)."""

    def __init__(self, samples: Sequence[SegSample], size: int, ignore_index: int = 255,
                 augment: Augment | None = None):
        self.samples, self.size, self.augment, self.ignore_index = list(samples), size, augment, ignore_index
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def item(self, i: int):
        if i not in self._cache:
            s = self.samples[i]
            image = read_image(s.path)
            if s.mask is None:  # test images: no labels, an all-ignore mask keeps batches uniform
                mask = np.full((image.height, image.width), self.ignore_index, np.uint8)
            else:
                mask = read_mask(s.mask)
            if mask.shape != (image.height, image.width):
                raise DataError(s.mask, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                                        f"image {image.width}x{image.height}")
            canvas, _ = letterbox_image(image, self.size)
            self._cache[i] = (_to_tensor(canvas),
                              torch.from_numpy(letterbox_mask(mask, self.size, self.ignore_index)).long(),
                              (image.height, image.width))
        return self._cache[i]

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of sample i's original image."""
        return self.item(i)[2]

    def __getitem__(self, i: int):
        image, mask, _ = self.item(i)
        if self.augment is not None:
            image, mask = augment_seg(image, mask, self.augment, self.ignore_index)
        return image, mask


def collate_det(batch):
    """Stack images; keep per-image boxes and labels as lists."""
    images, boxes, labels = zip(*batch)
    return torch.stack(images), list(boxes), list(labels)


def build_datasets(spec, split: str, sizes: dict[str, int], train: bool = False,
                   augment: dict[str, Augment] | None = None) -> dict:
    """The three task datasets {"cls", "det", "seg"} of a DatasetSpec's split at the given input sizes.

    Args:
        train: augment the items (with `augment`, task -> Augment; default DEFAULT_AUGMENT).
    """
    aug = (augment or DEFAULT_AUGMENT) if train else {}
    return {
        "cls": ClsDataset(spec.cls_samples(split), sizes["cls"], aug.get("cls")),
        "det": DetDataset(spec.det_samples(split), sizes["det"], spec.det_category_ids, aug.get("det")),
        "seg": SegDataset(spec.seg_samples(split), sizes["seg"], spec.ignore_index, aug.get("seg")),
    }
