"""Pseudo-labelled training sets with the teacher's soft targets (written by `workbench.distill`).

- cls: the ImageFolder of the pseudo data set (argmax labels) plus `soft_cls.npz` (names, probs):
  items (image, teacher probabilities (K,)).
- seg: images, argmax masks (low-confidence pixels = ignore) plus `soft_seg.npz` (name -> logits at
  ceil(H/4) x ceil(W/4)): items (image, mask, teacher probabilities (K, S/4, S/4) on the letterboxed
  canvas, all zero in the padding). Only horizontal flips and colour are applied, to image, mask
  and soft target alike.
- det: the pseudo data set's COCO boxes are hard labels; the ordinary DetDataset reads them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from workbench.data.augment import Augment, augment_cls, augment_seg
from workbench.data.loaders import ClsDataset, DetDataset, SegDataset
from workbench.data.spec import DatasetSpec
from workbench.data.transforms import Letterbox, Size, canvas_hw
from workbench.errors import DataError
from workbench.records.tasks import DET_STRIDE

SEG_AUGMENT = Augment(colour=0.2)


def _load_npz(path: Path):
    if not path.is_file():
        raise DataError(path, "soft-label file not found (write the pseudo data set with `mtwb distill`)")
    return np.load(path)


class SoftClsDataset(Dataset):
    """Pseudo-labelled crops with the teacher's class probabilities. Items: (image uint8, probs float32)."""

    def __init__(self, spec: DatasetSpec, size: int, augment: Augment | None, cache_dir: Path | None = None):
        self.base = ClsDataset(spec.cls_samples("train"), size, None, cache_dir)
        self.augment = augment
        z = _load_npz(spec.root / "soft_cls.npz")
        probs = {str(n): p for n, p in zip(z["names"], z["probs"])}
        missing = [s.name for s in self.base.samples if s.name not in probs]
        if missing:
            raise DataError(spec.root / "soft_cls.npz", f"no soft label for {missing[0]}")
        self.probs = [torch.from_numpy(probs[s.name].astype(np.float32)) for s in self.base.samples]

    def __len__(self) -> int:
        return len(self.base)

    def prepare(self):
        return self.base.prepare()

    def get(self, i: int, generator: torch.Generator | None = None):
        image = self.base.image(i)
        if self.augment is not None:
            image = augment_cls(image, self.augment, generator)
        return image, self.probs[i]

    def __getitem__(self, i: int):
        return self.get(i)


def letterbox_soft(logits: np.ndarray, height: int, width: int, size: Size) -> torch.Tensor:
    """Teacher logits (K, ceil(H/4), ceil(W/4)) of an (H, W) image -> probabilities (K, CH/4, CW/4) on
    the letterboxed canvas of `size` (N or (CH, CW); zeros in the padding)."""
    probs = torch.softmax(torch.from_numpy(logits.astype(np.float32)), dim=0)[None]
    h, w = Letterbox(height, width, size).inner
    canvas = torch.zeros(1, probs.shape[1], *canvas_hw(size))
    canvas[..., :h, :w] = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
    return F.avg_pool2d(canvas, DET_STRIDE)[0]


class SoftSegDataset(Dataset):
    """Pseudo-labelled scenes. Items: (image uint8 (3,S,S), mask int64 (S,S), soft (K,S/4,S/4) float32)."""

    def __init__(self, spec: DatasetSpec, size: int, ignore_index: int, hflip: float = 0.5,
                 cache_dir: Path | None = None):
        self.base = SegDataset(spec.seg_samples("train"), size, ignore_index, None, cache_dir)
        self.hflip, self.ignore_index = hflip, ignore_index
        z = _load_npz(spec.root / "soft_seg.npz")
        names = set(z.files)
        missing = [s.name for s in self.base.samples if s.name not in names]
        if missing:
            raise DataError(spec.root / "soft_seg.npz", f"no soft label for {missing[0]}")
        self._z, self._soft = z, {}

    def __len__(self) -> int:
        return len(self.base)

    def soft(self, i: int) -> torch.Tensor:
        if i not in self._soft:
            h, w = self.base.image_size(i)
            self._soft[i] = letterbox_soft(self._z[self.base.samples[i].name], h, w, self.base.size)
        return self._soft[i]

    def prepare(self):
        return self.base.prepare()

    def get(self, i: int, generator: torch.Generator | None = None):
        image, mask, _ = self.base.item(i)
        soft = self.soft(i)
        if torch.rand(1, generator=generator).item() < self.hflip:
            image, mask, soft = image.flip(-1), mask.flip(-1), soft.flip(-1)
        image, mask = augment_seg(image, mask, SEG_AUGMENT, self.ignore_index, generator)
        return image, mask, soft

    def __getitem__(self, i: int):
        return self.get(i)


def build_pseudo_datasets(path: str, sizes: dict[str, int], category_ids, ignore_index: int,
                          augment: dict[str, Augment], cache_dir: Path | None = None) -> dict:
    """The pseudo-labelled training sets of a pseudo data set (tasks with no image are left out).

    Args:
        cache_dir: the decoded-image cache (workbench.data.image_cache); None: decode lazily in memory.
    """
    spec = DatasetSpec(path)
    build = {"cls": lambda: SoftClsDataset(spec, sizes["cls"], augment.get("cls"), cache_dir),
             "det": lambda: DetDataset(spec.det_samples("train"), sizes["det"], category_ids, augment.get("det"),
                                       cache_dir),
             "seg": lambda: SoftSegDataset(spec, sizes["seg"], ignore_index, cache_dir=cache_dir)}
    out = {t: make() for t, make in build.items() if spec.has_split(t, "train")}  # no train entry: no image routed
    return {t: ds for t, ds in out.items() if len(ds)}
