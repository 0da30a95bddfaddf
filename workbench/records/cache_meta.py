"""The CacheMeta record: `meta.json` of a prediction cache entry `runs/<run>/preds/<split>/<tta-key>/`.

An entry is reused only when its identity (checkpoint hash, split, TTA key, data fingerprint and
cache version) equals the request's; `cache_version` is the record's version: an entry written under
another one is rebuilt, not trusted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from workbench.errors import DataError
from workbench.io import load_json, write_json

# Bumped whenever what an entry holds changes meaning (decoding, view geometry, storage).
CACHE_VERSION = 2
FILE = "meta.json"
IDENTITY = ("checkpoint", "split", "tta", "data", "cache_version", "precision", "backend")


@dataclass(frozen=True)
class CacheMeta:
    """What a prediction cache entry holds and what it was made from.

    Attributes:
        checkpoint: sha256 of the run's weights file.
        split: train, val, test or unlabeled.
        tta: the TTA key (the entry's folder name).
        data: fingerprint of the split's images (names and byte sizes).
        cache_version: CACHE_VERSION when written.
        run: the run id; data_file: the dataset.yaml; tta_spec: the TTA text asked for.
        views: task -> the keys of its views; images: task -> image names in order; tasks: the
            tasks predicted; sizes: task -> image name -> [H, W] of the original image.
        device, timings (seconds per task), ms_per_image (per task).
    """

    checkpoint: str
    split: str
    tta: str
    data: str
    cache_version: int = CACHE_VERSION
    run: str = ""
    data_file: str = ""
    tta_spec: str = "none"
    views: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    tasks: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    seg_logits: str = "float16 at ceil(H/4) x ceil(W/4) of the original image"
    device: str = ""
    timings: dict = field(default_factory=dict)
    ms_per_image: dict = field(default_factory=dict)
    precision: str = "fp32"  # the autocast of the forward passes (fp32, bf16, fp16)
    backend: str = "torch"  # or "onnxruntime": the run's ONNX export (`mtwb export`) ran the forward passes

    def identity(self) -> tuple:
        """What must match for the entry to be reused."""
        return tuple(getattr(self, k) for k in IDENTITY)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = FILE) -> "CacheMeta":
        """Build from meta.json's content; unknown keys are ignored (an older or newer writer).

        Raises:
            DataError: not an object, or an identity key missing.
        """
        if not isinstance(d, dict):
            raise DataError(source, "meta.json is not an object")
        d = {"precision": "fp32", "backend": "torch", **d}  # entries older than precisions / backends
        missing = [k for k in IDENTITY if k not in d]
        if missing:
            raise DataError(source, f"meta.json lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def read(cls, folder: Path) -> "CacheMeta":
        """Read `folder`/meta.json.

        Raises:
            DataError: missing, not JSON, or not a cache meta (the message names the file).
        """
        path = Path(folder) / FILE
        if not path.is_file():
            raise DataError(path, "cache entry has no meta.json")
        return cls.from_dict(load_json(path), path)

    def write(self, folder: Path) -> None:
        """Write `folder`/meta.json atomically."""
        write_json(Path(folder) / FILE, self.to_dict())
