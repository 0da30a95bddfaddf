"""Shared fixtures: a tiny synthetic data set and one tiny trained run, built once per session."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.data.synth import make_synth_dataset
from workbench.train.trainer import TrainConfig, train as train_joint

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAFFIC = SHARED / "data" / "traffic" / "dataset.yaml"

TINY_SIZES = {"cls": 32, "det": 64, "seg": 64}
TINY_BATCH = {"cls": 8, "det": 4, "seg": 4}


def tiny_train_config(data: Path, runs: Path, name: str, backbone: str = "resnet10t", **kw) -> TrainConfig:
    """A joint run of a few optimizer steps on 32-64 px images: seconds on a CPU. Round-robin sampling (a
    batch of every task each step, what most tests of a step look at) unless `sampling` is given."""
    if "sampling" not in kw and kw.get("recipe", "joint") == "joint" and not kw.get("affinity_every"):
        kw["sampling"] = "round-robin"
    return TrainConfig(data=str(data), backbone=backbone, epochs=kw.pop("epochs", 1), img_size=dict(TINY_SIZES),
                       batch_size=dict(TINY_BATCH), steps_per_epoch=kw.pop("steps_per_epoch", 2), name=name,
                       runs_dir=str(runs), device="cpu", neck_channels=16, **kw)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """dataset.yaml of the tiny synthetic data set (8 cls classes, 3 det categories, 7 seg classes)."""
    return make_synth_dataset(tmp_path_factory.mktemp("data") / "tiny", seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """Folder of a finished tiny joint run (resnet10t, 2 steps)."""
    runs = tmp_path_factory.mktemp("runs")
    return train_joint(tiny_train_config(tiny_data, runs, "tiny-r10"), progress=False)


def mtwb_here(args, cwd) -> subprocess.CompletedProcess:
    """`mtwb ARGS` run in this process, in folder `cwd` (without the 3 s a new process spends importing
    torch): its exit code, stdout and stderr, as subprocess.run would give them."""
    from workbench.cli import run
    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = ["mtwb", *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        os.chdir(here)
        sys.argv = argv
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
