"""BatchNorm statistics of the backbone: per task (`--norm-stats task`), each task's batches update and use
their own; frozen (`--norm-stats frozen`), the pretrained ones are used and never updated."""
import pytest
import torch

from workbench.errors import RunError
from workbench.models.model import ModelConfig, MultiTaskModel
from workbench.runs import save_weights

CONFIG = dict(num_cls=5, num_det=3, num_seg=4, neck_channels=16)


def model(norm_stats: str, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(ModelConfig("resnet10t", norm_stats=norm_stats, **CONFIG))


def crops():  # bright small crops
    return 0.8 + 0.2 * torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def scenes():  # dark scenes
    return 0.3 * torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def own_stats(m: MultiTaskModel) -> list[torch.Tensor]:
    return [x.clone() for n in m._norms for x in (n.running_mean, n.running_var)]


def test_each_task_updates_its_own_statistics_and_the_layers_keep_theirs():
    m, shared = model("task"), model("shared")
    start = own_stats(m)
    m.train(), shared.train()
    m(crops(), tasks=("cls",))
    shared(crops(), tasks=("cls",))  # the same layers, one set of statistics, fed only the crops
    m(scenes(), tasks=("seg",))
    cls, seg, det = m.task_stats["cls"], m.task_stats["seg"], m.task_stats["det"]
    # the cls set is exactly what a shared set fed only the crops holds (momentum 0.1 from the same start)
    for i, n in enumerate(shared._norms):
        torch.testing.assert_close(cls.stats(i)[0], n.running_mean)
        torch.testing.assert_close(cls.stats(i)[1], n.running_var)
        assert int(cls.stats(i)[2]) == 1
    assert not torch.allclose(cls.mean_0, seg.mean_0)  # crops and scenes moved their own means
    assert torch.equal(det.mean_0, start[0]) and int(det.count_0) == 0  # det saw nothing
    assert all(torch.equal(a, b) for a, b in zip(own_stats(m), start))  # the layers' own buffers are back


def test_eval_uses_the_tasks_statistics_and_a_multi_task_call_equals_single_ones():
    m = model("task").train()
    m(crops(), tasks=("cls",))
    m(scenes(), tasks=("seg",))
    m.eval()
    x = scenes()
    with torch.no_grad():
        both = m(x, tasks=("cls", "seg"))
        alone = {t: m(x, tasks=(t,))[t] for t in ("cls", "seg")}
        torch.testing.assert_close(both["cls"], alone["cls"])
        torch.testing.assert_close(both["seg"], alone["seg"])
        for i, n in enumerate(m._norms):  # the seg statistics, put in by hand, give the seg output
            n.running_mean, n.running_var = m.task_stats["seg"].stats(i)[0].clone(), m.task_stats["seg"].stats(i)[1].clone()
        m.task_stats = None
        torch.testing.assert_close(m(x, tasks=("seg",))["seg"], alone["seg"])
        assert not torch.allclose(m(x, tasks=("cls",))["cls"], alone["cls"])  # cls used its own set


def test_statistics_are_saved_and_loaded_with_the_weights(tmp_path):
    m = model("task").train()
    m(crops(), tasks=("cls",))
    save_weights(m, tmp_path / "w.safetensors", "w")  # safetensors refuses tensors sharing memory: none do
    from safetensors.torch import load_file
    state = load_file(str(tmp_path / "w.safetensors"))
    assert torch.equal(state["task_stats.cls.mean_0"], m.task_stats["cls"].mean_0)
    other = model("task", seed=1)
    other.load_state_dict(state)
    m.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(crops(), tasks=("cls",))["cls"], m(crops(), tasks=("cls",))["cls"])


def test_unknown_norm_stats_refused():
    with pytest.raises(RunError, match="norm statistics must be one of shared, task, frozen"):
        model("per-task")


def backbone_passes(m: MultiTaskModel, tasks) -> int:
    calls = []
    handle = m.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        m(scenes(), tasks=tasks)
    handle.remove()
    return len(calls)


def test_frozen_statistics_never_move_while_the_batchnorm_scales_train():
    m = model("frozen").train()
    start = own_stats(m)
    assert m.training and not any(n.training for n in m._norms)  # train() leaves the backbone's norms in eval
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    out = m(crops(), tasks=("cls",))["cls"].sum() + m(scenes(), tasks=("seg",))["seg"].sum()
    out.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(own_stats(m), start))
    assert all(int(n.num_batches_tracked) == 0 for n in m._norms)
    assert m._norms[0].weight.grad is not None and m._norms[0].weight.grad.abs().sum() > 0  # scales still learn
    assert m.heads["cls"].drop.training  # the rest of the model is in training mode (dropout on)


def test_one_backbone_pass_serves_every_task_unless_the_statistics_are_per_task():
    assert backbone_passes(model("frozen").eval(), ("cls", "det", "seg")) == 1
    assert backbone_passes(model("shared").eval(), ("cls", "det", "seg")) == 1
    assert backbone_passes(model("task").eval(), ("cls", "det", "seg")) == 3


def test_one_pass_merges_the_task_statistics_into_their_pooled_mixture():
    from workbench.models.model import one_pass
    m = model("task").eval()
    for t, (mean, var) in {"cls": (0.0, 1.0), "det": (1.0, 2.0), "seg": (2.0, 3.0)}.items():
        for i in range(len(m._norms)):
            mu, v, _ = m.task_stats[t].stats(i)
            mu.fill_(mean), v.fill_(var)
    merged = one_pass(m)
    # the three tasks' activations pooled: mean (0 + 1 + 2) / 3 = 1; E[x^2] = ((1 + 0) + (2 + 1) + (3 + 4)) / 3 = 11/3,
    # var = 11/3 - 1^2 = 8/3
    for n in merged._norms:
        assert torch.allclose(n.running_mean, torch.ones_like(n.running_mean))
        assert torch.allclose(n.running_var, torch.full_like(n.running_var, 8 / 3))
    assert merged.norm_stats == "frozen" and merged.task_stats is None and not merged.training
    assert not any(k.startswith("task_stats.") for k in merged.state_dict())
    assert backbone_passes(merged, ("cls", "det", "seg")) == 1
    same = [k for k, v in m.state_dict().items() if not k.startswith("task_stats.") and "running_" not in k]
    assert all(torch.equal(m.state_dict()[k], merged.state_dict()[k]) for k in same)  # weights untouched
    shared = model("shared")
    assert one_pass(shared) is shared  # already one pass
