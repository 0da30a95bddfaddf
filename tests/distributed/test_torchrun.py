"""Several processes under torchrun (gloo on this CPU): the single-process math with the global batch,
one prediction cache entry, a lost rank, and the CUDA-only paths (skipped here)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.records.predictions import Predictions
from workbench.train.trainer import resume

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], n: int = 2, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """resnet10t's own initial weights as a "pretrained" file (frozen statistics need one)."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r10.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}, str(path))
    return str(path)


def steps(tiny_data, tmp_path, pretrained, name: str, world: int, *extra: str) -> dict:
    out = tmp_path / f"{name}.pt"
    args = [str(HERE / "steps_script.py"), str(tiny_data), str(tmp_path / name), pretrained, str(out), "3", *extra]
    if world == 1:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    else:
        done = torchrun(args, world)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


def elements_apart(a: dict, b: dict, tol: float) -> tuple[int, int]:
    """(how many floating-point elements of state dicts a and b differ by more than tol, how many there are)."""
    pairs = [(a[k].float(), b[k].float()) for k in a if a[k].is_floating_point()]
    return sum(int(((x - y).abs() > tol).sum()) for x, y in pairs), sum(x.numel() for x, _ in pairs)


def test_two_processes_take_the_single_process_steps(tiny_data, tmp_path, pretrained):
    """3 joint steps (task clipping), global batches cls 8 / det 4 / seg 4: two ranks of half batches
    each must end where one process ends, to float32 rounding of sums in another order (frozen BatchNorm
    statistics: each image's forward does not depend on the rest of its batch). Without the gradient
    all-reduce each rank steps on its own half: clearly elsewhere."""
    one = steps(tiny_data, tmp_path, pretrained, "one", 1)
    two = steps(tiny_data, tmp_path, pretrained, "two", 2)
    alone = steps(tiny_data, tmp_path, pretrained, "alone", 2, "skip-allreduce")
    assert two["world"] == 2 and one["world"] == 1
    for r1, r2 in zip(one["rows"], two["rows"]):  # the global losses and task gradient norms, logged alike
        for key in ("loss_cls", "loss_det", "loss_seg", "grad_cls", "grad_det", "grad_seg"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), key
    # AdamW divides a step by the gradient's own size, so an element whose gradient is float32 rounding away from
    # 0 may step differently: on an Intel Xeon 4 of resnet10t's 5,023,617 weights ended more than 1e-5 apart (the
    # largest 1.5e-4, 24 more than 1e-6), on an AMD EPYC none. Without the all-reduce most of them are.
    apart, total = elements_apart(one["state"], two["state"], 1e-5)
    assert apart <= total * 1e-5
    apart, total = elements_apart(one["state"], alone["state"], 1e-5)
    assert apart > total / 2


def test_predict_with_two_ranks_writes_the_single_process_entry(tiny_data, tiny_run, tmp_path):
    import shutil
    copies = {}
    for name in ("one", "two"):
        copies[name] = tmp_path / name / tiny_run.name
        shutil.copytree(tiny_run, copies[name], ignore=shutil.ignore_patterns("preds"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    predict = ["predict", "--data", str(tiny_data), "--device", "cpu"]
    done = subprocess.run([sys.executable, "-m", "workbench", predict[0], str(copies["one"]), *predict[1:]],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = torchrun(["-m", "workbench", predict[0], str(copies["two"]), *predict[1:]])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # rank 0 alone prints
    metas = {k: json.loads((p / "preds" / "val" / "none" / "meta.json").read_text()) for k, p in copies.items()}
    for key in ("checkpoint", "split", "tta", "data", "precision", "images", "tasks", "sizes", "views"):
        assert metas["two"][key] == metas["one"][key], key
    preds = {k: Predictions.load(p / "preds" / "val" / "none", metas[k]["sizes"]) for k, p in copies.items()}
    a, b = preds["one"], preds["two"]
    assert list(a.cls) == list(b.cls) and list(a.det) == list(b.det) and list(a.seg) == list(b.seg)
    for n in a.cls:
        np.testing.assert_allclose(b.cls[n], a.cls[n], atol=1e-5)
    for n in a.det:
        np.testing.assert_allclose(b.det[n].boxes, a.det[n].boxes, atol=1e-5)
        np.testing.assert_array_equal(b.det[n].labels, a.det[n].labels)
    for n in a.seg:  # float16 logits: another batch composition may round one step apart
        np.testing.assert_allclose(b.seg[n].astype(np.float32), a.seg[n].astype(np.float32), atol=2e-2, rtol=1e-2)


KILL = """
import os, signal, sys
from workbench.cli import run
from workbench.train import trainer as t
step = t.Trainer.train_step
def dying(self, *a, **k):
    if self.dist.rank == 1 and self.step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *a, **k)
t.Trainer.train_step = dying
sys.argv = ["mtwb", *sys.argv[1:]]
run()
"""


def test_a_rank_that_dies_stops_the_job_and_one_process_resumes_it(tiny_data, tmp_path):
    """Rank 1 is killed in epoch 2 (step 4 of 2 x 3): the job exits non-zero naming the failure; the run
    folder holds epoch 1's checkpoint and `resume` in ONE process finishes it."""
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    done = torchrun([str(script), "train", "joint", "--data", str(tiny_data), "--backbone", "resnet10t",
                     "--img-size", "cls=32,det=64,seg=64", "--batch-size", "cls=8,det=4,seg=4", "--epochs", "2",
                     "--steps-per-epoch", "3", "--device", "cpu", "--name", "killed"],
                    cwd=tmp_path)
    assert done.returncode != 0
    assert "rank" in done.stderr and ("resume" in done.stderr or "exitcode" in done.stderr), done.stderr[-3000:]
    run = tmp_path / "runs" / "killed"
    assert json.loads((run / "run.json").read_text())["status"] != "complete"
    assert (run / "state.pt").is_file()
    resume(run, progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 6


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA devices (this machine has none): nccl")
def test_nccl_on_two_gpus_takes_the_single_process_steps(tiny_data, tmp_path, pretrained):
    one = steps(tiny_data, tmp_path, pretrained, "one", 1, "cuda")
    two = steps(tiny_data, tmp_path, pretrained, "two", 2, "cuda")
    apart, total = elements_apart(one["state"], two["state"], 1e-4)
    assert apart <= total * 1e-5
