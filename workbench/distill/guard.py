"""The guard against pseudo-labelling test images: compared by content (sha256), whatever their names."""
from __future__ import annotations

from pathlib import Path

from workbench.data.spec import DatasetSpec, list_images
from workbench.distill.config import DistillError
from workbench.errors import WorkbenchError
from workbench.io import hash_file
from workbench.records.tasks import TASKS


def content_hashes(paths) -> dict[str, Path]:
    """sha256 of each file's bytes -> its path."""
    return {hash_file(p): Path(p) for p in paths}


def test_image_hashes(spec: DatasetSpec) -> dict[str, Path]:
    """sha256 -> path of every test image of every task (images only: no labels are read)."""
    out = {}
    for task in TASKS:
        try:
            folder = spec.split_paths(task, "test")
        except WorkbenchError:
            continue
        out.update(content_hashes(list_images(folder)))
    return out


def guard_against_test(spec: DatasetSpec, images: list[Path], allow_test: bool) -> list[str]:
    """Refuse unlabelled images whose content is a test image's (by hash, not name).

    Returns:
        Warnings (one per such image) when `allow_test`; raises DistillError otherwise.
    """
    test = test_image_hashes(spec)
    clashes = [(p, test[h]) for h, p in content_hashes(images).items() if h in test]
    if not clashes:
        return []
    lines = [f"{p} is the test image {t}" for p, t in sorted(clashes)]
    if not allow_test:
        raise DistillError(f"{len(clashes)} unlabelled image(s) are test images ({lines[0]}"
                           f"{' ...' if len(lines) > 1 else ''}): pseudo-labelling the test split is "
                           "against competition rules; --allow-test overrides")
    return [f"pseudo-labelled a test image: {line}" for line in lines]
