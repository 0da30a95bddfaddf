"""Tests of workbench/train/trainer.py recipes and options on the tiny synthetic data set: each test
fails if its option were ignored."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench.errors import RunError
from workbench.models.losses import cls_loss
from workbench.train.average import average_run, average_state_dicts
from workbench.train.recipes import RECIPES, Joint, list_recipes, register_recipe
from workbench.train.streams import TaskStream, step_tasks
from workbench.train.trainer import Trainer, TrainConfig, count_steps, train

from tests.conftest import TINY_BATCH, TINY_SIZES, tiny_train_config


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.fixture
def probe_recipe():
    """A recipe registered for one test: a joint run that records what the trainer calls."""
    calls = []

    @register_recipe
    class Probe(Joint):
        name = "probe"

        def check(self, config):
            calls.append("check")
            super().check(config)

        def id_parts(self, config):
            return ("probe", "x")

        def set_train_mode(self, model):
            calls.append("set_train_mode")
            super().set_train_mode(model)

        def keep_best(self, trainer, model):
            calls.append("keep_best")
            super().keep_best(trainer, model)

        def finish_epoch(self, trainer):
            calls.append("finish_epoch")
    yield calls
    del RECIPES["probe"]


def test_a_registered_recipe_is_accepted_by_the_config_and_called_by_the_trainer(tiny_data, tmp_path, probe_recipe):
    assert "probe" in list_recipes()
    run = train(tiny_train_config(tiny_data, tmp_path, None, recipe="probe", epochs=2), progress=False)
    assert run.name.startswith("probe-x-resnet10t-") and info(run)["kind"] == "probe"
    assert (run / "model.safetensors").exists()
    improved = ["keep_best"] if info(run)["best"]["epoch"] == 2 else []  # epoch 2 kept only if it scored higher
    assert probe_recipe == ["check", "set_train_mode", "keep_best", "finish_epoch",
                            "set_train_mode", *improved, "finish_epoch"]


def test_recipe_registry_lists_the_recipes_and_refuses_an_unknown_name(tiny_data, tmp_path):
    assert list_recipes()[:3] == ["joint", "single", "headft"]
    with pytest.raises(RunError, match="unknown recipe 'multi'; choose one of joint, single, headft"):
        tiny_train_config(tiny_data, tmp_path, "x", recipe="multi")
    with pytest.raises(RunError, match="recipe single trains one task"):
        tiny_train_config(tiny_data, tmp_path, "x", recipe="single", tasks=("cls", "det"))
    with pytest.raises(RunError, match="recipe headft needs --from RUN"):
        tiny_train_config(tiny_data, tmp_path, "x", recipe="headft")


def test_single_task_run_trains_and_scores_only_its_task(tiny_data, tmp_path):
    run = train(tiny_train_config(tiny_data, tmp_path, "single-seg", recipe="single", tasks=("seg",)), progress=False)
    meta = info(run)
    assert meta["kind"] == "single" and meta["tasks"] == ["seg"]
    assert set(meta["best"]) == {"epoch", "source", "seg_miou", "score"}
    assert meta["best"]["score"] == meta["best"]["seg_miou"]
    steps = rows(run / "steps.csv")
    assert len(steps) == 2 and all(k.endswith("seg") for k in steps[0] if k.startswith(("loss_", "grad_")))
    assert float(steps[0]["grad_seg"]) > 0
    assert (run / "curves.png").stat().st_size > 0


def test_separable_head_convs_survive_reload_and_headft(tiny_data, tmp_path):
    from workbench.runs import load_model, open_run
    run = train(tiny_train_config(tiny_data, tmp_path, "sep", head_convs="separable"), progress=False)
    depthwise = lambda model: [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)  # noqa: E731
                               and m.groups == m.in_channels > 1 and m.kernel_size == (3, 3)]
    model = load_model(open_run(run), torch.device("cpu"))
    assert len(depthwise(model.neck)) == 4 and len(depthwise(model.heads)) == 3 + 5  # det branches, seg levels + classifier
    ft = train(TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(run), epochs=1, steps_per_epoch=1,
                           batch_size=dict(TINY_BATCH), name="sep-ft", runs_dir=str(tmp_path), device="cpu"), progress=False)
    assert open_run(ft).model_config().head_convs == "separable"
    with pytest.raises(RunError, match="head convolutions"):
        tiny_train_config(tiny_data, tmp_path, "bad", head_convs="dilated")


def test_light_heads_survive_reload_and_headft(tiny_data, tmp_path):
    from workbench.runs import load_model, open_run
    run = train(tiny_train_config(tiny_data, tmp_path, "light", heads="light"), progress=False)
    model = load_model(open_run(run), torch.device("cpu"))
    assert hasattr(model.heads["det"], "box") and not hasattr(model.heads["det"], "size")
    ft = train(TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(run), epochs=1, steps_per_epoch=1,
                           batch_size=dict(TINY_BATCH), name="light-ft", runs_dir=str(tmp_path), device="cpu"),
               progress=False)
    assert open_run(ft).model_config().heads == "light"
    with pytest.raises(RunError, match="heads must be"):
        tiny_train_config(tiny_data, tmp_path, "bad", heads="tiny")


def test_headft_freezes_backbone_and_keeps_each_heads_best_epoch(tiny_data, tiny_run, tmp_path):
    config = TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(tiny_run), epochs=2, steps_per_epoch=2,
                         batch_size=dict(TINY_BATCH), name="hf", runs_dir=str(tmp_path), device="cpu")
    run = train(config, progress=False)
    meta, parent, child = info(run), load_file(str(tiny_run / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert meta["kind"] == "headft" and meta["parents"] == ["tiny-r10"] and meta["img_size"] == TINY_SIZES
    frozen = [k for k in parent if k.startswith(("backbone.", "neck."))]
    assert frozen and all(torch.equal(parent[k], child[k]) for k in frozen)  # BatchNorm statistics included
    assert any(not torch.equal(parent[k], child[k]) for k in parent if k.startswith("heads."))
    epochs = rows(run / "metrics.csv")
    for metric in ("cls_top1", "det_map50", "seg_miou"):  # per-task selection over the epochs
        assert meta["best"][metric] == pytest.approx(max(float(r[metric]) for r in epochs), abs=1e-5)
    assert all(r["grad_cls"] == "" for r in epochs)  # no backbone gradient while frozen


def test_headft_one_pass_merges_the_statistics_and_runs_the_backbone_once(tiny_data, tiny_run, tmp_path):
    from tests.conftest import mtwb_here
    from workbench.runs import load_model, open_run
    batches = ",".join(f"{t}={b}" for t, b in TINY_BATCH.items())
    args = ["train", "headft", "--from", tiny_run, "--data", tiny_data, "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", batches, "--device", "cpu", "--name", "op"]
    refused = mtwb_here([*args, "--one-pass", "--tasks", "cls"], tmp_path)
    assert refused.returncode == 1 and "--one-pass changes the features of every task" in refused.stderr
    assert "not without det, seg" in refused.stderr and not (tmp_path / "runs" / "op").exists()
    done = mtwb_here([*args, "--one-pass"], tmp_path)
    assert done.returncode == 0, done.stderr
    run = open_run(tmp_path / "runs" / "op")
    assert run.model_config().norm_stats == "frozen" and "norm_stats: frozen" in (run.path / "config.yaml").read_text()
    parent, child = load_file(str(tiny_run / "model.safetensors")), load_file(str(run.weights))
    assert not any(k.startswith("task_stats.") for k in child)
    # the first BatchNorm layer's statistics: the pooled mixture of the parent's three tasks' (by hand)
    before = load_model(open_run(tiny_run), torch.device("cpu"))
    key = next(f"{n}.running_mean" for n, m in before.named_modules() if m is before._norms[0])  # task_stats.*_0's layer
    means = [parent[f"task_stats.{t}.mean_0"] for t in ("cls", "det", "seg")]
    variances = [parent[f"task_stats.{t}.var_0"] for t in ("cls", "det", "seg")]
    mean = sum(means) / 3
    torch.testing.assert_close(child[key], mean)
    torch.testing.assert_close(child[key.replace("mean", "var")],
                               sum(v + mu ** 2 for v, mu in zip(variances, means)) / 3 - mean ** 2)
    assert not torch.equal(child[key], parent[key])  # not the layer's own (pretrained) statistics
    weights = [k for k in child if k.startswith("backbone.") and "running_" not in k]
    assert all(torch.equal(parent[k], child[k]) for k in weights)  # the backbone stays frozen
    neck = [k for k in child if k.startswith("neck.")]  # by default fine-tuned with the heads (--unfreeze neck)
    assert "unfreeze:\n- neck" in (run.path / "config.yaml").read_text()
    assert any(not torch.equal(parent[k], child[k]) for k in neck)
    model = load_model(run, torch.device("cpu"))
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64), ("cls", "det", "seg"))
    assert len(calls) == 1


def test_ema_copy_is_validated_and_saved_and_top_k_checkpoints_kept(tiny_data, tmp_path):
    run = train(tiny_train_config(tiny_data, tmp_path, "ema", epochs=3, ema=0.5, keep_top=2), progress=False)
    epochs = rows(run / "metrics.csv")
    assert "ema_score" in epochs[0] and (run / "ema.safetensors").exists()
    kept = info(run)["checkpoints"]
    assert len(kept) == 2 and len(list((run / "checkpoints").glob("*.safetensors"))) == 2
    assert [c["score"] for c in kept] == pytest.approx(sorted((float(r["score"]) for r in epochs), reverse=True)[:2], abs=1e-5)
    best = info(run)["best"]
    assert best["source"] in ("raw", "ema")  # model.safetensors: the better of the raw and EMA weights
    assert best["score"] == pytest.approx(max(max(float(r["score"]), float(r["ema_score"])) for r in epochs), abs=1e-5)
    avg = average_run(str(run), top=2, runs_dir=tmp_path, device="cpu")
    meta = info(avg)
    assert meta["kind"] == "avg" and meta["parents"] == ["ema"] and len(meta["averaged"]) == 2
    a, b = (load_file(str(run / c["file"])) for c in kept)
    mean = load_file(str(avg / "model.safetensors"))
    key = next(k for k in mean if k.endswith("conv1.weight") or k.endswith(".weight"))
    torch.testing.assert_close(mean[key], (a[key].double() / 2 + b[key].double() / 2).float())
    with pytest.raises(RunError, match="only 2 checkpoints"):
        average_run(str(run), top=3, runs_dir=tmp_path, device="cpu", name="x")


def test_ema_update_by_hand(tiny_data, tmp_path):
    """timm's ModelEmaV3 copies the weights for the first two steps, then ema = d * ema + (1 - d) * w."""
    (tmp_path / "e").mkdir()
    trainer = Trainer(tiny_train_config(tiny_data, tmp_path, "e", ema=0.5, steps_per_epoch=10), tmp_path / "e")
    key = "heads.cls.fc.weight" if "heads.cls.fc.weight" in trainer.model.state_dict() else next(
        k for k, v in trainer.model.state_dict().items() if k.startswith("heads.cls") and v.is_floating_point())
    trainer.train_step()
    trainer.train_step()
    w1 = trainer.model.state_dict()[key].clone()
    assert torch.equal(trainer.ema.module.state_dict()[key], w1)
    trainer.train_step()
    w2 = trainer.model.state_dict()[key]
    assert not torch.equal(w1, w2)
    torch.testing.assert_close(trainer.ema.module.state_dict()[key], 0.5 * w1 + 0.5 * w2)


def test_average_state_dicts_by_hand():
    out = average_state_dicts([{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)},
                               {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}])
    assert out["w"].tolist() == [2.0, 4.0] and out["n"].item() == 5
    with pytest.raises(RunError, match="other keys"):
        average_state_dicts([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])


def test_task_budget_stops_one_task_early_while_others_go_on(tiny_data, tmp_path):
    run = train(tiny_train_config(tiny_data, tmp_path, "budget", steps_per_epoch=3, task_steps={"cls": 1}), progress=False)
    steps = rows(run / "steps.csv")
    assert [s["loss_cls"] != "" for s in steps] == [True, False, False]
    assert all(s["loss_det"] != "" and s["loss_seg"] != "" for s in steps)


def test_proportional_sampling_draws_tasks_by_data_set_size():
    sizes = {"cls": 300, "det": 100, "seg": 100}
    drawn = [step_tasks("proportional", list(sizes), sizes, 0, s)[0] for s in range(3000)]
    assert drawn.count("cls") / 3000 == pytest.approx(0.6, abs=0.03)
    assert step_tasks("round-robin", list(sizes), sizes, 0, 7) == ["cls", "det", "seg"]
    assert drawn == [step_tasks("proportional", list(sizes), sizes, 0, s)[0] for s in range(3000)]  # seeded by step


def test_equal_compute_sampling_gives_each_task_an_equal_share_of_pixels():
    cost = {"cls": 1, "det": 5, "seg": 5}  # a det or seg batch costs five cls batches
    taken, drawn = {t: 0 for t in cost}, []
    for step in range(21):
        [task] = step_tasks("equal-compute", list(cost), {}, 0, step, taken, cost)
        taken[task] += 1
        drawn.append(task[0])
    # all three at 0: cls, det, seg in order; then cls until its 5 batches match the others' 5 (a tie
    # goes to the earlier task), then det, seg, ...
    assert "".join(drawn) == "cdscccc" + "cdscccc" + "cdscccc"
    assert taken == {"cls": 15, "det": 3, "seg": 3}


def test_equal_compute_epoch_lets_every_task_pass_once_through_its_data(tiny_data, tmp_path):
    config = tiny_train_config(tiny_data, tmp_path, "ec", steps_per_epoch=None, sampling="equal-compute",
                               task_share={"cls": 1, "det": 1, "seg": 1})
    # batch costs in pixels: cls 8 x 32 x 32 = 8192, det and seg 4 x 64 x 64 = 16384
    streams = {"cls": TaskStream(40, 8, 0, "cls"), "det": TaskStream(20, 4, 0, "det"), "seg": TaskStream(8, 4, 0, "seg")}
    # passes cost cls 5 x 8192, det 5 x 16384 (the longest), seg 2 x 16384: det's pass at equal shares
    # takes 81920 / 8192 = 10 cls steps, 5 det and 5 seg
    assert count_steps(config, streams) == 20


def test_equal_compute_run_takes_one_task_a_step(tiny_data, tmp_path):
    run = train(tiny_train_config(tiny_data, tmp_path, "ec", steps_per_epoch=6, sampling="equal-compute",
                                  task_share={"cls": 1, "det": 1, "seg": 1}), progress=False)
    steps = rows(run / "steps.csv")
    # tiny batches: cls 8192 px, det and seg 16384: cls, det, seg, cls (8192 < 16384), cls (a tie: the
    # earlier task), det
    taken = ["".join(t[0] for t in ("cls", "det", "seg") if s[f"loss_{t}"] != "") for s in steps]
    assert taken == ["c", "d", "s", "c", "c", "d"]


def test_a_joint_run_samples_equal_compute_at_the_default_shares_by_default(tiny_data, tmp_path):
    joint = tiny_train_config(tiny_data, tmp_path, "j", sampling=None)  # None: TrainConfig's default
    assert (joint.sampling, joint.task_share) == ("equal-compute", {"cls": 1, "det": 2, "seg": 2})
    two = tiny_train_config(tiny_data, tmp_path, "two", sampling=None, tasks=("cls", "seg"), task_share={"seg": 3})
    assert (two.sampling, two.task_share) == ("equal-compute", {"cls": 1, "seg": 3})  # a share not given: the default's
    single = tiny_train_config(tiny_data, tmp_path, "s", recipe="single", tasks=("det",))
    affinity = tiny_train_config(tiny_data, tmp_path, "a", affinity_every=5)  # it needs a batch of every task
    assert [(c.sampling, c.task_share) for c in (single, affinity)] == [("round-robin", None)] * 2
    explicit = tiny_train_config(tiny_data, tmp_path, "rr", sampling="round-robin")
    assert (explicit.sampling, explicit.task_share) == ("round-robin", None)


def test_task_share_weights_equal_compute_sampling(tiny_data, tmp_path):
    config = tiny_train_config(tiny_data, tmp_path, "share", steps_per_epoch=6, sampling="equal-compute",
                               task_share={"cls": 2, "det": 1, "seg": 1})
    (tmp_path / "share").mkdir()
    trainer = Trainer(config, tmp_path / "share")
    # cls's share doubled: its 8192-px batches count 4096 against det's and seg's 16384: cls, det, seg,
    # then cls three times (8192, 12288, 16384) where an equal share took two
    assert ["".join(trainer.plan_step(s).batches) for s in range(6)] == ["cls", "det", "seg", "cls", "cls", "cls"]
    with pytest.raises(RunError, match="--sampling equal-compute"):
        tiny_train_config(tiny_data, tmp_path, "rr", sampling="round-robin", task_share={"cls": 2})
    with pytest.raises(RunError, match=r"--task-share names det, which this run does not train \(tasks: cls,seg\)"):
        tiny_train_config(tiny_data, tmp_path, "stray", tasks=("cls", "seg"), sampling="equal-compute", task_share={"det": 2})
    with pytest.raises(RunError, match="> 0"):
        tiny_train_config(tiny_data, tmp_path, "zero", sampling="equal-compute", task_share={"cls": 0})


def test_class_balanced_stream_draws_classes_equally_and_state_resumes():
    labels = np.array([0] * 90 + [1] * 10)
    from workbench.data.balance import cls_sample_weights
    stream = TaskStream(100, 10, seed=0, task="cls", weights=cls_sample_weights(labels, 2))
    drawn = np.concatenate([labels[stream.next()] for _ in range(200)])
    assert drawn.mean() == pytest.approx(0.5, abs=0.04)
    plain = TaskStream(100, 10, seed=0, task="cls")
    first = [plain.next() for _ in range(15)]  # crosses a pass
    again = TaskStream(100, 10, seed=0, task="cls")
    again.load_state({"epoch": 1, "pos": 20})
    assert again.next() == first[12]
    assert sorted(sum(first[:10], [])) == list(range(100))  # a pass is a permutation


def test_class_weights_reach_the_losses(tiny_data, tmp_path):
    config = tiny_train_config(tiny_data, tmp_path, "cb", class_balance={"cls": "loss", "seg": "loss", "det": "sample"})
    (tmp_path / "cb").mkdir()
    trainer = Trainer(config, tmp_path / "cb")
    assert set(trainer.class_weights) == {"cls", "seg"} and trainer.streams["det"].weights is not None
    w = trainer.class_weights["cls"]
    logits, labels = torch.randn(6, len(w)), torch.tensor([0, 0, 0, 0, 1, 2])
    if not torch.allclose(w, w[0]):  # imbalanced classes: the weighted loss differs from the plain one
        assert cls_loss(logits, labels, weight=w).item() != pytest.approx(cls_loss(logits, labels).item())


def test_global_clipping_and_accumulation_in_a_step(tiny_data, tmp_path):
    (tmp_path / "clip").mkdir()
    trainer = Trainer(tiny_train_config(tiny_data, tmp_path, "clip", clip="global", clip_norm=1e-3, accum=2), tmp_path / "clip")
    row = trainer.train_step()
    norm = torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None])
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)
    assert trainer.batches_taken == {"cls": 2, "det": 2, "seg": 2}
    assert row["grad_cls"] > 1e-3  # logged before clipping


@pytest.mark.parametrize("clip", ["task", "none"])
def test_in_place_gradient_sum_equals_the_flat_per_task_path(tiny_data, tmp_path, clip):
    """Without a gradient-combining balancer the tasks' backbone gradients are summed in place per
    parameter (task clipping: each divided by its norm, the common norm applied at the end); the
    reference is the flat per-task path PCGrad uses, with clip_task_gradients and a plain sum."""
    shared_grads, seen = {}, {}
    for path in ("in-place", "flat"):
        (tmp_path / path).mkdir()
        trainer = Trainer(tiny_train_config(tiny_data, tmp_path, path, clip=clip, clip_norm=0.01), tmp_path / path)
        if path == "flat":
            trainer.balancer.uses_gradients = True  # the base balancer's combine: a sum of the flat vectors
            original = trainer.balancer.combine
            trainer.balancer.combine = lambda grads: seen.update(grads) or original(grads)
        row = trainer.train_step()
        shared_grads[path] = [p.grad for p in trainer.shared]
        assert len({round(row[f"grad_{t}"], 4) for t in ("cls", "det", "seg")}) == 3  # raw norms differ
    assert [g is None for g in shared_grads["in-place"]] == [g is None for g in shared_grads["flat"]]
    for a, b in zip(shared_grads["in-place"], shared_grads["flat"]):
        if a is not None:
            # float32 sums in another order: equal to rounding (depthwise weights have ~1e-8 gradients)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
    expected = [0.01] * 3 if clip == "task" else [row[f"grad_{t}"] for t in ("cls", "det", "seg")]
    assert [g.norm().item() for g in seen.values()] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("common", ["running", "step"])
def test_task_clipping_with_one_task_a_step_rescales_to_the_common_norm(tiny_data, tmp_path, common):
    """Equal-compute sampling, one task a step, --clip task with a threshold no norm reaches: with
    --clip-common running each step's backbone gradient has the mean of every task's last raw norm (the
    norms logged in the step rows), with step its own raw norm (a lone task is only clipped)."""
    (tmp_path / common).mkdir()
    trainer = Trainer(tiny_train_config(tiny_data, tmp_path, common, sampling="equal-compute", clip="task",
                                        clip_norm=1e6, clip_common=common, steps_per_epoch=12), tmp_path / common)
    last, lone = {}, 0
    for _ in range(12):
        row = trainer.train_step()
        step = {t: row[f"grad_{t}"] for t in ("cls", "det", "seg") if row[f"grad_{t}"] is not None}
        last.update(step)
        norm = torch.nn.utils.get_total_norm([p.grad for p in trainer.shared if p.grad is not None]).item()
        if len(step) == 1:
            lone += 1
            own = next(iter(step.values()))
            expected = sum(last.values()) / len(last) if common == "running" else own
            assert norm == pytest.approx(expected, rel=1e-4)
    assert lone == 12 and set(last) == {"cls", "det", "seg"}
    assert len({round(v, 4) for v in last.values()}) == 3  # the norms differ: running and step part ways
    saved = trainer.state()["progress"]["last_norms"]  # what a resume continues from
    assert saved == (pytest.approx(last, rel=1e-4) if common == "running" else {})


def test_pretrained_file_that_does_not_fit_is_refused_with_keys(tiny_data, tmp_path):
    import timm
    state = {k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}
    save_file(state, str(tmp_path / "r10.safetensors"))
    with pytest.raises(RunError, match=r"r10.safetensors: weights do not fit convnext_atto: \d+ missing \(.*stages"):
        train(tiny_train_config(tiny_data, tmp_path, "bad", backbone="convnext_atto", pretrained=str(tmp_path / "r10.safetensors")),
              progress=False)
    torch.save({"state_dict": state}, tmp_path / "r10.pth")  # a torch file, wrapped, loads with weights_only
    run = train(tiny_train_config(tiny_data, tmp_path, "good", pretrained=str(tmp_path / "r10.pth"), epochs=1,
                                  steps_per_epoch=1, lr=1e-9, warmup_steps=1), progress=False)
    assert info(run)["status"] == "complete"


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    code = "import sys; from workbench.cli import run; sys.argv = ['mtwb'] + sys.argv[1:]; run()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_resume_after_sigkill_ends_with_the_metrics_of_an_uninterrupted_run(tiny_data, tmp_path):
    common = ["--data", str(tiny_data), "--backbone", "resnet10t", "--epochs", "5", "--steps-per-epoch", "3",
              "--img-size", "cls=32,det=64,seg=64", "--batch-size", "cls=8,det=4,seg=4", "--device", "cpu",
              "--checkpoint-every", "2", "--ema", "0.5", "--balance", "uncertainty", "--clip", "task",
              "--prefetch"]  # batches assembled in the background thread: the resume must still be exact
    whole = _cli("train", "joint", *common, "--name", "whole", cwd=tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stdout.read().decode()[-2000:]
    cut = _cli("train", "joint", *common, "--name", "cut", cwd=tmp_path)
    state = tmp_path / "runs" / "cut" / "state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and cut.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # somewhere in the run after its first checkpoint (5 epochs: it cannot have finished yet)
    assert cut.poll() is None, "the run finished before it could be killed"
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait()
    assert info(tmp_path / "runs" / "cut")["status"] == "running"
    resumed = _cli("train", "--resume", "cut", cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()[-2000:]

    def strip(run):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows(tmp_path / "runs" / run / "metrics.csv")]
    assert strip("cut") == strip("whole")
    assert info(tmp_path / "runs" / "cut")["best"] == info(tmp_path / "runs" / "whole")["best"]
    a, b = load_file(str(tmp_path / "runs/cut/model.safetensors")), load_file(str(tmp_path / "runs/whole/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = lambda run: [r for r in rows(tmp_path / "runs" / run / "steps.csv")]  # noqa: E731
    assert steps("cut") == steps("whole")


def interrupt_at_step(monkeypatch, n: int):
    """Make Trainer.train_step raise KeyboardInterrupt (Ctrl-C) at its n-th call; returns the original."""
    calls = {"n": 0}
    original = Trainer.train_step

    def interrupt(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(self, **kwargs)
    monkeypatch.setattr(Trainer, "train_step", interrupt)
    return original


def test_ctrl_c_marks_the_run_interrupted_and_it_resumes(tiny_data, tmp_path, monkeypatch):
    from workbench.train.trainer import resume
    config = tiny_train_config(tiny_data, tmp_path, "ctrlc", epochs=2)
    original = interrupt_at_step(monkeypatch, 3)  # the first step of epoch 2 (2 steps an epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    assert info(tmp_path / "ctrlc")["status"] == "interrupted"
    assert (tmp_path / "ctrlc" / "curves.png").exists()  # drawn at every epoch's end
    monkeypatch.setattr(Trainer, "train_step", original)
    run = resume(tmp_path / "ctrlc", progress=False)
    assert info(run)["status"] == "complete" and len(rows(run / "metrics.csv")) == 2


@pytest.mark.parametrize("parts", ["neck", "norms"])
def test_headft_unfreeze_trains_the_named_shared_parts_and_keeps_the_best_epoch_whole(tiny_data, tiny_run, tmp_path,
                                                                                       parts):
    from workbench.models.model import one_pass
    from workbench.runs import load_model, open_run
    config = TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(tiny_run), epochs=2, steps_per_epoch=2,
                         batch_size=dict(TINY_BATCH), name="uf", runs_dir=str(tmp_path), device="cpu",
                         norm_stats="frozen", unfreeze=(parts,))
    run = train(config, progress=False)
    parent, child = load_file(str(tiny_run / "model.safetensors")), load_file(str(run / "model.safetensors"))
    changed = {k for k in parent if k in child and not torch.equal(parent[k], child[k])}
    norms = {k for k in changed if k.startswith("backbone.") and "running_" not in k}
    assert any(k.startswith("heads.") for k in changed)
    if parts == "neck":
        assert any(k.startswith("neck.") for k in changed) and not norms
    else:  # the scales and shifts of BatchNorm layers only: every convolution and the statistics as merged
        model = load_model(open_run(run), torch.device("cpu"))
        affine = {f"backbone.{n}.{p}" for n, m in model.backbone.named_modules() if m in model._norms
                  for p in ("weight", "bias")}
        assert norms and norms <= affine and not any(k.startswith("neck.") for k in changed)
    merged = one_pass(load_model(open_run(tiny_run), torch.device("cpu"))).state_dict()
    stats = [k for k in child if "running_" in k]
    assert stats and all(torch.equal(child[k], merged[k]) for k in stats)  # training never updates them
    best = info(run)["best"]  # heads and shared parts from one epoch, the best by score
    assert best["source"] == "raw" and best["score"] == pytest.approx(
        max(float(r["score"]) for r in rows(run / "metrics.csv")), abs=1e-5)


def test_unfreeze_is_refused_when_a_head_left_out_reads_what_it_trains(tiny_data, tiny_run, tmp_path):
    def config(tasks, parts):
        return TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(tiny_run), epochs=1, steps_per_epoch=1,
                           batch_size=dict(TINY_BATCH), name="uf", runs_dir=str(tmp_path), device="cpu",
                           tasks=tasks, unfreeze=parts)
    with pytest.raises(RunError, match="changes features that the seg head of tiny-r10 reads"):
        train(config(("det",), ("neck",)), progress=False)
    with pytest.raises(RunError, match="that the cls head of tiny-r10 reads"):
        train(config(("det", "seg"), ("norms",)), progress=False)
    assert not (tmp_path / "uf").exists()
    run = train(config(("det", "seg"), ("neck",)), progress=False)  # cls reads the backbone only: its head stays valid
    assert info(run)["best"]["score"] > 0


def test_a_one_pass_run_made_before_unfreeze_resumes_as_it_began(tiny_data, tiny_run, tmp_path, monkeypatch):
    """Its config.yaml has no unfreeze: it trained the heads only, and goes on so (not with today's default neck)."""
    from workbench.train.trainer import resume
    config = TrainConfig(data=str(tiny_data), recipe="headft", from_run=str(tiny_run), epochs=2, steps_per_epoch=2,
                         batch_size=dict(TINY_BATCH), name="old", runs_dir=str(tmp_path), device="cpu",
                         norm_stats="frozen", unfreeze=("none",))
    original = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    yaml_file = tmp_path / "old" / "config.yaml"
    text = yaml_file.read_text()
    assert "unfreeze: []\n" in text
    yaml_file.write_text(text.replace("unfreeze: []\n", ""))
    run = resume(tmp_path / "old", progress=False)
    parent, child = load_file(str(tiny_run / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert info(run)["status"] == "complete" and info(run)["best"]["source"] == "per-task heads"
    assert all(torch.equal(parent[k], child[k]) for k in child if k.startswith("neck."))


def test_unfreeze_is_checked():
    with pytest.raises(RunError, match="unfreeze takes some of norms, neck"):
        TrainConfig(data="d", recipe="headft", from_run="r", unfreeze=("backbone",))
    with pytest.raises(RunError, match="unfreeze is for recipe headft"):
        TrainConfig(data="d", backbone="resnet10t", unfreeze=("neck",))
    # the default: the neck with --one-pass (frozen statistics), nothing otherwise; "none" says nothing
    assert TrainConfig(data="d", recipe="headft", from_run="r", norm_stats="frozen").unfreeze == ("neck",)
    assert TrainConfig(data="d", recipe="headft", from_run="r").unfreeze == ()
    assert TrainConfig(data="d", recipe="headft", from_run="r", norm_stats="frozen", unfreeze=("none",)).unfreeze == ()
    assert TrainConfig(data="d", backbone="resnet10t").unfreeze == ()
