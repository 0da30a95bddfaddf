"""Faults a team hits in a long competition (issue 19): each ends in one clear line or a correct result,
nothing written outside its folder. The start of the fault suite: names that would escape their folder."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import mtwb_here
from workbench.distill.config import DistillConfig
from workbench.errors import WorkbenchError, check_name
from workbench.records.ensemble import EnsembleSpec
from workbench.submit.submission import SubmitConfig
from workbench.train.trainer import TrainConfig

ESCAPES = ["../../escape", "a/b", "/abs", "..", ".", "", ".hidden", "a\\b", " padded", "nul\0"]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_name_is_one_folder_name(name):
    with pytest.raises(WorkbenchError, match="a name is one folder name"):
        check_name(name)


@pytest.mark.parametrize("name", ["lite0", "joint-lite0_s1", "a@hflip", "v1.2"])
def test_ordinary_names_pass(name):
    assert check_name(name) == name


def test_every_writer_checks_its_name(tiny_data):
    member = {"members": [{"member": "a", "weight": 1.0}]}
    spec = EnsembleSpec.from_dict({"tasks": {"cls": member, "det": member, "seg": member}})
    for make in (lambda n: TrainConfig(data=str(tiny_data), backbone="resnet10t", name=n),
                 lambda n: SubmitConfig(spec, str(tiny_data), n),
                 lambda n: DistillConfig(spec, str(tiny_data), n)):
        with pytest.raises(WorkbenchError, match="'../x': a name is one folder name"):
            make("../x")


@pytest.mark.parametrize("command", [["train", "joint", "--backbone", "resnet10t"], ["submit", "r"]])
def test_cli_refuses_an_escaping_name_and_writes_nothing(command, tiny_data, tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "workbench", *command, "--data", str(tiny_data), "--name",
                           "../../escape"], capture_output=True, text=True, cwd=work)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: --name '../../escape': a name is one folder name (letters, digits, '-', "
                                   "'_', '@', '.'; no '/', no leading '.', no surrounding spaces)")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]  # nothing written anywhere


# -- half-made and replaced runs ----------------------------------------------------------------
def tiny_train(tiny_data, name, *extra) -> list[str]:
    return ["train", "joint", "--data", str(tiny_data), "--backbone", "resnet10t", "--epochs", "1", "--steps-per-epoch",
            "2", "--img-size", "32", "--batch-size", "2", "--device", "cpu", "--name", name, *extra]


def mtwb(args, cwd) -> subprocess.CompletedProcess:
    return mtwb_here(args, cwd)  # in this process: the same exit code and lines, without a new process's start-up


def test_a_refused_run_leaves_no_folder_and_an_overwrite_keeps_the_old_run(tiny_data, tmp_path):
    from safetensors.torch import save_file
    import torch
    save_file({"x": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))  # weights of no resnet10t
    proc = mtwb(tiny_train(tiny_data, "r", "--pretrained", "wrong.safetensors"), tmp_path)
    assert proc.returncode == 1 and "weights do not fit resnet10t" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs" / "r").exists()  # refused inside the trainer: the folder it made is gone
    assert mtwb(tiny_train(tiny_data, "r"), tmp_path).returncode == 0  # the corrected retry is not "already exists"
    before = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "r").iterdir() if p.is_file()}
    proc = mtwb(tiny_train(tiny_data, "r", "--pretrained", "wrong.safetensors", "--overwrite"), tmp_path)
    assert proc.returncode == 1
    after = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "r").iterdir() if p.is_file()}
    assert after == before  # the run it was to replace is back, byte for byte
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".") and p.name != ".cache"] == []


@pytest.mark.parametrize("stopped_at_step", [1, 3])
def test_an_overwrite_stopped_before_its_first_checkpoint_puts_the_old_run_back(tiny_data, tmp_path, monkeypatch,
                                                                                 capfd, stopped_at_step):
    """Ctrl-C in an --overwrite run: before its first checkpoint (end of epoch 1 = step 2) the new run has
    nothing to resume and the run it was to replace comes back byte for byte; after it the new run stays
    (interrupted, resumable) and the old one is gone. Either way nothing is left beside them."""
    import json
    from tests.conftest import tiny_train_config
    from workbench.train.trainer import Trainer, train
    runs = tmp_path / "runs"
    train(tiny_train_config(tiny_data, runs, "r"), progress=False)
    before = {p.name: p.read_bytes() for p in (runs / "r").rglob("*") if p.is_file()}
    step = Trainer.train_step
    calls = []

    def stopping(self, *a, **kw):
        calls.append(1)
        if len(calls) == stopped_at_step:
            raise KeyboardInterrupt
        return step(self, *a, **kw)
    monkeypatch.setattr(Trainer, "train_step", stopping)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(tiny_data, runs, "r", epochs=2, seed=1), overwrite=True, progress=False)
    after = {p.name: p.read_bytes() for p in (runs / "r").rglob("*") if p.is_file()}
    assert sorted(p.name for p in runs.iterdir() if p.name != ".cache") == ["r"]
    if stopped_at_step == 1:
        assert after == before
        assert capfd.readouterr().err.strip().splitlines()[-1] == (
            f"{runs / 'r'}: stopped before its first checkpoint; the run it was to replace is back")
    else:
        assert json.loads(after["run.json"])["status"] == "interrupted" and "state.pt" in after
        assert after["config.yaml"] != before["config.yaml"]  # the new run's, to resume


@pytest.mark.parametrize("killed_while", ["training", "building"])
def test_resume_before_the_first_checkpoint_starts_again(tiny_data, tmp_path, killed_while):
    import json
    from safetensors.torch import load_file
    assert mtwb(tiny_train(tiny_data, "whole"), tmp_path).returncode == 0
    assert mtwb(tiny_train(tiny_data, "cut"), tmp_path).returncode == 0
    cut = tmp_path / "runs" / "cut"
    # what a kill before the end of the first epoch leaves: config.yaml and (once the trainer was built) run.json
    for p in cut.iterdir():
        if p.name not in ("config.yaml", "run.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if killed_while == "building":
        (cut / "run.json").unlink()
    else:
        info = json.loads((cut / "run.json").read_text())
        (cut / "run.json").write_text(json.dumps({**info, "status": "running"}))
    proc = mtwb(["train", "--resume", "cut"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no checkpoint yet (state.pt is written at the end of the first epoch): starting again from step 0" in proc.stdout
    whole, again = (load_file(str(tmp_path / "runs" / n / "model.safetensors")) for n in ("whole", "cut"))
    assert set(whole) == set(again) and all(torch_equal(whole[k], again[k]) for k in whole)
    info = json.loads((cut / "run.json").read_text())
    assert info["status"] == "complete" and info["kind"] == "joint"


def torch_equal(a, b) -> bool:
    import torch
    return bool(torch.equal(a, b))
