"""Faults a team hits in a long competition (issue 19): each ends in one clear line or a correct result,
nothing written outside its folder. The start of the fault suite: names that would escape their folder."""
from __future__ import annotations

import subprocess
import sys

import pytest

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
