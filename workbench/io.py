"""Files on the ground floor: atomic writes (everything under runs/ and submissions/ goes through here), JSON and YAML, hashes, masks."""
from __future__ import annotations

import csv
import errno
import io
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml
from PIL import Image

from workbench.errors import DataError, StorageError

# errors of the storage rather than of the program: turned into one line naming what was being written
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def storage_error(e: OSError, path: Path) -> StorageError:
    """The one-line error of a failed write of `path`."""
    return StorageError(f"cannot write {path}: {e.strerror or e} (nothing partial was left)")


@contextmanager
def _storage(path: Path) -> Iterator[None]:
    """Turn a storage OSError (disk full, permission, read-only) raised in the block into a StorageError."""
    try:
        yield
    except OSError as e:
        if e.errno in STORAGE_ERRNOS:
            raise storage_error(e, path) from None
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with _storage(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with _storage(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (old content removed)."""
    path = Path(path)
    with _storage(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with _storage(path):
            yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def csv_text(rows: list[dict]) -> str:
    """Rows (dicts) as CSV text: a header of every key in first-seen order, a line per row."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_json(path: str | Path, obj) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path: str | Path, obj) -> None:
    """Write YAML atomically."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | Path):
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel PNG mask of class indices as (H, W) uint8."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(path, f"mask must be single-channel (mode L or P), got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(path, "mask not found") from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"cannot read mask ({type(e).__name__}: {e})") from None


def load_json(path: str | Path):
    """Load a JSON file, rejecting duplicate object keys (json.load would keep the last silently).

    Raises:
        DataError: missing file, bad JSON, or an object with repeated keys (named in the message).
    """
    def no_duplicates(pairs):
        seen, dups = {}, []
        for key, value in pairs:
            if key in seen:
                dups.append(key)
            seen[key] = value
        if dups:
            raise _DuplicateKeys(dups)
        return seen

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path) as f:
            return json.load(f, object_pairs_hook=no_duplicates)
    except _DuplicateKeys as e:
        raise DataError(path, "\n".join(f"{k}: appears more than once (duplicate image?)" for k in e.keys)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


class _DuplicateKeys(Exception):
    def __init__(self, keys: list[str]):
        self.keys = keys
