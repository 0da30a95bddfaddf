"""Torch datasets of the three tasks, at the network's input size.

Images are decoded and resized once. With `cache_dir` (what training and prediction use) the first
item (or `prepare()`) decodes every image into a memory-mapped uint8 array on disk
(`workbench.data.image_cache`), reused by every later run, prediction and process at the same size;
without, each image is decoded into memory when first used.
Training augmentation (`augment`, one `workbench.data.augment.Augment` per data set; defaults: flip
+ colour for det and seg, shift + colour for cls, whose mirrored signs change meaning) works on the
decoded canvases and moves boxes and masks with the image. `get(i, generator)` draws it from the
given generator (the trainer's, seeded per step and task, so batches can be built in a background
thread and a resumed run repeats them); `dataset[i]` from torch's global one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.data.augment import DEFAULT_AUGMENT, Augment, augment_cls, augment_det, augment_seg
from workbench.data.image_cache import CachedArrays, cached_arrays
from workbench.data.spec import ClsSample, DetSample, SegSample, read_image
from workbench.io import read_mask
from workbench.errors import DataError
from workbench.data.transforms import Size, letterbox_image, letterbox_mask, resize_square, xywh_to_xyxy


def _to_tensor(canvas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(canvas, copy=True)).permute(2, 0, 1)  # (3, S, S) uint8; a memmap row copied


class ClsDataset(Dataset):
    """Classification crops resized to the canvas (size: N or (H, W)). Items: (image (3,H,W) uint8, label int).

    Args:
        cache_dir: decode every crop now into a memory-mapped cache there (None: lazily, in memory).
    """

    def __init__(self, samples: Sequence[ClsSample], size: Size, augment: Augment | None = None,
                 cache_dir: Path | None = None):
        self.samples, self.size, self.augment = list(samples), size, augment
        self._cache: dict[int, torch.Tensor] = {}
        self.cache_dir, self.disk = cache_dir, None

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, i: int) -> np.ndarray:
        return resize_square(read_image(self.samples[i].path), self.size)

    def prepare(self) -> CachedArrays | None:
        """Open (or first build) the disk cache; None without cache_dir. Called by the first item."""
        if self.disk is None and self.cache_dir is not None and self.samples:
            self.disk = cached_arrays(self.cache_dir, "cls", self.size, [(s.path,) for s in self.samples],
                                      {"resize": "square"}, lambda i: {"images": self._decode(i)})
        return self.disk

    def image(self, i: int) -> torch.Tensor:
        if self.prepare() is not None:
            return _to_tensor(self.disk.images[i])
        if i not in self._cache:
            self._cache[i] = _to_tensor(self._decode(i))
        return self._cache[i]

    def get(self, i: int, generator: torch.Generator | None = None):
        image = self.image(i)
        if self.augment is not None:
            image = augment_cls(image, self.augment, generator)
        return image, self.samples[i].label

    def __getitem__(self, i: int):
        return self.get(i)


class DetDataset(Dataset):
    """Letterboxed detection images (size: N or (H, W)). Items: (image (3,H,W) uint8, boxes (N,4) xyxy canvas px,
    labels (N,) index).

    Args:
        samples: DetSamples (COCO boxes in pixels of the original image).
        category_ids: the data set's COCO category ids; a label is its position in this list.
        cache_dir: decode every image now into a memory-mapped cache there (None: lazily, in memory).
    """

    def __init__(self, samples: Sequence[DetSample], size: Size, category_ids: Sequence[int],
                 augment: Augment | None = None, cache_dir: Path | None = None):
        self.samples, self.size, self.augment = list(samples), size, augment
        self.index = {c: i for i, c in enumerate(category_ids)}
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.cache_dir, self.disk = cache_dir, None

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, i: int) -> dict[str, np.ndarray]:
        canvas, box = letterbox_image(read_image(self.samples[i].path), self.size)
        return {"images": canvas, "extra": np.array([box.scale], np.float64)}

    def _labelled(self, i: int, canvas: np.ndarray, scale: float):
        s = self.samples[i]
        xyxy = xywh_to_xyxy(s.boxes) * np.float32(scale)
        labels = np.array([self.index[int(c)] for c in s.labels], np.int64)
        return _to_tensor(canvas), torch.from_numpy(xyxy), torch.from_numpy(labels)

    def prepare(self) -> CachedArrays | None:
        """Open (or first build) the disk cache; None without cache_dir. Called by the first item."""
        if self.disk is None and self.cache_dir is not None and self.samples:
            self.disk = cached_arrays(self.cache_dir, "det", self.size, [(s.path,) for s in self.samples],
                                      {"resize": "letterbox"}, self._decode)
        return self.disk

    def item(self, i: int):
        if self.prepare() is not None:
            return self._labelled(i, self.disk.images[i], float(self.disk.extra[i, 0]))
        if i not in self._cache:
            d = self._decode(i)
            self._cache[i] = self._labelled(i, d["images"], float(d["extra"][0]))
        return self._cache[i]

    def get(self, i: int, generator: torch.Generator | None = None):
        image, boxes, labels = self.item(i)
        if self.augment is not None:
            image, boxes, labels = augment_det(image, boxes, labels, self.augment, generator)
        return image, boxes, labels

    def __getitem__(self, i: int):
        return self.get(i)


class SegDataset(Dataset):
    """Letterboxed segmentation images (size: N or (H, W)). Items: (image (3,H,W) uint8, mask (H,W) int64,
    padding = ignore).

    Args:
        cache_dir: decode every image and mask now into a memory-mapped cache there (None: lazily, in memory).
    """

    def __init__(self, samples: Sequence[SegSample], size: Size, ignore_index: int = 255,
                 augment: Augment | None = None, cache_dir: Path | None = None):
        self.samples, self.size, self.augment, self.ignore_index = list(samples), size, augment, ignore_index
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}
        self.cache_dir, self.disk = cache_dir, None

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, i: int) -> dict[str, np.ndarray]:
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
        return {"images": canvas, "masks": letterbox_mask(mask, self.size, self.ignore_index),
                "extra": np.array([image.height, image.width], np.int64)}

    def prepare(self) -> CachedArrays | None:
        """Open (or first build) the disk cache; None without cache_dir. Called by the first item."""
        if self.disk is None and self.cache_dir is not None and self.samples:
            self.disk = cached_arrays(self.cache_dir, "seg", self.size, [(s.path, s.mask) for s in self.samples],
                                      {"resize": "letterbox", "ignore_index": self.ignore_index}, self._decode)
        return self.disk

    def item(self, i: int):
        if self.prepare() is not None:
            d = {"images": self.disk.images[i], "masks": self.disk.masks[i], "extra": self.disk.extra[i]}
        elif i in self._cache:
            return self._cache[i]
        else:
            d = self._decode(i)
        out = (_to_tensor(d["images"]), torch.from_numpy(np.array(d["masks"], np.int64)),
               (int(d["extra"][0]), int(d["extra"][1])))
        if self.disk is None:
            self._cache[i] = out
        return out

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of sample i's original image."""
        if self.prepare() is not None:
            return int(self.disk.extra[i, 0]), int(self.disk.extra[i, 1])
        return self.item(i)[2]

    def get(self, i: int, generator: torch.Generator | None = None):
        image, mask, _ = self.item(i)
        if self.augment is not None:
            image, mask = augment_seg(image, mask, self.augment, self.ignore_index, generator)
        return image, mask

    def __getitem__(self, i: int):
        return self.get(i)


def collate_det(batch):
    """Stack images; keep per-image boxes and labels as lists."""
    images, boxes, labels = zip(*batch)
    return torch.stack(images), list(boxes), list(labels)


def build_datasets(spec, split: str, sizes: dict[str, Size], train: bool = False,
                   augment: dict[str, Augment] | None = None, cache_dir: Path | None = None,
                   tasks: Sequence[str] = ("cls", "det", "seg")) -> dict:
    """The task datasets {"cls", "det", "seg"} (or those of `tasks`) of a DatasetSpec's split at the
    given input sizes.

    Args:
        train: augment the items (with `augment`, task -> Augment; default DEFAULT_AUGMENT).
        cache_dir: the decoded-image cache (workbench.data.image_cache); None: decode lazily in memory.
    """
    aug = (augment or DEFAULT_AUGMENT) if train else {}
    build = {
        "cls": lambda: ClsDataset(spec.cls_samples(split), sizes["cls"], aug.get("cls"), cache_dir),
        "det": lambda: DetDataset(spec.det_samples(split), sizes["det"], spec.det_category_ids, aug.get("det"),
                                  cache_dir),
        "seg": lambda: SegDataset(spec.seg_samples(split), sizes["seg"], spec.ignore_index, aug.get("seg"), cache_dir),
    }
    return {t: build[t]() for t in tasks}
