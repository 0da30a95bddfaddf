"""`mtwb`: the command line. Each command parses options, builds a config, calls one function, prints."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import warnings
from pathlib import Path

import click

from workbench.allocator import tune_allocator
from workbench.errors import WorkbenchError, WorkbenchWarning, check_name
from workbench.records.tasks import METRIC_COLUMNS, TASKS
from workbench.runs_table import COLUMNS as RUN_COLUMNS

# One vocabulary across commands:
#   --split   a data set split, always a choice among the splits the command can use (val first);
#   --out     a FILE you choose for the command's main output; side files (a chart, a description) go
#             beside it with their own suffix. A record the workbench keeps (a run, a submission) is
#             named with --name instead and lives in runs/ or submissions/;
#   --json    the printed table as a JSON list of records: one object per row, keys as the columns,
#             missing values null.
SPLIT_HELP = {"train": "the training split", "val": "labelled, not trained on", "test": "unlabelled, to submit"}


def split_option(*choices: str):
    """--split: a choice among `choices` (the first is the default), each explained in --help."""
    return click.option("--split", type=click.Choice(choices), default=choices[0], show_default=True,
                        help="Split: " + "; ".join(f"{c} ({SPLIT_HELP[c]})" for c in choices) + ".")


_RECORDS_OUT: list = []  # where --json's records go: the real stdout, while the command's other output goes to stderr


def json_option(command):
    """--json: print the table as a JSON list of records instead; everything else the command prints
    (progress, "device: ...", training lines) then goes to stderr, so that stdout is the JSON alone."""
    @functools.wraps(command)
    def run_command(*args, **kwargs):
        if not kwargs.get("as_json"):
            return command(*args, **kwargs)
        _RECORDS_OUT.append(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return command(*args, **kwargs)
        finally:
            _RECORDS_OUT.pop()
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the table as a JSON list of records (one object per row, keys as the "
                             "columns, missing values null); other output goes to stderr.")(run_command)


def echo_records(records: list[dict]) -> None:
    """Print records as the JSON list every --json prints (NaN as null), on the real stdout."""
    def clean(v):
        return None if isinstance(v, float) and v != v else round(v, 6) if isinstance(v, float) else v
    click.echo(json.dumps([{k: clean(v) for k, v in r.items()} for r in records], allow_nan=False),
               file=_RECORDS_OUT[-1] if _RECORDS_OUT else None)


def metric_records(first: str, rows: list[tuple[str, dict]], **more) -> list[dict]:
    """format_table's rows as records: {first: label, **more, metric: value} (metrics of METRIC_COLUMNS)."""
    return [{first: label, **more, **{key: m.get(key) for key, _ in METRIC_COLUMNS}} for label, m in rows]


def parse_per_task(value: str | None, default: dict[str, int], option: str, shapes: bool = False) -> dict:
    """'128' -> the same for every task; 'cls=64,det=320' -> those tasks, the rest from default.
    With `shapes`, a value may also be HxW ('seg=256x320' -> (256, 320)): an input size."""
    out = dict(default)
    if not value:
        return out

    def number(text: str):
        if shapes and "x" in text:
            h, w = text.split("x")
            return int(h), int(w)
        return int(text)
    try:
        if "=" not in value:
            return {t: number(value) for t in TASKS}
        for part in value.split(","):
            task, text = part.split("=")
            if task.strip() not in TASKS:
                raise ValueError(f"unknown task {task!r}")
            out[task.strip()] = number(text.strip())
    except ValueError as e:
        form = "N or HxW" if shapes else "N"
        raise click.BadParameter(f"{value!r}: expected {form}, or cls={form},det={form},seg={form} ({e})",
                                 param_hint=option) from None
    return out


def parse_norm(value: str | None) -> dict:
    """'0.5,0.5' -> mean (0.5,)*3 and std (0.5,)*3; six numbers give per-channel mean then std."""
    if not value:
        return {}
    try:
        numbers = [float(x) for x in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 2:
        return {"mean": (numbers[0],) * 3, "std": (numbers[1],) * 3}
    if len(numbers) == 6:
        return {"mean": tuple(numbers[:3]), "std": tuple(numbers[3:])}
    raise click.BadParameter(f"{value!r}: expected MEAN,STD or six numbers", param_hint="--norm")


def format_table(rows: list[tuple[str, dict]], first: str = "") -> str:
    """Rows of (label, metrics) as an aligned text table with Top-1, mAP50, mIoU and score columns."""
    width = max([len(first)] + [len(label) for label, _ in rows])
    lines = [f"{first:<{width}}  " + "  ".join(f"{title:>7}" for _, title in METRIC_COLUMNS)]
    for label, m in rows:
        cells = [f"{m[key]:7.4f}" if key in m else f"{'-':>7}" for key, _ in METRIC_COLUMNS]
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mtwb", prog_name="mtwb")
def main():
    """mtwb, the multi-task workbench: train, blend and submit AllInOne (cls + det + seg) models."""


# -- data ------------------------------------------------------------------------------------
@main.group()
def data():
    """Make or check data sets."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same files.")
@click.option("--size", type=click.Choice(["full", "tiny"]), default="full", show_default=True)
def data_synth(out, seed, size):
    """Write the built-in synthetic traffic data set into OUT."""
    from workbench.data.synth import make_synth_dataset
    path = make_synth_dataset(out, seed=seed, size=size)
    click.echo(f"wrote {path}")


@data.command("check")
@click.argument("dataset", type=click.Path(dir_okay=False))
def data_check(dataset):
    """Validate DATASET.yaml and print image, class and box counts per task and split."""
    from workbench.data.check import check_dataset
    report = check_dataset(dataset)
    click.echo(report.format_table())
    if not report.ok:
        sys.exit(1)


# -- train -----------------------------------------------------------------------------------
def default_class_balance() -> dict:
    from workbench.train.trainer import DEFAULT_CLASS_BALANCE
    return dict(DEFAULT_CLASS_BALANCE)


def parse_task_map(value: str | None, option: str, convert=float) -> dict | None:
    """'cls=1,det=2.5' -> {"cls": 1.0, "det": 2.5}; None stays None."""
    if not value:
        return None
    out = {}
    try:
        for part in value.split(","):
            task, item = (x.strip() for x in part.split("="))
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}")
            out[task] = convert(item)
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: expected TASK=VALUE[,TASK=VALUE] ({e})", param_hint=option) from None
    return out


def recipe_options(f):
    """The options every training recipe shares."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="A YAML file of training settings (the keys of a run's config.yaml; a run's own "
                          "config.yaml re-runs it); options given on the command line override it."),
        click.option("--data", "data_path", type=click.Path(dir_okay=False), help="dataset.yaml  [required]"),
        click.option("--epochs", default=10, show_default=True),
        click.option("--img-size", help="Input size: N for every task, or cls=N,det=N,seg=N (multiples of 32); "
                                        "HxW for a canvas of the images' shape, e.g. seg=256x320 for 4:3 scenes "
                                        "(a square canvas pads them: steps spent on padding)."),
        click.option("--batch-size", help="Batch size: N for every task, or cls=N,det=N,seg=N."),
        click.option("--lr", default=2e-3, show_default=True),
        click.option("--backbone-lr-scale", default=1.0, show_default=True,
                     help="Backbone learning rate = lr x this (e.g. 0.1 when fine-tuning pretrained weights)."),
        click.option("--weight-decay", default=0.05, show_default=True, help="AdamW weight decay."),
        click.option("--warmup-steps", default=50, show_default=True, help="Linear warmup steps before the cosine decay."),
        click.option("--steps-per-epoch", type=int, help="Optimizer steps per epoch (default: one pass of the largest task)."),
        click.option("--budget", help="Training time, e.g. 90s, 15m, 2h: the first steps and one validation are timed, "
                                      "then the steps per epoch (and the LR schedule) are set to fill it; recorded in run.json."),
        click.option("--sampling", type=click.Choice(["round-robin", "proportional", "equal-compute"]),
                     help="round-robin: a batch of every task each step; proportional: one task a step, by data set size; "
                          "equal-compute: one task a step, the one whose batches so far cost least (images x pixels), "
                          "so each task gets its share of the time (--task-share). Default: equal-compute for a joint "
                          "run (bench/JOINT_SHARES.md), round-robin otherwise."),
        click.option("--task-share", help="Compute shares of --sampling equal-compute (default cls=1,det=2,seg=2: the crops learn from fewer pixels)."),
        click.option("--task-steps", help="Per-task budget of batches, e.g. cls=200,det=800: a task stops early, the others go on."),
        click.option("--balance", default="fixed", show_default=True,
                     help="Loss balancing: fixed, magnitude (losses within --balance-ratio), uncertainty (Kendall et al.), pcgrad."),
        click.option("--loss-weights", help="Fixed loss weights, e.g. cls=1,det=2,seg=1."),
        click.option("--balance-ratio", default=10.0, show_default=True, help="magnitude: largest / smallest weighted loss."),
        click.option("--clip", type=click.Choice(["none", "global", "task"]), default="none", show_default=True,
                     help="Gradient clipping: global norm, or task-level backbone-oriented (each task clipped, rescaled to one norm)."),
        click.option("--clip-norm", default=1.0, show_default=True),
        click.option("--clip-common", type=click.Choice(["running", "step"]), default="running", show_default=True,
                     help="--clip task with one task a step (equal-compute): running rescales it to the common norm of "
                          "every task's last gradient; step clips it alone (the behaviour before this option)."),
        click.option("--accum", default=1, show_default=True, help="Batches accumulated per optimizer step."),
        click.option("--ema", default=0.0, show_default=True, help="EMA decay of the weights, e.g. 0.999 (0: off); saved as ema.safetensors."),
        click.option("--class-balance", help="Class imbalance per task, on top of the default seg=loss (class-"
                     "weighted segmentation loss: rare thin classes, +0.13 val mIoU on the traffic benchmark): "
                     "cls=sample|loss, det=sample, seg=loss; TASK=none turns one off."),
        click.option("--augment", help="Per-task augmentation, e.g. 'det=hflip+scale:0.75:1.25+colour:0.2,cls=none' (default: built-in)."),
        click.option("--keep-top", default=3, show_default=True, help="Best checkpoints kept for `mtwb train avg`."),
        click.option("--checkpoint-every", type=int, help="Optimizer steps between resume checkpoints (default: each epoch)."),
        click.option("--cache-images/--no-cache-images", default=True, show_default=True,
                     help="Decode images once into runs/.cache/images (memory-mapped, reused by later runs at the same size)."),
        click.option("--prefetch/--no-prefetch", default=None,
                     help="Assemble the next step's batches in a background thread (the same batches; default: on "
                          "a GPU only, on a 2-core CPU the thread slows the step, bench/THROUGHPUT.md)."),
        click.option("--tensorboard", is_flag=True, default=False,
                     help="Also log steps.csv and metrics.csv as TensorBoard scalars in runs/<run>/tensorboard/."),
        click.option("--seed", default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps ..."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True,
                     help="Autocast of the forward passes: auto = bf16 on a GPU that has it, else fp32; fp16 adds a "
                          "dynamic loss scale. Recorded in run.json; mtwb predict uses it too."),
        click.option("--name", help="Run id (default: <recipe>-<backbone>-<time>)."),
        click.option("--overwrite", is_flag=True,
                     help="Replace an existing run of the same name (kept until the new run's first checkpoint)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def head_convs_option(f):
    f = click.option("--heads", type=click.Choice(["full", "light"]), default="full", show_default=True,
                     help="Layout of the det and seg heads: a 3x3 block per det output and one after seg's "
                          "merge, or light: det's size and offset share a block and seg's logits come straight "
                          "from the merge (Panoptic FPN), two stride-4 blocks fewer: one-pass inference 0.38x instead "
                          "of 0.40x of three single-task models, at -0.009 val score (bench/LIGHT_HEADS.md).")(f)
    f = click.option("--neck-channels", default=64, show_default=True, help="Width of the FPN neck and the det/seg heads.")(f)
    f = click.option("--norm-stats", type=click.Choice(["shared", "task", "frozen"]), default="task",
                     show_default=True,
                     help="BatchNorm running statistics of the backbone: one per task (crops and scenes differ; "
                          "each task's images are normalised with their own: +0.08 val score on the traffic "
                          "benchmark, bench/NORM_STATS.md), one shared set, or frozen at the pretrained ones "
                          "(needs --pretrained; one backbone pass then serves all three tasks of an image).")(f)
    return click.option("--head-convs", type=click.Choice(["conv", "separable"]), default="separable",
                        show_default=True,
                        help="3x3 convolutions of the neck and det/seg heads: depthwise-separable (EfficientDet-"
                             "style, about 1/8 of the multiply-adds; at an equal budget on the traffic benchmark "
                             "det mAP50 about doubled, bench/EQUAL_BUDGET.md), or full.")(f)


def _sizes(v, base):
    from workbench.train.trainer import DEFAULT_SIZES
    return parse_per_task(v, base or DEFAULT_SIZES, "--img-size", shapes=True)


def _batches(v, base):
    from workbench.train.trainer import DEFAULT_BATCH
    return parse_per_task(v, base or DEFAULT_BATCH, "--batch-size")


# command-line parameter -> (TrainConfig field, how its text becomes the field's value on top of the value
# the field already has from a --config file: `--img-size det=320` keeps the file's other sizes)
FIELD_OF = {
    "data_path": ("data", None), "img_size": ("img_size", _sizes), "batch_size": ("batch_size", _batches),
    "task_steps": ("task_steps", lambda v, _: parse_task_map(v, "--task-steps", int)),
    "task_share": ("task_share", lambda v, _: parse_task_map(v, "--task-share")),
    "loss_weights": ("loss_weights", lambda v, _: parse_task_map(v, "--loss-weights")),
    "class_balance": ("class_balance", lambda v, base: {**(default_class_balance() if base is None else base),
                                                        **parse_task_map(v, "--class-balance", str)}),
    "task": ("tasks", lambda v, _: (v,)), "tasks": ("tasks", lambda v, _: tuple(t.strip() for t in v.split(","))),
    "student": ("backbone", None),
    "one_pass": ("norm_stats", lambda v, _: "frozen" if v else None),
    "unfreeze": ("unfreeze", lambda v, _: tuple(p.strip() for p in v.split(",") if p.strip())),
}
NOT_FIELDS = {"config_file", "overwrite", "dry_run", "teacher", "unlabeled", "route", "det_threshold", "allow_test"}
# the fields a recipe cannot start without (distill trains a joint student)
REQUIRED = {"joint": ("data", "backbone"), "single": ("data", "backbone", "tasks"), "headft": ("data", "from_run")}


def config_fields(ctx: click.Context, recipe: str) -> dict:
    """TrainConfig fields of a training command: those of its --config file (if any), each overridden by an
    option given on the command line; options neither in the file nor given keep their defaults. A run's
    config.yaml is such a file, so `--config runs/RUN/config.yaml` re-creates RUN's TrainConfig (a run older
    than a setting gets the value it trained with, LEGACY_DEFAULTS, not today's default)."""
    from click.core import ParameterSource
    from workbench.train.trainer import TrainConfig, with_legacy_defaults
    params = dict(ctx.params)
    file = params.get("config_file")
    fields = TrainConfig.read_yaml(file) if file else {}
    if file and (Path(file).parent / "run.json").exists():  # a run's own config.yaml
        fields = with_legacy_defaults(fields)
    written = set(fields)  # a file's null stays null (class_balance: null, a run made before seg=loss: none)
    if fields.get("recipe", recipe) != recipe:
        raise click.UsageError(f"{file} is the config of a {fields['recipe']!r} run: use `mtwb train {fields['recipe']}`")
    for name, value in params.items():
        given = ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        if name in NOT_FIELDS or (file and not given):
            continue
        if name == "norm":
            fields.update(parse_norm(value))
            continue
        field, convert = FIELD_OF.get(name, (name, None))
        if convert is not None and value is not None:
            value = convert(value, fields.get(field))
        if value is not None or field not in fields:
            fields[field] = value
    for field in REQUIRED[recipe]:
        if not fields.get(field):  # named as this command spells it: --backbone, or distill's --student
            option = next(p.opts[0] for p in ctx.command.params if FIELD_OF.get(p.name, (p.name,))[0] == field)
            raise click.UsageError(f"Missing option '{option}' (or a --config file that sets {field})")
    return {**{k: v for k, v in fields.items() if v is not None or k in written}, "recipe": recipe}


def run_recipe(ctx: click.Context, recipe: str) -> None:
    from workbench.train.trainer import TrainConfig, resolve_config, train as train_run
    config = TrainConfig(**config_fields(ctx, recipe))
    if ctx.params.get("dry_run"):
        import yaml
        click.echo(yaml.safe_dump(resolve_config(config)[0].to_yaml_dict(), sort_keys=False), nl=False)
        return
    report_run(train_run(config, overwrite=ctx.params["overwrite"]))


def dry_run_option(f):
    return click.option("--dry-run", is_flag=True,
                        help="Print the settings the run would start from (its config.yaml: defaults resolved, "
                             "headft's inherited) and exit: nothing trained, no run folder.")(f)


def report_run(run_dir: Path) -> None:
    from workbench.records.run_info import RunInfo
    info = RunInfo.read(run_dir)
    best = info.best
    click.echo(f"run {run_dir} ({info.wall_time_s} s); best on val ({best.get('source')}, epoch {best['epoch']}):")
    click.echo(format_table([(run_dir.name, best)], "run"))


@main.group(invoke_without_command=True)
@click.option("--resume", "resume_run", metavar="RUN", help="Continue an interrupted run from its last checkpoint.")
@click.pass_context
def train(ctx, resume_run):
    """Train a run: joint, single, headft; average checkpoints: avg; continue: --resume RUN."""
    tune_allocator()  # glibc thresholds: a training step 8-21% faster here (bench/ALLOCATOR.md)
    if ctx.invoked_subcommand is None:
        if not resume_run:
            click.echo(ctx.get_help())
            return
        from workbench.train.trainer import resume
        report_run(resume(resume_run))
    elif resume_run:
        raise click.UsageError("--resume takes no recipe: `mtwb train --resume RUN`")


@train.command("joint")
@click.option("--backbone", help="Any timm model name with features_only support.  [required]")
@click.option("--pretrained", help="Backbone weights: a local safetensors / state-dict file, or 'timm' to download.")
@click.option("--norm", help="Input mean,std for the pretrained weights, e.g. 0.5,0.5 (default: timm's for the backbone).")
@click.option("--tasks", default="cls,det,seg", show_default=True,
              help="The tasks sharing the backbone (two or three; `mtwb grouping` trains groups of them).")
@click.option("--affinity-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Every K steps, measure how a step on each task's batch changes every task's loss (lookahead "
                   "affinity, Fifty et al. 2021): affinity.csv + affinity.png in the run, for `mtwb grouping`. "
                   "0: off.")
@head_convs_option
@recipe_options
@dry_run_option
@click.pass_context
def train_joint_cmd(ctx, **_):
    """Tasks (all three by default) on one backbone."""
    run_recipe(ctx, "joint")


@train.command("single")
@click.option("--task", type=click.Choice(TASKS), help="The task.  [required]")
@click.option("--backbone", help="Any timm model name with features_only support.  [required]")
@click.option("--pretrained", help="Backbone weights: a local safetensors / state-dict file, or 'timm' to download.")
@click.option("--norm", help="Input mean,std for the pretrained weights, e.g. 0.5,0.5.")
@head_convs_option
@recipe_options
@dry_run_option
@click.pass_context
def train_single_cmd(ctx, **_):
    """One task alone: the baseline every comparison needs."""
    run_recipe(ctx, "single")


@train.command("headft")
@click.option("--from", "from_run", metavar="RUN", help="The joint run whose heads are fine-tuned.  [required]")
@click.option("--tasks", default="cls,det,seg", show_default=True, help="Heads to fine-tune.")
@click.option("--one-pass", is_flag=True,
              help="Merge RUN's per-task BatchNorm statistics into one set (their mixture) and fine-tune the heads "
                   "(and the neck, see --unfreeze) on it: one backbone pass then serves all three tasks of an "
                   "image (a run with shared or frozen statistics runs one pass already and is fine-tuned as it is).")
@click.option("--unfreeze", metavar="PARTS",
              help="Shared parts trained beside the heads (kept at the best epoch by score, all together): "
                   "norms (the backbone's BatchNorm scales and shifts; the running statistics stay) and/or neck, "
                   "or none. Default: neck with --one-pass (+0.009 val score over 9 paired runs, "
                   "bench/ONE_PASS_NECK.md), else none.")
@recipe_options
@dry_run_option
@click.pass_context
def train_headft_cmd(ctx, **_):
    """Freeze a run's backbone and neck; fine-tune each head on its own data (best epoch per head)."""
    run_recipe(ctx, "headft")


@train.command("avg")
@click.argument("run")
@click.option("--top", default=3, show_default=True, help="How many of the best checkpoints to average.")
@click.option("--name", help="Run id (default: <run>-avg<K>).")
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True)
def train_avg_cmd(run, top, name, device, overwrite):
    """Average RUN's K best checkpoints (by val score) into a new run."""
    from workbench.train.average import average_run
    report_run(average_run(run, top=top, name=name, device=device, overwrite=overwrite))


# -- distill ---------------------------------------------------------------------------------
@main.command("distill")
@click.argument("teacher", nargs=-1, required=True)
@click.option("--student", help="The student's timm backbone.  [required]")
@click.option("--pretrained", help="Student backbone weights (local file).")
@click.option("--norm", help="Input mean,std for the pretrained weights, e.g. 0.5,0.5.")
@click.option("--unlabeled", type=click.Path(file_okay=False), help="Folder of unlabelled images (default: the data set's).")
@click.option("--route", help="Which unlabelled images serve which task: 'cls=crop_*,seg=scene_*|frame_*' "
                              "(file-name globs; a task not named gets none; default: every image for every task).")
@click.option("--det-threshold", type=float, help="Score threshold of pseudo boxes (default: the F1-maximising one on val).")
@click.option("--seg-confidence", default=0.5, show_default=True, help="Pseudo-mask pixels below this teacher probability are ignored.")
@click.option("--temperature", default=2.0, show_default=True, help="Distillation temperature of the soft class targets.")
@click.option("--pseudo-weight", default=1.0, show_default=True, help="Weight of a pseudo-labelled batch's loss.")
@click.option("--pseudo-every", default=1, show_default=True,
              help="A pseudo-labelled batch beside every k-th step of a task (each costs a labelled step's time).")
@click.option("--allow-test", is_flag=True, help="Pseudo-label images identical to test images anyway (recorded as a warning).")
@head_convs_option
@recipe_options
@click.pass_context
def distill_cmd(ctx, teacher, route, unlabeled, det_threshold, allow_test, overwrite, **_):
    """Distil TEACHER (ENSEMBLE.yaml or MEMBER ...) into one student run, via pseudo-labels on unlabelled images."""
    tune_allocator()  # the student's training, as in `mtwb train`
    from workbench.distill import DistillConfig, distill
    from workbench.ensemble.spec import equal_spec
    from workbench.records.ensemble import EnsembleSpec, parse_member, spec_file
    fields = config_fields(ctx, "joint")  # a missing option before the teacher's runs are opened
    if spec_file(teacher):
        spec = EnsembleSpec.load(teacher[0])
    else:
        spec = equal_spec([parse_member(m) for m in teacher])
    data_path, name, device = fields.pop("data"), fields.pop("name", None), fields.pop("device", "auto")
    config = DistillConfig(spec, data_path, name or f"student-{fields['backbone']}",
                           route=parse_task_map(route, "--route", str), unlabeled=unlabeled,
                           seg_confidence=fields.get("seg_confidence", 0.5), det_threshold=det_threshold,
                           allow_test=allow_test, overwrite=overwrite, device=device,
                           train={k: v for k, v in fields.items() if k not in ("recipe", "runs_dir", "pseudo")})
    pseudo, run_dir = distill(config)
    click.echo(f"pseudo-labels: {pseudo}")
    report_run(run_dir)


# -- predict ---------------------------------------------------------------------------------
@main.command("predict")
@click.argument("run")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@split_option("val", "test", "train")
@click.option("--tta", default="none", show_default=True,
              help="TTA spec, e.g. 'hflip@det+seg,scales=0.75:1:1.25,tencrop' or a preset: flip, ms, flip-ms, tencrop.")
@click.option("--compare-tta", is_flag=True, help="Print val metrics of each view alone and of the fused views.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Autocast of the forward passes (default: the precision the run trained in).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="onnxruntime: run the run's ONNX export (`mtwb export RUN --format onnx`) on the CPU instead.")
@json_option
def predict_cmd(run, data_path, split, tta, compare_tta, batch_size, device, precision, backend, as_json):
    """Predict RUN on a split (cached in runs/<run>/preds/<split>/<tta>/); prints the metrics of a labelled split."""
    from workbench.data.spec import DatasetSpec
    from workbench.metrics.scoring import score_predictions
    from workbench.predict import PredictConfig, compare_tta as compare, predict_run
    config = PredictConfig(run, data_path, split, device, batch_size, tta, precision=precision, backend=backend)
    if compare_tta:
        rows = compare(config)
        if as_json:
            return echo_records([{**r, **{k: v for k, v in m.items() if k.endswith("_ms")}}
                                 for r, (_, m) in zip(metric_records("view", rows), rows)])
        click.echo(format_table(rows, "view"))
        click.echo("ms per image (views of a task run batched; a single view's time is the task's share):")
        for label, m in rows:
            click.echo(f"  {label}: " + ", ".join(f"{t} {m[f'{t}_ms']:.1f}" for t in TASKS if f"{t}_ms" in m))
        return
    preds, folder, reused = predict_run(config)
    metrics = {}
    if split != "test":
        from workbench.runs import open_run
        spec = DatasetSpec(data_path)
        metrics = score_predictions(preds, spec.ground_truth(split), tasks=open_run(run).tasks)
    if as_json:
        return echo_records(metric_records("run", [(Path(run).name, metrics)], split=split, folder=str(folder),
                                           reused=reused))
    click.echo(f"{'reused' if reused else 'wrote'} {folder}")
    if metrics:
        click.echo(format_table([(Path(run).name, metrics)], split))


# -- ensemble --------------------------------------------------------------------------------
@main.command("export")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Model file (default: runs/RUN/export/model.onnx); "
                                                            "its description is written beside it (.json).")
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
def export_cmd(run, fmt, out, opset):
    """Write RUN's model as one ONNX file (an input and outputs per task) and a JSON description of its
    inputs, outputs, pre- and post-processing and classes; `mtwb predict RUN --backend onnxruntime` runs it."""
    from workbench.export import export_run
    path = export_run(run, fmt, out, opset)
    click.echo(f"wrote {path} and {path.with_suffix('.json')}")


@main.group()
def ensemble():
    """Compare and search blends of members (RUN or RUN@TTA) on validation."""


@ensemble.command("compare")
@click.argument("members", nargs=-1, required=True)
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@split_option("val", "train")
@click.option("--n-boot", default=500, show_default=True, help="Bootstrap resamples of the images.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="CSV file of the table; its bar chart is written beside it "
              "(.png). Default: ensembles/compare-<time>.csv.")
@click.option("--device", default="auto", show_default=True)
@click.option("--spec", "spec_files", multiple=True, type=click.Path(dir_okay=False),
              help="An ensemble spec (e.g. from `ensemble search`) to add as a row; repeatable.")
@json_option
def ensemble_compare_cmd(members, data_path, split, n_boot, seed, out, device, spec_files, as_json):
    """Score each member and their equal-weight blend (and any --spec blend), with 95% bootstrap
    intervals of the difference from the best member; save a CSV and a bar chart."""
    from datetime import datetime
    from workbench.ensemble.compare import compare_members
    from workbench.records.ensemble import EnsembleSpec, parse_member
    out = Path(out or f"ensembles/compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}.csv")
    specs = {Path(f).stem: EnsembleSpec.load(f) for f in spec_files}
    result = compare_members([parse_member(m) for m in members], data_path, split, n_boot, seed, device, out,
                             progress=not as_json, specs=specs)
    if as_json:
        return echo_records(result.records())
    click.echo(result.to_table())
    click.echo(f"wrote {out} and {out.with_suffix('.png')}")


@ensemble.command("search")
@click.argument("members", nargs=-1, required=True)
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@split_option("val")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the spec (ensembles/NAME.yaml).")
@click.option("--rounds", default=10, show_default=True, help="Greedy additions per task (with replacement).")
@click.option("--seed", default=0, show_default=True, help="Seed of the split of val into search / held-out halves.")
@click.option("--no-fusion-search", is_flag=True, help="Keep WBF at IoU 0.55 instead of searching the box fusion.")
@click.option("--device", default="auto", show_default=True)
def ensemble_search_cmd(members, data_path, split, out, rounds, seed, no_fusion_search, device):
    """Choose per-task members, weights and box fusion on val; write an ensemble spec."""
    from workbench.records.ensemble import parse_member
    from workbench.ensemble.search import SearchConfig, search_ensemble
    spec = search_ensemble(SearchConfig(tuple(parse_member(m) for m in members), data_path, split, rounds, seed,
                                        not no_fusion_search, device), progress=True)
    spec.save(out)
    for task, tb in spec.tasks.items():
        blend = " + ".join(f"{w:g} x {m.label}" for m, w in zip(tb.members, tb.weights))
        extra = f"  [{tb.fusion.det_method}, iou {tb.fusion.iou_thr}, skip {tb.fusion.skip_box_thr}]" if task == "det" else ""
        click.echo(f"{task}: {blend}{extra}")
    click.echo("search half / held-out half (best member -> blend):")
    for task, h in spec.info["halves"].items():
        click.echo(f"  {task}: {h['member_search']:.4f} -> {h['blend_search']:.4f}   |   "
                   f"{h['member_holdout']:.4f} -> {h['blend_holdout']:.4f}   (best member {h['best_member']})")
    click.echo(format_table(list(spec.info["val"].items()), "val"))
    click.echo(f"wrote {out} ({spec.info['search']['blends_evaluated']} blends in {spec.info['search']['seconds']} s)")


# -- grouping --------------------------------------------------------------------------------
@main.command("grouping")
@click.option("--from", "from_run", required=True, metavar="RUN",
              help="A joint run trained with --affinity-every: its affinity.csv ranks the groupings.")
@click.option("--max-backbones", type=float, default=3.0, show_default=True,
              help="Inference budget in backbones (a half-size backbone counts 0.5): 1, 1.5, 2, 3 ...")
@click.option("--train", "do_train", is_flag=True,
              help="Also train every grouping that fits at an equal total --budget and score it on val.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False), help="dataset.yaml (with --train).")
@click.option("--budget", help="Training time of one grouping, shared equally by its groups, e.g. 20m (with --train).")
@click.option("--backbone", help="Full-size backbone of the groups' runs (with --train; default: RUN's).")
@click.option("--half-backbone", help="Half-size backbone, for budgets that admit one (with --train).")
@click.option("--pretrained", help="Backbone weights file of the groups' runs (with --train).")
@click.option("--norm", help="Input mean,std for the pretrained weights, e.g. 0.5,0.5 (with --train).")
@click.option("--img-size", help="Input size(s) of the groups' runs, as for `mtwb train` (default: RUN's).")
@click.option("--batch-size", help="Batch size(s) of the groups' runs, as for `mtwb train` (default: RUN's).")
@click.option("--lr", type=float, help="Learning rate of the groups' runs (default: RUN's).")
@click.option("--seed", default=0, show_default=True)
@click.option("--n-boot", default=500, show_default=True, help="Bootstrap resamples of the val images.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False),
              help="CSV file of the table (default: RUN/grouping.csv; with --train RUN/grouping-trained.csv).")
@json_option
def grouping_cmd(from_run, max_backbones, do_train, data_path, budget, backbone, half_backbone, pretrained, norm,
                 img_size, batch_size, lr, seed, n_boot, device, out, as_json):
    """Rank the ways to split the tasks into groups, one backbone each, from RUN's task affinity; with
    --train, train each at an equal budget and show the true val score beside the prediction."""
    from workbench.grouping import affinity_intervals, rank_candidates, read_affinity, train_groups
    from workbench.io import csv_text, write_text
    from workbench.runs import open_run
    run = open_run(from_run)
    tasks, affinity = read_affinity(run.path)
    candidates = rank_candidates(affinity, tasks, max_backbones)
    if not do_train:
        records = [{"rank": k, "grouping": c.label, "backbones": c.backbones, "predicted": float(f"{c.predicted:.6g}")}
                   for k, c in enumerate(candidates, start=1)]
    else:
        if not data_path or not budget:
            raise click.UsageError("--train needs --data and --budget")
        from workbench.grouping import GroupingConfig
        from workbench.train.trainer import TrainConfig
        base = TrainConfig.read_yaml(run.path / "config.yaml")  # the groups train as RUN did, but for the options
        train = {k: base[k] for k in ("img_size", "batch_size", "lr", "backbone_lr_scale", "weight_decay",
                                      "warmup_steps", "neck_channels", "head_convs", "heads", "norm_stats", "pretrained",
                                      "mean", "std", "augment", "precision", "epochs", "clip", "clip_norm",
                                      "clip_common") if k in base}
        if img_size:
            train["img_size"] = parse_per_task(img_size, train.get("img_size") or {}, "--img-size", shapes=True)
        if batch_size:
            train["batch_size"] = parse_per_task(batch_size, train.get("batch_size") or {}, "--batch-size")
        if lr is not None:
            train["lr"] = lr
        if pretrained:
            train["pretrained"] = pretrained
        train.update(parse_norm(norm))
        rows, rho = train_groups(GroupingConfig(run.id, data_path, budget, backbone or run.info.backbone, half_backbone,
                                                max_backbones, train, str(run.path.parent), device, seed, n_boot))
        records = [{"predicted_rank": r.predicted_rank, "grouping": r.candidate.label,
                    "backbones": r.candidate.backbones, "predicted": float(f"{r.candidate.predicted:.6g}"),
                    "trained_rank": r.trained_rank, **{k: round(v, 6) for k, v in r.metrics.items()},
                    "diff_vs_one": round(r.diff, 6), "diff_low": round(r.ci[0], 6), "diff_high": round(r.ci[1], 6),
                    "runs": " ".join(r.runs)} for r in rows]
    out = Path(out or run.path / ("grouping-trained.csv" if do_train else "grouping.csv"))
    write_text(out, csv_text(records))
    if as_json:
        return echo_records(records)
    click.echo(f"affinity of {run.id} (row: the step's task i, column: the task j whose loss moved; "
               f"+ = i's step lowers j's loss):")
    click.echo("        " + "".join(f"{t:>10}" for t in tasks))
    for t, row in zip(tasks, affinity):
        click.echo(f"{t:<8}" + "".join(f"{v:>+10.3g}" for v in row))
    intervals = affinity_intervals(run.path, tasks)
    if intervals:
        n = next(iter(intervals.values()))[3]
        clear = [f"{i} -> {j} {m:+.3g} [{lo:+.3g}, {hi:+.3g}]" for (i, j), (m, lo, hi, _) in intervals.items()
                 if lo > 0 or hi < 0]
        click.echo(f"between tasks, affinities whose 95% interval over the {n} measurements excludes 0: "
                   + ("; ".join(clear) if clear else "none: the measurements cannot tell any pair's affinity from "
                      "none, so the predicted order below is noise; train the candidates (--train) before choosing"))
    if not do_train:
        click.echo(f"groupings within {max_backbones:g} backbones, best predicted first:")
        width = max(len(r["grouping"]) for r in records)
        for r in records:
            click.echo(f"  {r['rank']}. {r['grouping']:<{width}}  {r['backbones']:g} backbone(s)  "
                       f"predicted {r['predicted']:+.3g}")
        click.echo(f"recommended: {records[0]['grouping']} (the cheap estimate; `--train --budget` checks it)")
    else:
        width = max(len(r["grouping"]) for r in records)
        click.echo(f"{'grouping':<{width}}  backbones  predicted (rank)  val score (rank)  vs one backbone [95%]")
        for r in records:
            click.echo(f"{r['grouping']:<{width}}  {r['backbones']:>9g}  {r['predicted']:+.3g} ({r['predicted_rank']})"
                       f"     {r['score']:.4f} ({r['trained_rank']})     {r['diff_vs_one']:+.4f} "
                       f"[{r['diff_low']:+.4f}, {r['diff_high']:+.4f}]")
        click.echo(f"rank correlation of predicted and trained (Spearman): {rho:+.3f}")
    click.echo(f"wrote {out}")


# -- submit ----------------------------------------------------------------------------------
@main.command("submit")
@click.argument("members", nargs=-1, required=True)
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@click.option("--format", "fmt", default="allinone-json", show_default=True, help="Leaderboard format.")
@click.option("--name", help="Submission name (default: the spec's or the members' names).")
@click.option("--weights", help="Comma-separated member weights (default: equal).")
@click.option("--fusion", type=click.Choice(["wbf", "nms", "soft-nms"]), default="wbf", show_default=True,
              help="Box fusion (ensemble-boxes).")
@click.option("--iou-thr", default=0.55, show_default=True, help="Box fusion IoU threshold.")
@click.option("--image-ids", type=click.Path(dir_okay=False),
              help="The organisers' COCO image list of the detection test images (default: det.test_info of dataset.yaml).")
@click.option("--device", default="auto", show_default=True)
@json_option
def submit_cmd(members, data_path, fmt, name, weights, fusion, iou_thr, image_ids, device, as_json):
    """Blend MEMBERS (RUN or RUN@TTA, or one ENSEMBLE.yaml) and write submissions/<name>/."""
    from workbench.ensemble.spec import equal_spec
    from workbench.records.ensemble import EnsembleSpec, FusionConfig, parse_member, spec_file
    from workbench.submit import SubmitConfig, submit
    if name is not None:
        check_name(name)  # before any prediction: submissions/<name> stays inside submissions/
    if spec_file(members):
        spec = EnsembleSpec.load(members[0])
        name = name or Path(members[0]).stem
    else:
        try:
            w = tuple(float(x) for x in weights.split(",")) if weights else None
        except ValueError:
            raise click.BadParameter(f"{weights!r}: expected numbers separated by commas", param_hint="--weights")
        parsed = [parse_member(m) for m in members]
        if w is not None and len(w) != len(parsed):
            raise click.BadParameter(f"{len(w)} weights for {len(parsed)} members", param_hint="--weights")
        spec = equal_spec(parsed, w, FusionConfig(fusion, iou_thr))
        name = name or "+".join(m.label.replace("@", "_") for m in parsed)
    manifest = submit(SubmitConfig(spec, data_path, name, fmt, device, image_ids=image_ids))
    folder = Path(SubmitConfig.out_dir) / name
    if as_json:  # the table's rows (each member, the blend with two or more); where it went, what the fill keeps
        echo_records(metric_records("member", list(manifest.val.items()), submission=name, format=fmt,
                                    folder=str(folder), polygon_roundtrip_miou=manifest.polygon_roundtrip_miou))
        return
    click.echo(format_table(list(manifest.val.items()), "val"))
    if manifest.polygon_roundtrip_miou is not None:
        click.echo(f"masks -> polygons -> organisers' fill keeps mIoU {manifest.polygon_roundtrip_miou:.4f}")
    click.echo(f"wrote {folder}/ ({', '.join(manifest.files)})")


# -- score -----------------------------------------------------------------------------------
@main.command("score")
@click.argument("submissions", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@json_option
@click.option("--convention", type=click.Choice(["present", "organisers"]), default="present", show_default=True,
              help="mIoU over the classes present in truth or prediction, or over all classes with absent ones "
                   "counting 0 (the organisers' scorer).")
@click.option("--lenient", is_flag=True, help="Score a test image a submission leaves out (cls, seg) as wrong "
              "instead of refusing the submission; the count is printed.")
def score_cmd(submissions, data_path, as_json, convention, lenient):
    """Score SUBMISSION folders against the data set's sealed truth (test split). What is read back is
    checked as the writer checks it: a missing image, a NaN score or a box of no size is refused."""
    from workbench.metrics.seg import MIOU_CONVENTIONS
    from workbench.score import score_submission
    results = [(Path(s).name, score_submission(s, data_path, miou=convention, lenient=lenient)) for s in submissions]
    if as_json:
        missing = [{k: m[k] for k in ("missing_cls", "missing_seg") if k in m} for _, m in results]
        echo_records([{**r, **more} for r, more in zip(metric_records("submission", results, convention=convention),
                                                        missing)])
        return
    click.echo(format_table(results, "test"))
    click.echo(f"mIoU: {MIOU_CONVENTIONS[convention]} (--convention {convention})")
    for name, m in results if lenient else []:
        if m["missing_cls"] or m["missing_seg"]:
            click.echo(f"--lenient: {name}: {m['missing_cls']} cls image(s) without a class scored as wrong, "
                       f"{m['missing_seg']} seg image(s) without a mask scored with every pixel missed")


# -- runs, report -----------------------------------------------------------------------------
@main.command("runs")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder holding the run folders.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False),
              help="Only runs trained on this dataset.yaml.")
@click.option("--sort", "sort_by", type=click.Choice(RUN_COLUMNS), default="score", show_default=True,
              help="Column to sort by (metrics: best first).")
@json_option
def runs_cmd(runs_dir, data_path, sort_by, as_json):
    """List the runs with their best val metrics, kind, parents and status."""
    from workbench.runs_table import collect_runs, format_runs, sort_runs, table_records
    table = sort_runs(collect_runs(Path(runs_dir), data_path), sort_by)
    if as_json:
        echo_records(table_records(table))
    elif table.empty:
        click.echo(f"no runs in {runs_dir}" + (f" on {data_path}" if data_path else ""))
    else:
        click.echo(format_runs(table))


@main.command("report")
@click.argument("target")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset.yaml")
@click.option("--out", type=click.Path(dir_okay=False),
              help="HTML file (default: runs/NAME/report.html, ensembles/NAME.html, submissions/NAME/report.html).")
@split_option("val", "train")
@click.option("--samples", default=6, show_default=True, type=click.IntRange(min=0),
              help="Sample images per task, the worst first (confident mistakes, missed and false boxes, lowest IoU).")
@click.option("--score", "score_test", is_flag=True,
              help="Submission folder only: add its test score against the sealed truth (as `mtwb score`).")
@click.option("--device", default="auto", show_default=True)
def report_cmd(target, data_path, out, split, samples, score_test, device):
    """Write a self-contained HTML report on TARGET: a run, an ENSEMBLE.yaml or a submission folder."""
    from workbench.report import ReportConfig, build_report
    path = build_report(ReportConfig(target, data_path, out, split, samples, score_test, device), progress=True)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Print a WorkbenchWarning as one line on stderr (others as Python would)."""
    if issubclass(category, WorkbenchWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def run():
    """Entry point turning workbench errors into one-line messages and exit code 1."""
    warnings.showwarning = show_warning
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun rank 0 prints; the others only their errors
        sys.stdout = open(os.devnull, "w")
    try:
        main(standalone_mode=False)
    except WorkbenchError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:  # the disk or the system refused (no space, permission, too many files): one line
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    run()
