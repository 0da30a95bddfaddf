"""bench/run.py's "recipes at equal budget" table on the tiny set: plain-script outputs and a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import plain  # noqa: E402  (bench/ is a script folder)
import run  # noqa: E402

METRIC = {"cls": "cls_top1", "det": "det_map50", "seg": "seg_miou"}


@pytest.fixture(scope="module")
def plain_outputs(tiny_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("plain")
    for task in METRIC:
        plain.main(["--data", str(tiny_data), "--task", task, "--budget", "1s", "--seed", "0",
                    "--out", str(root / task), "--weights", ""])
    return {t: root / t for t in METRIC}


def cells(table: list[str], recipe: str) -> list[str]:
    line = next(ln for ln in table if ln.startswith(f"| {recipe} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_equal_budget_table(tiny_data, tiny_run, plain_outputs):
    budget = {"single-cls": "1m", "single-det": "2m", "single-seg": "2m", "joint": "4m", "headft": "1m"}
    # the plain outputs stand in for the single-task runs too, and one run for joint, headft and one-pass
    table = run.equal_budget(plain_outputs, plain_outputs, str(tiny_run), str(tiny_run), str(tiny_run), str(tiny_data),
                             budget, n_boot=50)
    assert [c.strip() for c in table[0].split("|")[1:4]] == ["recipe", "budget", "Top-1 (value)"]
    result = {t: json.loads((plain_outputs[t] / "result.json").read_text())[METRIC[t]] for t in METRIC}
    for t, col in zip(METRIC, (2, 3, 4)):
        row = cells(table, f"plain script {t}")
        assert row[1] == budget[f"single-{t}"] and row[col] == f"{result[t]:.4f}"
        assert [c for i, c in enumerate(row[2:6], 2) if i != col] == ["-"] * 3  # a plain row serves one task
        assert row[6] == "-"  # no reference
        # the same predictions against themselves: a zero difference, a zero-width interval
        title = {"cls": "Top-1", "det": "mAP50", "seg": "mIoU"}[t]
        assert cells(table, f"workbench single {t}")[6] == f"{title} vs plain script {t}: +0.0000 [+0.0000, +0.0000]"
    three = cells(table, "three plain scripts")
    assert three[1] == "1m + 2m + 2m"
    assert three[2:6] == [f"{v:.4f}" for v in [*result.values(), np.mean(list(result.values()))]]
    one, joint = cells(table, "one checkpoint: joint + headft"), cells(table, "one joint model")
    assert one[1] == "4m + 1m" and joint[1] == "4m"
    assert one[2:6] == joint[2:6]  # the same run in both rows
    vs_plain, vs_singles, vs_joint = one[6].split("; ")
    assert vs_joint == "score vs one joint model: +0.0000 [+0.0000, +0.0000]"
    assert joint[6] == f"{vs_plain}; {vs_singles}"
    assert vs_plain.startswith("score vs three plain scripts: ")
    # the difference of the two printed scores (to their rounding); the singles are the plain outputs here
    assert float(vs_plain.split(": ")[1].split()[0]) == pytest.approx(float(one[5]) - float(three[5]), abs=1.1e-4)
    assert vs_singles.replace("three workbench single-task runs", "three plain scripts") == vs_plain
    onepass = cells(table, "one checkpoint, one backbone pass: joint + headft --one-pass")
    assert onepass[1] == "4m + 1m" and onepass[2:6] == one[2:6]
    assert onepass[6] == f"{vs_singles}; score vs one checkpoint: joint + headft: +0.0000 [+0.0000, +0.0000]"


def test_seeds_give_their_mean_and_range(tiny_data, plain_outputs, tmp_path):
    """Seed 1's segmentation masks are all class 0: the row shows the mean [min, max] of the two seeds'
    mIoU, each as the scorer gives it; a row against an identical row differs by exactly 0."""
    import shutil

    from equal_budget import Row, equal_budget_table
    from quality import samples_of
    for seed in (0, 1):
        shutil.copytree(plain_outputs["seg"], tmp_path / f"seg-s{seed}")
    masks = dict(np.load(tmp_path / "seg-s1" / "val_seg.npz"))
    np.savez_compressed(tmp_path / "seg-s1" / "val_seg.npz", **{k: np.zeros_like(v) for k, v in masks.items()})
    template = str(tmp_path / "seg-s{seed}")
    rows = [Row("x", "1m", {"seg": template}), Row("y", "1m", {"seg": template}, ["x"])]
    table = equal_budget_table(rows, [0, 1], str(tiny_data), n_boot=20)
    values, _ = samples_of([template.format(seed=s) for s in (0, 1)], str(tiny_data), 1, 0)
    m = values["seg_miou"]
    assert m[0] != m[1]
    assert cells(table, "x")[4] == f"{m.mean():.4f} [{m.min():.4f}, {m.max():.4f}]"
    assert cells(table, "y")[6] == "mIoU vs x: +0.0000 [+0.0000, +0.0000]"
    with pytest.raises(SystemExit, match="not an earlier row"):
        equal_budget_table([Row("z", "1m", {"seg": template}, ["w"])], [0], str(tiny_data))


def test_reuse_key_reads_settings_added_since_at_their_old_value():
    """A run made before a setting existed is reused where the setting's value is what it trained with
    (LEGACY_DEFAULTS: `unfreeze` absent = none), and retrained where it is not."""
    cmd = "train headft --from j --one-pass --name h --overwrite"
    parent = "parent j made 2026-12-04T03:00:00+00:00"
    old = f"{cmd}\nrecipe: headft\nepochs: 2\ntasks:\n- cls\n- det\n{parent}\n"
    now = f"{cmd}\nrecipe: headft\nepochs: 2\ntasks:\n- cls\n- det\nunfreeze: {{}}\n{parent}\n"
    assert run.same_settings(old, old)
    assert run.same_settings(old, now.format("[]"))  # joint runs and heads-only headft: trains as before
    assert not run.same_settings(old, now.format("\n- neck"))  # the new one-pass default: retrain
    assert not run.same_settings(old, old.replace("epochs: 2", "epochs: 3"))
    assert not run.same_settings(old, old.replace("made 2026-12-04T03", "made 2026-12-04T05"))  # parent retrained
    assert not run.same_settings(old, old.replace("--name h", "--name h --lr 1e-3"))
    assert not run.same_settings(old, old.replace("epochs: 2\n", "epochs: 2\naffinity_every: 0\n"))  # no old value known
    assert not run.same_settings("train headft\nepochs: [2\n", old)  # an unreadable key is never a match
    # --clip-common (default running, before it: step) changes only runs with task clipping
    single = "train single --task seg --name s\nrecipe: single\nclip: none\n"
    assert run.same_settings(single, single + "clip_common: running\n")
    joint = "train joint --clip task --name j\nrecipe: joint\nclip: task\n"
    assert not run.same_settings(joint, joint + "clip_common: running\n")
    assert run.same_settings(joint, joint + "clip_common: step\n")
    # --pseudo-every (default 1, as before it): a run made before it is reused unless the value differs
    assert run.same_settings(joint, joint + "pseudo_every: 1\n")
    assert not run.same_settings(joint, joint + "pseudo_every: 3\n")


def test_a_student_is_retrained_when_its_teacher_changes(tiny_run, tmp_path):
    """bench/run.py reused the distilled student of an older searched ensemble (its key was the distill
    command alone); now the key holds the spec file's and the member runs' weights' sha256."""
    import argparse
    import shutil

    from safetensors.torch import load_file, save_file

    from workbench.runs import open_run

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a")
    shutil.copytree(tiny_run, runs / "b")
    spec = tmp_path / "e.yaml"

    def write_spec(cls_members: str) -> None:
        spec.write_text("tasks:\n" + "".join(f"  {t}:\n    members:\n" + "".join(
            f"    - member: {m}\n      weight: 1.0\n" for m in (cls_members if t == "cls" else "a").split(","))
            for t in ("cls", "det", "seg")))
    bench = run.Bench(argparse.Namespace(runs_dir=str(runs), prefix="t"))
    argv = ["distill", str(spec), "--data", "d.yaml", "--name", "s"]
    write_spec("a,b@hflip")
    key = " ".join(argv) + "\n" + bench.settings(argv)
    assert key.count("\nteacher ") == 3  # the spec, then runs a and b once each (b@hflip is b's weights)
    assert run.same_settings(key, " ".join(argv) + "\n" + bench.settings(argv))
    write_spec("a")  # a new search: another blend
    assert not run.same_settings(key, " ".join(argv) + "\n" + bench.settings(argv))
    write_spec("a,b@hflip")
    assert run.same_settings(key, " ".join(argv) + "\n" + bench.settings(argv))
    weights = open_run(runs / "b").weights  # member b retrained under the same name
    state = load_file(weights)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1
    save_file(state, weights)
    assert not run.same_settings(key, " ".join(argv) + "\n" + bench.settings(argv))
    members = ["distill", "a", "b", "--data", "d.yaml"]  # members named on the command line
    assert bench.settings(members).count("teacher ") == 2
