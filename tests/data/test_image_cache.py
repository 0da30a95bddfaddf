"""The decoded-image cache: the same pixels as decoding afresh, rebuilt when a source changes, written atomically."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.image_cache import cached_arrays
from workbench.data.loaders import build_datasets
from workbench.data.spec import DatasetSpec
from workbench.errors import DataError

SIZES = {"cls": 32, "det": 64, "seg": 64}


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny data set (the tests change its images)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data.parent, root)
    return root / tiny_data.name


def items(ds):
    """Every item of a data set without augmentation, as plain tensors."""
    out = []
    for i in range(len(ds)):
        item = ds.item(i) if hasattr(ds, "item") else (ds.image(i),)
        out.append([x for x in item if isinstance(x, torch.Tensor)] + [x for x in item if isinstance(x, tuple)])
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for xa, xb in zip(a, b):
        for ta, tb in zip(xa, xb):
            if isinstance(ta, torch.Tensor):
                assert ta.dtype == tb.dtype and torch.equal(ta, tb)
            else:
                assert ta == tb


@pytest.mark.parametrize("split", ["train", "test"])
def test_cached_items_equal_decoding_afresh(data, tmp_path, split):
    spec = DatasetSpec(data)
    fresh = build_datasets(spec, split, SIZES)
    cached = build_datasets(spec, split, SIZES, cache_dir=tmp_path / "cache")
    for task in ("cls", "det", "seg"):
        assert cached[task].prepare() is not None and not cached[task].disk.reused
        assert_same(items(cached[task]), items(fresh[task]))
        if task == "seg":
            assert [cached[task].image_size(i) for i in range(len(fresh[task]))] == \
                   [fresh[task].image_size(i) for i in range(len(fresh[task]))]
    again = build_datasets(spec, split, SIZES, cache_dir=tmp_path / "cache")
    assert all(again[t].prepare().reused for t in again)  # a second run decodes nothing
    assert_same(items(again["seg"]), items(fresh["seg"]))


def test_cache_is_rebuilt_after_a_source_image_changes(data, tmp_path):
    spec = DatasetSpec(data)
    root = tmp_path / "cache"
    first = build_datasets(spec, "train", SIZES, cache_dir=root)["seg"]
    folder = first.prepare().folder
    before = first.item(0)[0].clone()
    path = first.samples[0].path
    image = np.asarray(Image.open(path).convert("RGB"))
    Image.fromarray(255 - image).save(path)  # the same file, new pixels
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = build_datasets(spec, "train", SIZES, cache_dir=root)["seg"]
    assert not second.prepare().reused and second.disk.folder == folder  # rebuilt in place, nothing stale beside it
    assert not torch.equal(second.item(0)[0], before)
    assert_same(items(second), items(build_datasets(spec, "train", SIZES)["seg"]))
    assert sorted(p.name for p in root.iterdir() if p.suffix != ".lock") == [folder.name]  # (+ its empty lock file)
    other = build_datasets(spec, "train", {**SIZES, "seg": 96}, cache_dir=root)["seg"]
    assert other.prepare().folder != folder and other.item(0)[0].shape == (3, 96, 96)


def test_meta_records_size_on_disk(data, tmp_path):
    ds = build_datasets(DatasetSpec(data), "train", SIZES, cache_dir=tmp_path / "cache")["seg"]
    cache = ds.prepare()
    n = len(ds)
    expected = n * 64 * 64 * 3 + n * 64 * 64 + n * 2 * 8  # images uint8, masks uint8, (H, W) int64
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert cache.nbytes == meta["bytes"] == expected
    assert f"{expected / 2**20:.1f} MiB" in cache.describe()


def test_corrupt_image_names_the_file_and_leaves_no_cache(data, tmp_path):
    spec = DatasetSpec(data)
    ds = build_datasets(spec, "train", SIZES, cache_dir=tmp_path / "cache")["det"]
    bad = ds.samples[len(ds) // 2].path
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"{bad.name}: cannot read image"):
        ds.prepare()
    assert not (tmp_path / "cache").exists() or not any(p.name.startswith("det-") for p in (tmp_path / "cache").iterdir())


def test_damaged_cache_is_rebuilt(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("x")
    decode = lambda i: {"images": np.full((4, 4, 3), i + 1, np.uint8)}  # noqa: E731
    first = cached_arrays(tmp_path / "c", "cls", 4, [(src,)] * 3, {}, decode)
    (first.folder / "images.npy").write_bytes(b"truncated")
    second = cached_arrays(tmp_path / "c", "cls", 4, [(src,)] * 3, {}, decode)
    assert not second.reused and [int(second.images[i, 0, 0, 0]) for i in range(3)] == [1, 2, 3]


def _build_slowly(root, src, log, barrier, results):
    """One process of the race below: decode three images slowly, logging who decoded each."""
    import time

    def decode(i):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {i}\n")
        time.sleep(0.3)
        return {"images": np.full((4, 4, 3), i + 1, np.uint8)}

    barrier.wait()
    got = cached_arrays(root, "cls", 4, [(src,)] * 3, {}, decode, threads=1)
    results.put((os.getpid(), got.reused, [int(got.images[i, 0, 0, 0]) for i in range(3)]))


def test_processes_that_need_the_same_cache_decode_it_once(tmp_path):
    # torchrun ranks build the same folder at the same moment: one decodes, the other waits and reuses it
    # (without the wait both decoded and one failed renaming its copy onto the other's).
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    src = tmp_path / "a.txt"
    src.write_text("x")
    log = tmp_path / "decoded.log"
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_slowly, args=(tmp_path / "c", src, log, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    got = sorted(results.get(timeout=5) for _ in range(2))
    assert all(values == [1, 2, 3] for _, _, values in got)
    decoders = {line.split()[0] for line in log.read_text().splitlines()}
    assert len(log.read_text().splitlines()) == 3 and len(decoders) == 1
    assert sorted(reused for _, reused, _ in got) == [False, True]
    assert str(next(pid for pid, reused, _ in got if not reused)) in decoders
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]
