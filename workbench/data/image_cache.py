"""Decoded images on disk: each data set's images decoded and resized once, then memory-mapped.

Decoding a JPEG and resizing it costs more than augmenting and batching the result, and every run,
every prediction and every worker process of a data set at one input size decodes the same images.
`cached_arrays` decodes them once (in threads: PIL releases the GIL) into uint8 arrays at the
network's input size, kept in one folder per (task, size, images):

    <root>/<task>-<size>-<digest of the file paths>/
        images.npy   (N, S, S, 3) uint8 canvases
        masks.npy    (N, S, S) uint8 letterboxed masks (seg)
        extra.npy    per-image numbers the canvas alone loses (det: letterbox scale; seg: original H, W)
        meta.json    version, the fingerprint of the sources, the size in bytes

and opens them memory-mapped (`np.load(mmap_mode="r")`: the page cache is shared between processes,
nothing is read twice). The fingerprint covers every source file's path, byte size and modification
time plus the decoding parameters, so a changed, added or removed image, another size or another
ignore index rebuilds the folder; the rebuild is written beside it and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from workbench.errors import DataError
from workbench.data.transforms import canvas_hw, size_label
from workbench.io import atomic_dir
from workbench.locks import waiting

VERSION = 1
ARRAYS = ("images", "masks", "extra")


@dataclass(frozen=True)
class CachedArrays:
    """One cache folder, open. `images` (and `masks`, `extra` where built) are read-only memmaps."""

    folder: Path
    images: np.ndarray
    masks: np.ndarray | None
    extra: np.ndarray | None
    nbytes: int
    reused: bool  # False: decoded now
    seconds: float  # to open (reused) or to decode and write (built)

    def describe(self) -> str:
        how = "reused" if self.reused else f"built in {self.seconds:.1f} s"
        return f"{self.folder} ({self.nbytes / 2**20:.1f} MiB, {len(self.images)} images, {how})"


def cache_root(runs_dir: str | Path) -> Path:
    """Where training and prediction cache decoded images: `<runs_dir>/.cache/images` (`mtwb runs` skips it)."""
    return Path(runs_dir) / ".cache" / "images"


def fingerprint(sources: Sequence[Sequence[Path | None]], params: dict) -> str:
    """sha1 of each sample's source files (path, bytes, mtime in ns) and the decoding parameters.

    Raises:
        DataError: a source file is missing (named).
    """
    digest = hashlib.sha1(json.dumps({"version": VERSION, **params}, sort_keys=True).encode())
    for files in sources:
        for path in files:
            if path is None:
                digest.update(b"-\n")
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise DataError(path, "image not found") from None
            digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_folder(root: Path, task: str, size, sources: Sequence[Sequence[Path | None]]) -> Path:
    """The folder of one data set's images: named by task, size and the digest of the file paths (not
    their contents, so an edited image rebuilds this folder instead of leaving a stale one behind)."""
    paths = hashlib.sha1("\n".join(os.path.abspath(p) for files in sources for p in files if p).encode())
    return Path(root) / f"{task}-{size_label(size)}-{paths.hexdigest()[:12]}"


def _open(folder: Path) -> dict[str, np.ndarray]:
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS if (folder / f"{name}.npy").is_file()}


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def cached_arrays(root: Path, task: str, size, sources: Sequence[Sequence[Path | None]], params: dict,
                  decode: Callable[[int], dict[str, np.ndarray]], threads: int | None = None) -> CachedArrays:
    """Open a data set's decoded arrays, decoding them first if the cache is missing or stale.

    Args:
        root: the cache root (e.g. runs/.cache/images).
        task, size: name the folder (with the digest of the paths).
        sources: per sample, the files its arrays are made from (image, mask or None).
        params: everything else the arrays depend on (how they are resized, the ignore index, ...).
        decode: i -> {"images": (S, S, 3) uint8, optional "masks": (S, S) uint8, optional "extra": (k,)}.
        threads: decoding threads (default: the CPU count).

    Raises:
        DataError: a source image is missing or cannot be decoded (named, from `decode`).
    """
    t0 = time.perf_counter()
    n = len(sources)
    folder = cache_folder(root, task, size, sources)
    key = fingerprint(sources, {"task": task, "size": size if isinstance(size, int) else list(canvas_hw(size)),
                                **params})
    reused = _reuse(folder, key, n, t0)
    if reused is not None:
        return reused
    if n == 0:
        raise DataError(folder, "no images to cache")
    # Processes that need the same folder (torchrun ranks, two predictions at once) take turns: the
    # first decodes, the others wait and then find the folder built. Unlocked, two builders raced to
    # rename their copies into place and a reader could open the folder while it was swapped.
    with waiting(folder.with_name(f".{folder.name}.lock")):
        reused = _reuse(folder, key, n, t0)
        if reused is not None:
            return reused
        return _build(folder, key, n, task, size, params, decode, threads, t0)


def _reuse(folder: Path, key: str, n: int, t0: float) -> CachedArrays | None:
    """The folder opened, if it holds these `n` images decoded with fingerprint `key`; else None."""
    meta = _read_meta(folder)
    if meta is not None and meta.get("fingerprint") == key and meta.get("version") == VERSION:
        try:
            arrays = _open(folder)
            if len(arrays.get("images", ())) == n:
                return CachedArrays(folder, arrays["images"], arrays.get("masks"), arrays.get("extra"),
                                    int(meta["bytes"]), True, time.perf_counter() - t0)
        except (OSError, ValueError, KeyError):
            pass  # a damaged folder is rebuilt
    return None


def _build(folder: Path, key: str, n: int, task: str, size, params: dict,
           decode: Callable[[int], dict[str, np.ndarray]], threads: int | None, t0: float) -> CachedArrays:
    first = decode(0)
    with atomic_dir(folder) as tmp:
        out = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=a.dtype, shape=(n, *a.shape))
               for name, a in first.items()}

        def fill(i: int) -> None:
            item = first if i == 0 else decode(i)
            for name, a in item.items():
                out[name][i] = a

        with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
            list(pool.map(fill, range(n)))  # list(): re-raise the first decoding error
        for a in out.values():
            a.flush()
        nbytes = sum(a.nbytes for a in out.values())
        out.clear()  # close the memmaps before the folder is renamed
        (tmp / "meta.json").write_text(json.dumps({"version": VERSION, "task": task, "size": size, "images": n,
                                                   "fingerprint": key, "bytes": nbytes, **params}, indent=1))
    arrays = _open(folder)
    return CachedArrays(folder, arrays["images"], arrays.get("masks"), arrays.get("extra"), nbytes, False,
                        time.perf_counter() - t0)
