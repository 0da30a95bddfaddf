"""`make bench`: the whole competition loop on a real data set, one honest scoreboard.

    python bench/run.py --data ../shared/data/traffic/dataset.yaml --weights ../shared/weights

Stages, each a `mtwb` command (printed, and listed in the report so that anyone can replay it):
three single-task runs, a joint run, head fine-tuning from the joint run (also with `--one-pass`), TTA predictions,
`mtwb ensemble search` + `mtwb ensemble compare` on val, a distilled student, a submission of every candidate and ONE `mtwb score` of them all on the sealed test split
(the only command that reads `truth/`). A run is reused when a complete run of the same name was
made by the same command resolving to the same settings (`mtwb train ... --dry-run`: a changed default
retrains, a setting added since retrains only where its value differs from what the old run trained with;
a headft run also needs the same parent run, a distilled student the same teacher weights), and predictions come from each run's cache, so a second `make bench`
that changed nothing only re-blends, re-submits, re-scores and rewrites the report (minutes).
Then the performance figures (measured side by side here), bench/REPORT.md and the HTML report.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from itertools import takewhile
from pathlib import Path

import numpy as np
import yaml
import torch

from _common import header, run_measured  # noqa: E402  (bench/ is the script folder)
from recipes import step_cost
from distill import ms_per_image
from ensemble import wbf_cost
from equal_budget import Row, equal_budget_table
from workbench.cli import parse_per_task
from workbench.data.spec import DatasetSpec
from workbench.data.transforms import canvas_hw, size_label
from workbench.records.manifest import Manifest
from workbench.records.run_info import FILE as RUN_FILE, RunInfo
from workbench.records.tasks import METRIC_COLUMNS, METRICS as METRIC_KEYS, TASKS
from workbench.records.ensemble import EnsembleSpec, parse_member, spec_file
from workbench.io import hash_file, read_json, write_json
from workbench.metrics.det import map50
from workbench.models.model import ModelConfig, MultiTaskModel
from workbench.runs import load_model, open_run
from workbench.predict import PredictConfig, predict_run
from workbench.records.predictions import to_submission
from workbench.train.trainer import DEFAULT_SIZES, TrainConfig, inert_settings, with_legacy_defaults

METRICS = METRIC_COLUMNS
TTA = "hflip@det+seg"  # mirrored views for det and seg only: signs carry text and handedness
COMMAND_FILE = "bench_command.txt"
OTHER_CONVS = "conv"  # the performance figures' other neck and head convolutions: full 3x3 (the default is separable)
# One checkpoint against three single-task models at equal total minutes (issue 16): the joint run and the
# head fine-tuning from it (headft, and `headft --one-pass`: the per-task statistics merged, neck and heads
# fine-tuned, the AllInOne inference cost measured on trained weights) share the three single-task runs'
# 2 + 4 + 4 = 10 minutes, as joint 8 + headft 2. (Until 2026-12-04 the joint run had the whole 10 and headft
# 2 more, 12 against 10.) The joint run needs the length: at 5 minutes (one epoch of 290 steps) it scored
# 0.616 val, where 580 steps reached 0.731 (bench/LONG_JOINT.md). The student gets the joint run's budget (it
# is the joint run's twin with pseudo-labels). Joint runs of lite1 / lite2 at 4 minutes (0.51 / 0.48 val) and
# the frozen-statistics twin (0.48) left the bench to pay for it (bench/REPORT.md of commit f841a04 has their rows).
DEFAULT_BUDGET = "single-cls=2m,single-det=4m,single-seg=4m,joint=8m,headft=2m,student=8m"


NOT_CONFIG = ("parent ", "teacher ")  # the lines of a reuse key that are not the run's config.yaml


def same_settings(old: str, new: str) -> bool:
    """Whether a run made under reuse key `old` trains as `new` would (a key: the command line, then
    `Bench.settings`): the same command, parent and teacher lines, and the same config once each setting the old
    config predates is read at the value it trained with (trainer.LEGACY_DEFAULTS). So a setting added to
    `mtwb train` retrains only the stages it changes: a joint run made before --unfreeze is reused, a
    `headft --one-pass` run (whose default became the neck) is not. A setting that changes nothing in the run
    (trainer.inert_settings: --clip-common without --clip task) is left out."""
    def read(key: str) -> tuple[list[str], dict] | None:
        lines = key.split("\n")
        fixed = [lines[0], *(ln for ln in lines[1:] if ln.startswith(NOT_CONFIG))]
        try:
            config = yaml.safe_load("\n".join(ln for ln in lines[1:] if not ln.startswith(NOT_CONFIG))) or {}
        except yaml.YAMLError:
            return None
        if not isinstance(config, dict):
            return None
        config = with_legacy_defaults(config)
        inert = inert_settings(config)
        return fixed, {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k not in inert}
    a, b = read(old), read(new)
    return a is not None and a == b


class Bench:
    """Runs `mtwb` commands, remembers them for the report, and times them. The seconds of every
    training stage that really ran are kept in runs/<prefix>-stages.json, so a report made by a
    second `make bench` that reused them still states what they cost."""

    def __init__(self, args):
        self.args = args
        self.wb = str(Path(sys.executable).with_name("mtwb"))
        self.commands: list[tuple[str, str, float, bool, float | None]] = []  # (stage, command, s, reused, peak MiB)
        self.times_file = Path(args.runs_dir) / f"{args.prefix}-stages.json"
        self.times = read_json(self.times_file) if self.times_file.exists() else {}

    def wb_run(self, stage: str, argv: list[str], capture: bool = False) -> str:
        shown = "mtwb " + " ".join(shlex.quote(a) for a in argv)
        print(f"\n[bench] {stage}: {shown}", flush=True)
        code, out, seconds, rss_mb = run_measured([self.wb, *argv], capture)
        if code != 0:
            raise SystemExit(f"bench: stage {stage!r} failed (exit {code}): {shown}")
        self.commands.append((stage, shown, seconds, False, rss_mb))
        if capture:
            print(out, flush=True)
        return out

    def settings(self, argv: list[str]) -> str:
        """What a training command would run with: `mtwb train ... --dry-run` (its config.yaml, defaults
        resolved, so a changed default retrains it) and, for headft, when its parent run was made (a
        retrained parent retrains it); for distill, its teacher: the spec file's and every member run's
        weights' sha256 (a new search or a retrained member retrains the student); "" for other commands."""
        if argv[:1] == ["distill"]:
            teachers = list(takewhile(lambda a: not a.startswith("--"), argv[1:]))
            spec = spec_file(teachers)
            members = EnsembleSpec.load(spec).members() if spec else [parse_member(t) for t in teachers]
            runs = dict.fromkeys(m.run for m in members)
            return "".join([*([f"teacher {spec} sha256 {hash_file(spec)}\n"] if spec else []),
                            *(f"teacher {r} {open_run(r, Path(self.args.runs_dir)).checkpoint_hash()}\n"
                              for r in runs)])
        if argv[:1] != ["train"]:
            return ""
        out = subprocess.run([self.wb, *argv, "--dry-run"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv)} --dry-run failed: {out.stderr.strip().splitlines()[-1:]}")
        parent = yaml.safe_load(out.stdout).get("from_run")
        made = RunInfo.read(Path(self.args.runs_dir) / parent).created if parent else None
        return out.stdout + (f"parent {parent} made {made}\n" if parent else "")

    def train(self, stage: str, name: str, argv: list[str]) -> RunInfo:
        """Train run `name` with `mtwb <argv> --name name --overwrite` unless a complete run of that name
        was made by the same command with the same resolved settings (`settings`); its run.json."""
        run = Path(self.args.runs_dir) / name
        full = [*argv, "--name", name, "--overwrite"]
        shown = "mtwb " + " ".join(shlex.quote(a) for a in full)
        done = run / COMMAND_FILE
        key = " ".join(full) + "\n" + self.settings(full)
        if (run / RUN_FILE).exists() and RunInfo.read(run).status == "complete" \
                and done.exists() and same_settings(done.read_text(), key):
            print(f"[bench] {stage}: reusing {run}", flush=True)
            known = self.times.get(shown, RunInfo.read(run).wall_time_s or 0.0)
            cost, rss = (known["s"], known.get("rss_mb")) if isinstance(known, dict) else (known, None)
            self.commands.append((stage, shown, cost, True, rss))
        else:
            self.wb_run(stage, full)
            done.write_text(key)
            self.times[shown] = {"s": self.commands[-1][2], "rss_mb": self.commands[-1][4]}
            write_json(self.times_file, self.times)
        return RunInfo.read(run)

    def plain(self, task: str, folder: Path, argv: list[str]) -> dict:
        """bench/plain.py for `task` into `folder` unless a finished output of the same command is there;
        its result.json."""
        cmd = ["bench/plain.py", "--task", task, *argv, "--out", str(folder)]
        shown = "python " + " ".join(shlex.quote(a) for a in cmd)
        done = folder / COMMAND_FILE
        if (folder / "result.json").exists() and done.exists() and done.read_text() == shown:
            print(f"[bench] plain {task}: reusing {folder}", flush=True)
            known = self.times.get(shown, {"s": 0.0})
            self.commands.append((f"plain {task}", shown, known["s"], True, known.get("rss_mb")))
        else:
            print(f"\n[bench] plain {task}: {shown}", flush=True)
            code, _, seconds, rss_mb = run_measured([sys.executable, *cmd])
            if code != 0:
                raise SystemExit(f"bench: stage 'plain {task}' failed (exit {code}): {shown}")
            self.commands.append((f"plain {task}", shown, seconds, False, rss_mb))
            done.write_text(shown)
            self.times[shown] = {"s": seconds, "rss_mb": rss_mb}
            write_json(self.times_file, self.times)
        return read_json(folder / "result.json")

    def seconds(self) -> tuple[float, float]:
        """(seconds spent now, seconds of a cold run: reused stages at what they cost when they ran)."""
        return (sum(t for _, _, t, reused, _ in self.commands if not reused),
                sum(t for _, _, t, _, _ in self.commands))


def allinone_vs_singles(joints: dict, singles: dict, size, batch: int = 8, reps: int = 5, rounds: int = 5,
                        fold: bool = True) -> dict:
    """Forward time of each AllInOne model with all three heads vs the three single-task models, each with
    its head, on the same batch of images of `size` (N or (H, W)) (no grad, CPU, eval mode; `fold`: BatchNorm
    folded, as `mtwb predict` runs them). Models or run names: `joints` {label: model}, `singles` {task: model}.

    One reading moves by 20-30% with the machine's state, so every model is timed once per round, the
    models interleaved, over `rounds` rounds; each round gives a ratio (a joint model's time over the
    sum of the singles' in that round). Returns {label: {"joint_ms", "ratio" (medians), "ratio_range"
    (min, max), "singles_ms": {task: median ms per image} (the same for every label)}}."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, *canvas_hw(size)), dtype=torch.uint8)
    device = torch.device("cpu")

    def timed(model, tasks) -> float:
        # fold: BatchNorm folded into the convolutions, as mtwb predict runs a model
        with torch.no_grad(), (model.folded_norms() if fold else nullcontext()):
            model(images, tasks)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(images, tasks)
        return (time.perf_counter() - t0) / reps

    def model(m):
        return (load_model(open_run(m), device) if isinstance(m, str) else m).eval()

    joints = {label: model(m) for label, m in joints.items()}
    singles = {t: model(m) for t, m in singles.items()}
    joint_s = {label: [] for label in joints}
    single_s = {t: [] for t in singles}
    for _ in range(rounds):
        for label, m in joints.items():
            joint_s[label].append(timed(m, TASKS))
        for t, m in singles.items():
            single_s[t].append(timed(m, (t,)))
    summed = [sum(single_s[t][k] for t in singles) for k in range(rounds)]
    singles_ms = {t: 1000 * float(np.median(s)) / batch for t, s in single_s.items()}
    return {label: {"joint_ms": 1000 * float(np.median(s)) / batch,
                    "ratio": float(np.median([a / b for a, b in zip(s, summed)])),
                    "ratio_range": (min(a / b for a, b in zip(s, summed)), max(a / b for a, b in zip(s, summed))),
                    "singles_ms": singles_ms}
            for label, s in joint_s.items()}


def ratio(timing: dict) -> str:
    """A timing of allinone_vs_singles as '0.41x [0.38x, 0.45x]' (median and range over the rounds)."""
    low, high = timing["ratio_range"]
    return f"{timing['ratio']:.2f}x [{low:.2f}x, {high:.2f}x]"


def scoring_cost(data: str, run: str, n_images: int = 1000) -> float:
    """Seconds of one pycocotools mAP50 over `n_images` images: the val det ground truth and a run's
    val boxes tiled (new image ids) up to that count."""
    spec = DatasetSpec(data)
    gt = spec.ground_truth("val", tasks=("det",)).det
    preds, _, _ = predict_run(PredictConfig(run, data, "val", "cpu"), progress=False)
    sub = to_submission(preds, spec.cls_classes, len(spec.seg_classes))
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    per_image = {}
    for d in sub.det:
        per_image.setdefault(ids[d["image"]], []).append(d)
    images, annotations, dets = [], [], []
    for k in range(n_images):
        src = gt["images"][k % len(gt["images"])]
        images.append({**src, "id": k + 1, "file_name": f"{k}_{src['file_name']}"})
        for a in (a for a in gt["annotations"] if a["image_id"] == src["id"]):
            annotations.append({**a, "id": len(annotations) + 1, "image_id": k + 1})
        dets += [{"image_id": k + 1, "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
                 for d in per_image.get(src["id"], [])]
    tiled = {"images": images, "annotations": annotations, "categories": gt["categories"]}
    t0 = time.perf_counter()
    map50(tiled, dets)
    return time.perf_counter() - t0


def equal_budget(plain: dict, singles: dict, joint: str, headft: str, onepass: str, data: str, budget: dict,
                 n_boot: int = 1000) -> list[str]:
    """The "recipes at equal budget" table (bench/equal_budget.py, one seed): per task the plain script
    against the workbench's single-task run at the same budget; then three plain scripts and three
    single-task runs, one joint model (its `joint` budget), and the two one-checkpoint rows at `joint` +
    `headft` (with DEFAULT_BUDGET the single-task runs' total): joint + headft, and joint + headft
    --one-pass (one backbone pass for all three tasks)."""
    minutes = {t: budget[f"single-{t}"] for t in TASKS}
    rows = []
    for t in TASKS:
        rows += [Row(f"plain script {t}", minutes[t], {t: str(plain[t])}),
                 Row(f"workbench single {t}", minutes[t], {t: str(singles[t])}, [f"plain script {t}"])]
    total = " + ".join(minutes.values())
    rows += [Row("three plain scripts", total, {t: str(plain[t]) for t in TASKS}),
             Row("three workbench single-task runs", total, {t: str(singles[t]) for t in TASKS},
                 ["three plain scripts"]),
             Row("one joint model", budget["joint"], {"all": joint},
                 ["three plain scripts", "three workbench single-task runs"]),
             Row("one checkpoint: joint + headft", f"{budget['joint']} + {budget['headft']}", {"all": headft},
                 ["three plain scripts", "three workbench single-task runs", "one joint model"]),
             Row("one checkpoint, one backbone pass: joint + headft --one-pass",
                 f"{budget['joint']} + {budget['headft']}", {"all": onepass},
                 ["three workbench single-task runs", "one checkpoint: joint + headft"])]
    return equal_budget_table(rows, [0], data, n_boot)


def script_stage(b: Bench, stage: str, script: str, args: list[str], out: str) -> list[str]:
    """Run a focused benchmark script (fresh processes of its own) that writes the report `out`; the
    table lines of that report."""
    cmd = [sys.executable, script, *args, "--out", out]
    print(f"\n[bench] {stage}: {' '.join(cmd)}", flush=True)
    code, _, seconds, rss = run_measured(cmd)
    if code:
        raise SystemExit(f"bench: stage '{stage}' failed")
    b.commands.append((stage, "python " + " ".join(cmd[1:]), seconds, False, rss))
    return [ln for ln in Path(out).read_text().splitlines() if ln.startswith("|")]


def fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--weights", default="../shared/weights", help="folder of efficientnet_lite{0,1,2}.imagenet.safetensors")
    # canvases of the traffic set's shapes: 400 x 300 portrait road photos, 720 x 960 CamVid frames (HxW)
    parser.add_argument("--img-size", default="cls=64,det=320x256,seg=256x320")
    # Every training stage runs for a time budget (`mtwb train --budget`), so the rows compare at equal
    # minutes: the three plain scripts and the three single-task runs get single-*, and one joint model
    # gets the same total, split between the joint run and its head fine-tuning (joint + headft).
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help="training time of each stage")
    parser.add_argument("--epochs", default="single-cls=3,single-det=3,single-seg=3,joint=3,headft=2,student=3",
                        help="epochs of each stage (validations; the budget sets their length)")
    parser.add_argument("--pseudo-weight", default="0.5")
    parser.add_argument("--route", default="cls=crop_*,seg=scene_*",
                        help="unlabelled images per task for the student (the scenes are CamVid: no signs for det)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", default="bench/REPORT.md")
    parser.add_argument("--html", default="bench/report.html")
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        raise SystemExit(f"bench: {args.data}: data set not found (make bench DATA=path/to/dataset.yaml)")
    epochs = dict(p.split("=") for p in args.epochs.split(","))
    budget = dict(p.split("=") for p in args.budget.split(","))

    def length(stage: str) -> list[str]:
        return ["--budget", budget[stage], "--epochs", epochs[stage]]
    t_all = time.time()
    b = Bench(args)
    p = args.prefix
    data = args.data

    def weights(k: int) -> list[str]:
        path = Path(args.weights) / f"efficientnet_lite{k}.imagenet.safetensors"
        if not path.is_file():
            raise SystemExit(f"bench: {path}: pretrained weights not found (make bench WEIGHTS=folder)")
        return ["--backbone", f"efficientnet_lite{k}", "--pretrained", str(path), "--norm", "0.5,0.5"]

    base = ["--data", data, "--img-size", args.img_size]
    infos: dict[str, RunInfo] = {}
    plain = {t: Path(args.runs_dir) / f"{p}-plain-{t}" for t in TASKS}
    for task in TASKS:  # the reference: a plain timm script per task, at the single-task run's budget
        b.plain(task, plain[task], ["--data", data, "--budget", budget[f"single-{task}"], "--seed", "0",
                                    "--weights", weights(0)[3]])
    for task in TASKS:
        name = f"{p}-single-{task}"
        infos[name] = b.train(f"single {task}", name, ["train", "single", "--task", task, *base, *weights(0),
                                                        *length(f"single-{task}")])
    joint = ["--clip", "task"]  # task-level clipping won the recipe benchmark (bench/RECIPES.md)
    infos[f"{p}-joint-lite0"] = b.train("joint lite0", f"{p}-joint-lite0",
                                        ["train", "joint", *base, *weights(0), *joint, *length("joint")])
    infos[f"{p}-headft-lite0"] = b.train("headft lite0", f"{p}-headft-lite0",
                                         ["train", "headft", "--from", f"{p}-joint-lite0", "--data", data,
                                          *length("headft")])
    infos[f"{p}-onepass-lite0"] = b.train("headft lite0, one pass", f"{p}-onepass-lite0",
                                          ["train", "headft", "--from", f"{p}-joint-lite0", "--data", data,
                                           "--one-pass", *length("headft")])

    # TTA predictions of every run on val (cached; the search and the compare read them)
    multi = [f"{p}-joint-lite0", f"{p}-headft-lite0"]
    singles = {t: f"{p}-single-{t}" for t in TASKS}
    for run in [*multi, singles["det"], singles["seg"]]:
        b.wb_run(f"TTA {run}", ["predict", run, "--data", data, "--split", "val", "--tta", TTA])
    members = [*multi, *(f"{r}@{TTA}" for r in multi), *singles.values(), f"{singles['det']}@{TTA}",
               f"{singles['seg']}@{TTA}"]
    spec_path = f"ensembles/{p}.yaml"
    search = ["ensemble", "search", *members, "--data", data, "--out", spec_path]
    # the search is redone only when its command or a member's weights changed
    stamp = " ".join(search) + "\n" + "\n".join(open_run(r).checkpoint_hash() for r in [*multi, *singles.values()])
    stamp_file = Path(args.runs_dir) / f"{p}-search.txt"
    if Path(spec_path).is_file() and stamp_file.is_file() and stamp_file.read_text().startswith(stamp + "\n"):
        print(f"[bench] ensemble search: reusing {spec_path}", flush=True)
        search_out = stamp_file.read_text()[len(stamp) + 1:]
        b.commands.append(("ensemble search", "mtwb " + " ".join(shlex.quote(a) for a in search), 0.0, True, None))
    else:
        search_out = b.wb_run("ensemble search", search, capture=True)
        stamp_file.write_text(stamp + "\n" + search_out)
    compare_out = b.wb_run("ensemble compare", ["ensemble", "compare", *members, "--data", data, "--spec", spec_path,
                                                "--out", f"{args.runs_dir}/{p}-compare.csv"], capture=True)

    student = f"{p}-student-lite0"
    infos[student] = b.train("distil student", student,
                             ["distill", spec_path, "--data", data, "--student", "efficientnet_lite0",
                              "--pretrained", weights(0)[3], "--norm", "0.5,0.5", "--route", args.route,
                              "--pseudo-weight", args.pseudo_weight, "--img-size", args.img_size, *joint,
                              *length("student")])
    # candidates: one submission each, then ONE scoring of all on the sealed test split
    candidates = [  # (row, submission, members of the submission, runs whose training time counts)
        ("three single-task models", "singles", list(singles.values()), list(singles.values())),
        ("joint lite0", "joint-lite0", [f"{p}-joint-lite0"], [f"{p}-joint-lite0"]),
        ("headft lite0", "headft-lite0", [f"{p}-headft-lite0"], [f"{p}-joint-lite0", f"{p}-headft-lite0"]),
        (f"headft lite0 + TTA {TTA}", "headft-lite0-tta", [f"{p}-headft-lite0@{TTA}"],
         [f"{p}-joint-lite0", f"{p}-headft-lite0"]),
        ("headft lite0, one backbone pass (`--one-pass`)", "onepass-lite0", [f"{p}-onepass-lite0"],
         [f"{p}-joint-lite0", f"{p}-onepass-lite0"]),
        ("searched ensemble", "ensemble", [spec_path], sorted({m.run for m in EnsembleSpec.load(spec_path).members()})),
        ("distilled student lite0", "student-lite0", [student], [student]),
    ]
    subs = []
    for row, sub, refs, _ in candidates:
        b.wb_run(f"submit {row}", ["submit", *refs, "--data", data, "--name", f"{p}-{sub}"])
        subs.append(f"{p}-{sub}")
    test = {r.pop("submission"): r for r in json.loads(b.wb_run(
        "score (sealed test)", ["score", *(f"submissions/{s}" for s in subs), "--data", data, "--json"], capture=True))}

    # scoreboard
    def runs_of(refs):
        if refs[0].endswith(".yaml"):
            return EnsembleSpec.load(refs[0]).members(), EnsembleSpec.load(refs[0])
        return [parse_member(r) for r in refs], None

    rows = []
    for (row, _, refs, trained), sub in zip(candidates, subs):
        manifest = Manifest.read(Path("submissions") / sub)
        val = manifest.val["blend"] if "blend" in manifest.val else next(iter(manifest.val.values()))
        members_, spec = runs_of(refs)
        ms = {t: 0.0 for t in TASKS}
        for m in members_:
            served = spec.tasks if spec else None
            cost = ms_per_image(m.run, data, m.tta)
            for t in TASKS:
                if t in cost and (served is None or m in served[t].members):
                    ms[t] += cost[t]
        train_s = sum(RunInfo.read(Path(args.runs_dir) / Path(r).name).wall_time_s or 0 for r in trained)
        rows.append((row, val, test[sub], ms, train_s))
        if row == "three single-task models":  # each single model alone on its own task
            for t, key in METRIC_KEYS.items():
                r = singles[t]
                rows.append((f"  single {t} ({r})", {key: manifest.val[r][key]}, {key: test[sub][key]},
                             {t: ms_per_image(r, data)[t]}, RunInfo.read(Path(args.runs_dir) / r).wall_time_s))

    table = ["| model | val Top-1 | val mAP50 | val mIoU | val score | test Top-1 | test mAP50 | test mIoU | "
             "test score | train s | ms / image (cls + det + seg) |", "|---" * 11 + "|"]
    for row, val, tst, ms, train_s in rows:
        table.append(f"| {row} | " + " | ".join(fmt(val.get(k)) for k, _ in METRICS) + " | "
                     + " | ".join(fmt(tst.get(k)) for k, _ in METRICS)
                     + f" | {train_s:.0f} | " + " + ".join(fmt(ms.get(t), 1) for t in TASKS) + " |")

    print("\n[bench] recipes at equal budget", flush=True)
    equal = equal_budget(plain, {t: Path(args.runs_dir) / r for t, r in singles.items()},
                         str(Path(args.runs_dir) / f"{p}-joint-lite0"), str(Path(args.runs_dir) / f"{p}-headft-lite0"),
                         str(Path(args.runs_dir) / f"{p}-onepass-lite0"), data, budget)

    # performance figures, measured here side by side
    print("\n[bench] performance figures", flush=True)
    sizes = parse_per_task(args.img_size, DEFAULT_SIZES, "--img-size", shapes=True)
    joint_cfg = TrainConfig(data=data, backbone="efficientnet_lite0", img_size=sizes,
                            clip="task", name=f"{p}-stepcost", runs_dir=args.runs_dir, device="cpu", steps_per_epoch=10)
    cost = step_cost(joint_cfg, Path(args.runs_dir) / f"{p}-stepcost")
    # the joint run (per-task statistics: one backbone pass per task on a shared image) and the one-pass
    # checkpoint (`headft --one-pass`: the statistics merged, one backbone pass for all three heads)
    timing = allinone_vs_singles({"joint": f"{p}-joint-lite0", "onepass": f"{p}-onepass-lite0"}, singles, sizes["det"])
    inf, onepass_inf = timing["joint"], timing["onepass"]
    other = OTHER_CONVS
    # the same two figures with the other neck and head convolutions (`--head-convs conv`, full 3x3s);
    # time does not depend on the weights, so a freshly built model stands for the joint and every single one
    sep_cost = step_cost(replace(joint_cfg, head_convs=other, name=f"{p}-stepcost-{other}"),
                         Path(args.runs_dir) / f"{p}-stepcost-{other}")
    spec_ = DatasetSpec(data)
    sep_model = MultiTaskModel(ModelConfig("efficientnet_lite0", len(spec_.cls_classes), len(spec_.det_category_ids),
                                           len(spec_.seg_classes), head_convs=other))
    sep_inf = allinone_vs_singles({"conv": sep_model}, {t: sep_model for t in TASKS}, sizes["det"])["conv"]
    wbf_ms, wbf_boxes = wbf_cost([parse_member(m) for m in multi], data)
    coco_s = scoring_cost(data, f"{p}-joint-lite0")
    perf = [
        f"- Training step, `joint` (one batch of each task: heads, losses, per-task backward, task clipping, "
        f"augmentation, batching): {cost['joint_s'] * 1000:.0f} ms; bare timm efficientnet_lite0 features forward + "
        f"backward + AdamW on the same three batches, channels-last like the workbench's model: "
        f"{cost['bare_s'] * 1000:.0f} ms (in timm's default NCHW layout: {cost['bare_nchw_s'] * 1000:.0f} ms); overhead "
        f"{cost['overhead'] * 100:+.1f}% (goal: at most +15%).",
        f"- Inference, one {size_label(sizes['det'])} px image, all three tasks (medians of 5 interleaved rounds; "
        f"ratios per round, [min, max]): the joint model with per-task statistics {inf['joint_ms']:.1f} ms vs the three "
        f"single-task models {' + '.join(f'{v:.1f}' for v in inf['singles_ms'].values())} = "
        f"{sum(inf['singles_ms'].values()):.1f} ms: {ratio(inf)} the summed cost; the one-pass checkpoint "
        f"(`headft --one-pass`: the per-task statistics merged, one backbone pass; its scores in the scoreboard) "
        f"{onepass_inf['joint_ms']:.1f} ms: {ratio(onepass_inf)} (goal: at most 0.4x).",
        f"- The same with full 3x3 neck and head convolutions (`--head-convs {other}`; one shared set of BatchNorm "
        f"statistics for inference): training step "
        f"{sep_cost['joint_s'] * 1000:.0f} ms vs bare {sep_cost['bare_s'] * 1000:.0f} ms ({sep_cost['overhead'] * 100:+.1f}%); "
        f"inference {sep_inf['joint_ms']:.1f} ms vs {' + '.join(f'{v:.1f}' for v in sep_inf['singles_ms'].values())} = "
        f"{sum(sep_inf['singles_ms'].values()):.1f} ms: {ratio(sep_inf)}.",
        f"- Weighted box fusion (ensemble-boxes) of the {len(multi)} multi-task runs' val boxes: {wbf_ms:.1f} ms per "
        f"image ({wbf_boxes:.0f} input boxes per image).",
        f"- Scoring, pycocotools mAP50 over 1,000 images (val det tiled): {coco_s:.2f} s.",
    ]

    by_row = {r[0]: r for r in rows}
    teacher = by_row["searched ensemble"]
    pairs = [("student", by_row["distilled student lite0"], by_row["joint lite0"])]
    pseudo = read_json(Path(args.runs_dir) / "pseudo" / student / "meta.json")
    distil = [
        f"Teacher: the searched ensemble. Student: `mtwb distill` with `--route '{args.route}' --pseudo-weight "
        f"{args.pseudo_weight}`; its twin `{p}-joint-lite0` is the student's exact command without pseudo-labels. "
        f"Pseudo-labels: {pseudo['counts']}.", "",
        "| model | val score | test score | ms / image |", "|---|---|---|---|",
        *(f"| {label} | {fmt(r[1]['score'])} | {fmt(r[2]['score'])} | {sum(r[3].values()):.1f} |"
          for label, r in (("teacher", teacher), ("twin: joint lite0", pairs[0][2]), ("student", pairs[0][1]))), "",
        *(f"- {label} keeps {100 * r[1]['score'] / teacher[1]['score']:.1f}% of the teacher's val score (goal: at "
          f"least 97%) at {sum(r[3].values()) / sum(teacher[3].values()):.2f}x its inference cost (goal: at most "
          f"0.33x); against its twin: {r[1]['score'] - tw[1]['score']:+.4f} on val, "
          f"{r[2]['score'] - tw[2]['score']:+.4f} on test." for label, r, tw in pairs),
    ]

    # the training step against bare timm, each setting in fresh processes (bench/throughput.py)
    tp_table = script_stage(b, "throughput", "bench/throughput.py",
                            ["--data", data, "--pretrained", weights(0)[3], "--repeats", "3"], "bench/THROUGHPUT.md")
    # joint training images/s at world size 1 and 2 under torchrun, one launch each (bench/torchrun_speed.py)
    several = script_stage(b, "torchrun", "bench/torchrun_speed.py",
                           ["--data", data, "--pretrained", weights(0)[3], "--repeats", "1"], "bench/TORCHRUN.md")
    # the joint run's ONNX export in onnxruntime against PyTorch: val images/s and metrics (bench/onnx_speed.py)
    onnx_table = script_stage(b, "onnx", "bench/onnx_speed.py", ["--run", f"{p}-joint-lite0", "--data", data],
                              "bench/ONNX.md")
    # the command line's start-up time, fresh processes (bench/startup.py)
    startup = script_stage(b, "startup", "bench/startup.py", ["--repeats", "5"], "bench/STARTUP.md")
    # which tasks should share a backbone: affinity, predicted and trained rankings (bench/grouping.py; its runs
    # are reused when they exist, about 40 minutes cold)
    script_stage(b, "grouping", "bench/grouping.py", ["--data", data, "--weights", args.weights], "bench/GROUPING.md")
    grouping = Path("bench/GROUPING.md").read_text().split("## The affinity run", 1)[1].splitlines()
    grouping = ["### The affinity run", *[("#" + ln if ln.startswith("## ") else ln) for ln in grouping]]
    tp = read_json(Path("bench/THROUGHPUT.json"))
    step_over = tp["median_s"][tp["default_cpu"]] / tp["median_s"][tp["bare"]] - 1
    search_info = (EnsembleSpec.load(spec_path).info or {}).get("search", {})
    cold_s = time.time() - t_all - b.seconds()[0] + b.seconds()[1]
    step_cause = ("" if step_over <= 0.15 else ". Remainder: the FPN neck, the stride-4 det and seg heads and the three "
                  "losses, compute the bare loop does not do; batch assembly is ~30 ms of the step and decoding is "
                  "out of it (the image cache)")
    onepass_row, headft_row = by_row["headft lite0, one backbone pass (`--one-pass`)"], by_row["headft lite0"]
    inf_cause = (f"; it scores {fmt(onepass_row[1]['score'])} val against the per-task statistics' "
                 f"{fmt(headft_row[1]['score'])} (headft lite0) and the three single-task models' "
                 f"{fmt(by_row['three single-task models'][1]['score'])}. The joint model with per-task statistics (the "
                 f"default since they raised the joint val score by +0.08, bench/NORM_STATS.md) runs the backbone "
                 f"once per task when one image asks for all three: {ratio(inf)}. In the competition each task has "
                 f"its own images, so each image costs one backbone pass either way")
    goals = [
        f"- Training step vs bare timm (median of 3 fresh processes, the CPU default: image cache, no prefetch "
        f"thread, per-task gradients summed in place): {step_over:+.1%} (goal: at most +15%){step_cause}.",
        f"- AllInOne inference vs the three single-task models, the one-pass checkpoint: {ratio(onepass_inf)} (goal: "
        f"at most 0.40x){inf_cause}.",
        f"- `mtwb ensemble search`: {search_info.get('blends_evaluated', '?')} blends in {search_info.get('seconds', '?')} s "
        f"(goal: 100 blends in at most 180 s).",
        f"- `make bench` cold: {cold_s / 60:.0f} min on this machine (goal: at most 60 min on either machine kind).",
    ]

    lines = [*header(f"`make bench` on {Path(data).parent.name}", f"make bench BENCH_DATA={data} WEIGHTS={args.weights}"),
             f"- wall time of this `make bench`: {time.time() - t_all:.0f} s; of a cold one (no run to reuse): "
             f"{time.time() - t_all - b.seconds()[0] + b.seconds()[1]:.0f} s (the reused training stages at what "
             "they cost when they ran; `train s` below is each run's own training time)",
             f"- every run fine-tunes ImageNet EfficientNet-Lite weights from `{args.weights}` at {args.img_size}; "
             f"training budget per stage (`--budget`): {args.budget}; epochs (validations) per stage: {args.epochs}", "",
             "## Scoreboard", "",
             "Val: the labelled val split (selection happens there). Test: the sealed test split, scored once, by "
             "`mtwb score` at the end. ms / image: batched CPU inference on this machine, from each run's val cache "
             "(an ensemble's cost is the sum of the members it uses per task).", "",
             *table, "",
             "## Recipes at equal budget (issue 16)", "",
             "Val, seed 0. Plain script: bench/plain.py, a deliberately ordinary timm fine-tuning script per task "
             "(efficientnet_lite0 from the same ImageNet weights; cls 64 px, CenterNet det 320 px, FPN seg 240x320). "
             "Budget: training time (`--budget`; the plain script's loop, the workbench run's steps and validations). "
             "Differences: paired bootstrap over the val images, 1000 resamples, percentile 95%; one seed here, "
             "three in bench/EQUAL_BUDGET.md.", "", *equal, "",
             "## Performance", "", *perf, "",
             "## Throughput goals (issue 15)", "", *goals, "", "Training step, ms (bench/THROUGHPUT.md):", "", *tp_table, "",
             "## Several processes (issue 17)", "",
             "Joint lite0 training under torchrun (gloo) on this machine's cores, the same global batches "
             "(bench/torchrun_speed.py; correctness: tests/distributed/test_torchrun.py):", "", *several, "",
             "## ONNX export (issue 18)", "",
             f"`mtwb export {p}-joint-lite0 --format onnx`, val predictions with each backend (bench/onnx_speed.py):",
             "", *onnx_table, "",
             "## Command-line start-up (issue 18)", "",
             "Wall time of a fresh `mtwb` process, median and slowest of 5 (bench/startup.py; goal: at most 1.5 s):",
             "", *startup, "",
             "## Task grouping (issue 20)", "",
             "Which tasks should share a backbone (bench/grouping.py, bench/GROUPING.md; one seed):", "", *grouping, "",
             "## Distillation", "", *distil, "",
             "## The searched ensemble (`mtwb ensemble search`)", "", "```", search_out.strip(), "```", "",
             "## Members against the best one on val (`mtwb ensemble compare`, paired bootstrap)", "", "```",
             compare_out.strip(), "```", "",
             f"HTML report of the searched ensemble on val: `{args.html}` (not committed: images embedded, "
             "several MB; `mtwb report` rebuilds it).", "",
             "## Commands", "", "Peak RSS: the stage's own process (`os.wait4`), MiB.", "",
             "| stage | command | s | peak RSS MiB |", "|---|---|---|---|",
             *(f"| {s} | `{c}` | {t:.0f}{' (reused)' if reused else ''} | {'-' if rss is None else f'{rss:.0f}'} |"
               for s, c, t, reused, rss in b.commands), ""]
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    print("\n".join(lines))
    b.wb_run("HTML report", ["report", spec_path, "--data", data, "--out", args.html])


if __name__ == "__main__":
    main()
