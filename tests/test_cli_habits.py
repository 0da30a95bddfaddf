"""What a timm / ultralytics user expects of a command line (issue 18): a start without torch, -h and
--version, a config file with command-line overrides, one-line device errors, "did you mean", progress
lines in logs."""
from __future__ import annotations

import csv
import io
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from tests.conftest import mtwb_here
from workbench.cli import main
from workbench.errors import DataError, RunError
from workbench.progress import Progress, duration
from workbench.records.ensemble import EnsembleSpec
from workbench.runs import open_run
from workbench.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def here(*args, cwd: Path) -> subprocess.CompletedProcess:
    """As `cli`, in this process (tests/conftest.py mtwb_here): the same lines, without the start-up."""
    return mtwb_here(args, cwd)


def test_the_cli_module_starts_without_torch():
    # `mtwb --help`, `mtwb runs` and completion import workbench.cli: torch (2 s) and torchvision only load in
    # the commands that need them
    code = ("import sys, workbench.cli; heavy = [m for m in ('torch', 'torchvision', 'timm', 'pandas', 'sklearn', "
            "'scipy', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_command_name_collides_with_nothing_common():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "mtwb" and project["scripts"] == {"mtwb": "workbench.cli:run"}  # wandb installs `wb`
    # ranges for users with their own torch; the exact builds of these machines in constraints.txt
    deps = {d.split(">")[0].split("=")[0].split("<")[0]: d for d in project["dependencies"]}
    assert "==" not in deps["torch"] and "==" not in deps["torchvision"]
    pins = (ROOT / "constraints.txt").read_text().split()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_short_help_and_version():
    runner = CliRunner()
    assert runner.invoke(main, ["train", "joint", "-h"]).output.startswith("Usage: main train joint [OPTIONS]")
    from importlib.metadata import version
    out = runner.invoke(main, ["--version"]).output
    assert out.strip() == f"mtwb, version {version('mtwb')}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_one_line_and_makes_no_run(tiny_data, tmp_path):
    proc = cli("train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--device", "cuda", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: --device cuda: no CUDA device on this machine (torch {torch.__version__}); "
                                   "use --device cpu or auto")
    assert not (tmp_path / "runs").exists()
    proc = cli("train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--device", "gpu0", cwd=tmp_path)
    assert proc.stderr.strip() == "error: --device 'gpu0': not a device name (auto, cpu, cuda, cuda:N, mps)"


def test_chosen_device_is_printed(tiny_data, tmp_path):
    proc = cli("train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--epochs", "1", "--steps-per-epoch",
               "1", "--img-size", "32", "--batch-size", "2", "--device", "auto", "--name", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"device: cpu ({torch.get_num_threads()} threads), precision fp32" in proc.stdout.splitlines()


def test_did_you_mean(tiny_run, tiny_data, tmp_path):
    proc = cli("train", "joint", "--data", tiny_data, "--backbone", "resnet10", cwd=tmp_path)
    assert proc.returncode == 1 and not (tmp_path / "runs").exists()  # refused before the run folder
    assert proc.stderr.startswith("error: backbone 'resnet10': not a timm model; did you mean 'resnet10t'")
    with pytest.raises(RunError, match=rf"{tiny_run.name}x: no such run .*; did you mean '{tiny_run.name}'\?"):
        open_run(f"{tiny_run.name}x", tiny_run.parent)
    with pytest.raises(RunError, match="nothing: no such run") as e:
        open_run("nothing", tiny_run.parent)
    assert "did you mean" not in str(e.value)


def spec_dict() -> dict:
    member = [{"member": "a", "weight": 1.0}]
    return {"tasks": {"cls": {"members": member}, "det": {"members": member, "fusion": {"det_method": "wbf"}},
                      "seg": {"members": member}}}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["tasks"]["det"].update(fusion={"iou_thresh": 0.5}),
     "x.yaml: tasks.det.fusion: unknown key 'iou_thresh'; did you mean 'iou_thr'? (expected det_method, iou_thr, skip_box_thr)"),
    (lambda d: d["tasks"]["seg"].update(member=d["tasks"]["seg"].pop("members")),
     "x.yaml: tasks.seg: unknown key 'member'; did you mean 'members'? (expected members)"),
    (lambda d: d["tasks"].update(sge=d["tasks"].pop("seg")), "x.yaml: tasks: unknown key 'sge'; did you mean 'seg'? (expected cls, det, seg)"),
    (lambda d: d["tasks"]["cls"]["members"][0].pop("weight"), "x.yaml: tasks.cls.members[0]: no 'weight' key"),
    (lambda d: d["tasks"]["cls"]["members"][0].update(weight="heavy"),
     "x.yaml: tasks.cls.members[0]: could not convert string to float: 'heavy'"),
    (lambda d: d.update(taks=d.pop("tasks")), "x.yaml: not an ensemble spec: no 'tasks' key; did you mean 'taks'?"),
])
def test_ensemble_spec_errors_name_task_and_key(edit, message):
    EnsembleSpec.from_dict(spec_dict(), "x.yaml")  # the unedited spec reads
    d = spec_dict()
    edit(d)
    with pytest.raises(DataError) as e:
        EnsembleSpec.from_dict(d, "x.yaml")
    assert str(e.value) == message


def test_a_run_is_re_created_from_its_config(tiny_data, tmp_path):
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--device", "cpu"]
    proc = here("train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--img-size", "cls=32,det=64x96,seg=64",
                "--lr", "0.01", "--weight-decay", "0.01", "--warmup-steps", "3", "--neck-channels", "32",
                "--name", "a", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "runs"
    first = yaml.safe_load((runs / "a" / "config.yaml").read_text())
    assert (first["weight_decay"], first["warmup_steps"], first["neck_channels"]) == (0.01, 3, 32)
    # the run's own config.yaml: the same TrainConfig (the name aside), nothing else given
    assert here("train", "joint", "--config", runs / "a" / "config.yaml", "--name", "b", cwd=tmp_path).returncode == 0
    again = yaml.safe_load((runs / "b" / "config.yaml").read_text())
    assert TrainConfig.from_yaml_dict({**again, "name": "a"}) == TrainConfig.from_yaml_dict(first)
    # options on the command line override the file; --img-size det=... keeps the file's other sizes
    assert here("train", "joint", "--config", runs / "a" / "config.yaml", "--name", "c", "--lr", "0.02",
               "--img-size", "det=64", cwd=tmp_path).returncode == 0
    third = yaml.safe_load((runs / "c" / "config.yaml").read_text())
    assert third["lr"] == 0.02 and third["img_size"] == {"cls": 32, "det": 64, "seg": 64}
    assert {k: v for k, v in third.items() if k not in ("lr", "img_size", "name")} == \
        {k: v for k, v in first.items() if k not in ("lr", "img_size", "name")}
    # a file written by hand: a misspelt key is named with its file, and a joint config is refused by single
    (tmp_path / "mine.yaml").write_text(f"data: {tiny_data}\nbackbone: resnet10t\nlearning_rate: 0.1\n")
    proc = here("train", "joint", "--config", "mine.yaml", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: mine.yaml: unknown setting 'learning_rate'"
    (tmp_path / "mine.yaml").write_text(f"data: {tiny_data}\nbackbone: resnet10t\nbudgett: 5m\n")
    assert here("train", "joint", "--config", "mine.yaml", cwd=tmp_path).stderr.strip() == \
        "error: mine.yaml: unknown setting 'budgett'; did you mean 'budget'?"
    proc = here("train", "single", "--config", runs / "a" / "config.yaml", "--task", "cls", cwd=tmp_path)
    assert proc.returncode == 2 and "is the config of a 'joint' run: use `mtwb train joint`" in proc.stderr
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["a", "b", "c"]


def test_class_balance_defaults_to_a_weighted_seg_loss_that_an_option_extends_or_turns_off(tiny_data, tmp_path):
    common = ["train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--img-size", "cls=32,det=64,seg=64",
              "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--device", "cpu"]
    for name, extra, expected in [("d", [], {"seg": "loss"}),
                                  ("c", ["--class-balance", "cls=sample"], {"seg": "loss", "cls": "sample"}),
                                  ("n", ["--class-balance", "seg=none"], {"seg": "none"})]:
        proc = here(*common, "--name", name, *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())["class_balance"] == expected
    from workbench.train.trainer import Trainer
    weighted = Trainer(TrainConfig.from_yaml_dict(yaml.safe_load((tmp_path / "runs" / "d" / "config.yaml").read_text())
                                                  | {"name": "d2", "runs_dir": str(tmp_path / "x")}), tmp_path / "x" / "d2")
    plain = Trainer(TrainConfig.from_yaml_dict(yaml.safe_load((tmp_path / "runs" / "n" / "config.yaml").read_text())
                                               | {"name": "n2", "runs_dir": str(tmp_path / "x")}), tmp_path / "x" / "n2")
    assert set(weighted.class_weights) == {"seg"} and plain.class_weights == {}
    w = weighted.class_weights["seg"]
    assert w.max() > w.min()  # the tiny set's classes are imbalanced: the rarer weigh more
    # a config.yaml of a run made before the default (class_balance: null) re-runs as it was: unweighted
    old = yaml.safe_load((tmp_path / "runs" / "d" / "config.yaml").read_text()) | {"class_balance": None}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert here("train", "joint", "--config", "old.yaml", "--name", "o", cwd=tmp_path).returncode == 0
    assert yaml.safe_load((tmp_path / "runs" / "o" / "config.yaml").read_text())["class_balance"] is None
    proc = here(*common, "--name", "bad", "--class-balance", "seg=sample", cwd=tmp_path)
    assert proc.returncode == 1 and "class balance seg=sample is not offered; choose cls=sample|loss|none, " \
        "det=sample|none, seg=loss|none" in proc.stderr


def test_task_share_reaches_the_config_and_needs_equal_compute_sampling(tiny_data, tmp_path):
    common = ["train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--img-size", "cls=32,det=64,seg=64",
              "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "2", "--device", "cpu"]
    proc = here(*common, "--name", "ec", "--sampling", "equal-compute", "--task-share", "cls=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((tmp_path / "runs" / "ec" / "config.yaml").read_text())
    assert (config["sampling"], config["task_share"]) == ("equal-compute", {"cls": 2.0, "det": 2, "seg": 2})
    with open(tmp_path / "runs" / "ec" / "steps.csv") as f:
        steps = list(csv.DictReader(f))
    # pixels a batch over the share: cls 2 x 32 x 32 / 2 = 1024, det and seg 2 x 64 x 64 / 2 = 4096
    assert [[t for t in ("cls", "det", "seg") if s[f"loss_{t}"]] for s in steps] == [["cls"], ["det"], ["seg"], ["cls"]]
    proc = here(*common, "--name", "rr", "--sampling", "round-robin", "--task-share", "cls=2", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == \
        "error: --task-share sets the compute shares of equal-compute sampling: give --sampling equal-compute"
    assert not (tmp_path / "runs" / "rr").exists()


def test_dry_run_prints_the_config_yaml_the_run_then_writes_and_trains_nothing(tiny_data, tmp_path):
    common = ["train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--img-size", "cls=32,det=64,seg=64",
              "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--name", "j"]
    dry = here(*common, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "runs" / "j").exists()
    printed = yaml.safe_load(dry.stdout)
    # the defaults resolved, as config.yaml records them: a joint run of three tasks gets equal-compute 1:2:2
    assert (printed["sampling"], printed["task_share"]) == ("equal-compute", {"cls": 1, "det": 2, "seg": 2})
    assert here(*common, cwd=tmp_path).returncode == 0
    assert printed == yaml.safe_load((tmp_path / "runs" / "j" / "config.yaml").read_text())
    # headft: the parent's architecture and sizes inherited, --one-pass turning per-task statistics into one set
    child = ["train", "headft", "--from", "j", "--data", tiny_data, "--epochs", "1", "--steps-per-epoch", "1",
             "--batch-size", "2", "--device", "cpu", "--one-pass", "--name", "h"]
    dry = here(*child, "--dry-run", cwd=tmp_path)
    printed = yaml.safe_load(dry.stdout)
    assert (printed["backbone"], printed["norm_stats"], printed["img_size"]["det"]) == ("resnet10t", "frozen", 64)
    assert not (tmp_path / "runs" / "h").exists()
    assert here(*child, cwd=tmp_path).returncode == 0
    assert printed == yaml.safe_load((tmp_path / "runs" / "h" / "config.yaml").read_text())


def test_an_old_runs_config_yaml_re_runs_it_with_the_settings_it_trained_with(tiny_data, tmp_path):
    """--config runs/OLD/config.yaml, OLD older than --clip-common (absent from its file): the value it trained
    with (step), not today's default (running); the same file outside a run folder is a new run's settings."""
    old = tmp_path / "runs" / "old"
    old.mkdir(parents=True)
    fields = {"data": str(tiny_data), "backbone": "resnet10t", "recipe": "joint", "clip": "task"}
    (old / "config.yaml").write_text(yaml.safe_dump(fields))
    (old / "run.json").write_text("{}")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(fields))
    printed = {}
    for file in (old / "config.yaml", tmp_path / "mine.yaml"):
        dry = here("train", "joint", "--config", file, "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        printed[file.name] = yaml.safe_load(dry.stdout)
    assert (printed["config.yaml"]["clip_common"], printed["mine.yaml"]["clip_common"]) == ("step", "running")
    dry = here("train", "joint", "--config", old / "config.yaml", "--clip-common", "running", "--dry-run", cwd=tmp_path)
    assert yaml.safe_load(dry.stdout)["clip_common"] == "running"  # an option given still overrides the file


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_lines_in_a_log():
    clock, out = FakeClock(), io.StringIO()  # StringIO is no terminal: lines, not a bar
    bar = Progress(20, "epoch 1/2", later=20, stream=out, quiet_s=0, clock=clock)
    for step in range(1, 21):
        clock.t = step * 0.5  # 0.5 s a step, 8 images a step
        bar.update(1, items=8, loss_cls=2.0 / step)
    lines = out.getvalue().splitlines()
    # a line every 2 steps (10% of 20); the 10th: 10 steps in 5 s = 16 images/s, (10 + 20) steps left = 15 s
    assert len(lines) == 10
    assert lines[4] == "epoch 1/2: 10/20 steps (50%), loss_cls 0.200, 16.0 images/s, 15s left"
    assert lines[-1] == "epoch 1/2: 20/20 steps (100%), loss_cls 0.100, 16.0 images/s, 10s left"


def test_progress_lines_every_30_seconds_when_steps_are_slow():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(1000, "predict det", unit="batch", stream=out, clock=clock)
    for step in range(1, 31):
        clock.t = step * 7.0  # 7 s a batch: 10% would take 700 s
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1].split("(")[0].strip() for line in lines] == ["5/1000 batches", "10/1000 batches",
                                                                              "15/1000 batches", "20/1000 batches",
                                                                              "25/1000 batches", "30/1000 batches"]
    assert lines[0].endswith("1h56m left")  # 995 batches x 7 s
    quiet = io.StringIO()
    Progress(3, "x", enabled=False, stream=quiet).update(3)
    short = Progress(4, "predict cls", stream=quiet, clock=clock)  # a pass of under 5 s prints nothing
    for _ in range(4):
        clock.t += 1.0
        short.update(1)
    assert quiet.getvalue() == ""
    slow = Progress(8, "predict seg", stream=quiet, clock=clock)  # the first line once 5 s have passed
    for _ in range(8):
        clock.t += 1.0
        slow.update(1)
    assert [line.split(": ")[1].split(" (")[0] for line in quiet.getvalue().splitlines()] == ["5/8 steps", "6/8 steps",
                                                                                              "7/8 steps", "8/8 steps"]


def test_duration():
    assert [duration(s) for s in (0, 5.4, 61, 3599, 3700)] == ["0s", "5s", "1m01s", "59m59s", "1h01m"]


def test_tensorboard_scalars_are_the_csv_values(tiny_data, tmp_path):
    import csv
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    proc = cli("train", "joint", "--data", tiny_data, "--backbone", "resnet10t", "--epochs", "2", "--steps-per-epoch",
               "2", "--img-size", "32", "--batch-size", "2", "--device", "cpu", "--name", "tb", "--tensorboard",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "tb"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = list(csv.DictReader((run / "steps.csv").open()))
    logged = [(e.step, e.value) for e in events.Scalars("train/loss_cls")]  # TensorBoard keeps float32
    # a joint run samples one task a step (equal-compute): a step without cls logs no loss_cls
    assert logged == [(int(r["step"]), float(np.float32(r["loss_cls"]))) for r in steps if r["loss_cls"]]
    assert 0 < len(logged) < len(steps)
    epochs = list(csv.DictReader((run / "metrics.csv").open()))
    # metrics.csv keeps 5 decimals, TensorBoard the float32 of the whole value (rounding both to 4 decimals can
    # split a value like 0.06305 either way: it did on an Intel Xeon)
    assert [(e.step, e.value) for e in events.Scalars("epoch/score")] == \
        [(int(r["epoch"]), pytest.approx(float(r["score"]), abs=5e-6 + 1e-8)) for r in epochs]
    assert len(epochs) == 2 and len(steps) == 4


def test_json_output_is_the_records_alone(tiny_run, tiny_data, tmp_path, monkeypatch):
    # a prediction prints "device: ..." and progress first: with --json those go to stderr, stdout parses
    import json
    import shutil
    monkeypatch.setattr("workbench.predict.cache._ANNOUNCED", set())  # the device line: once per process
    shutil.copytree(tiny_run, tmp_path / "runs" / "r", ignore=shutil.ignore_patterns("preds"))
    proc = here("predict", "r", "--data", tiny_data, "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [record] = json.loads(proc.stdout)
    assert (record["run"], record["reused"]) == ("r", False) and "device: cpu" in proc.stderr
