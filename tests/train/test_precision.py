"""--precision: autocast of the forward passes, a loss scale for fp16, recorded in run.json and the prediction cache."""
import json

import pytest
import torch

from tests.conftest import tiny_train_config
from workbench.errors import RunError
from workbench.models.model import ModelConfig, MultiTaskModel, resolve_precision
from workbench.predict import PredictConfig, predict_run
from workbench.train.trainer import Trainer, train

TASKS = ("cls", "det", "seg")


def test_auto_is_fp32_on_a_cpu_and_unknown_names_are_refused():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(RunError, match="precision must be one of auto, fp32, bf16, fp16"):
        resolve_precision("half", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has none)")
def test_auto_is_bf16_on_a_gpu_that_has_it():
    want = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == want


def test_bf16_forward_gives_float32_outputs_close_to_fp32():
    torch.manual_seed(0)
    m = MultiTaskModel(ModelConfig("resnet10t", num_cls=5, num_det=3, num_seg=4, neck_channels=16)).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
        low = m.set_precision("bf16")(x)
    flat = lambda out: [out["cls"], out["seg"], *out["det"].values()]  # noqa: E731
    for a, b in zip(flat(ref), flat(low)):
        assert b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.05 * a.abs().max() + 1e-3  # bf16 keeps ~3 significant digits
    assert not torch.equal(ref["seg"], low["seg"])  # the layers really ran in bf16


def test_a_bf16_train_step_on_cpu_is_finite_and_close_to_fp32(tiny_data, tmp_path):
    rows, weights = {}, {}
    for precision in ("fp32", "bf16"):
        (tmp_path / precision).mkdir()
        trainer = Trainer(tiny_train_config(tiny_data, tmp_path, precision, precision=precision), tmp_path / precision)
        assert trainer.model.precision == precision
        rows[precision] = trainer.train_step()
        weights[precision] = trainer.model.heads["seg"].classifier[-1].weight.detach().clone()
    for t in TASKS:
        assert torch.isfinite(torch.tensor(rows["bf16"][f"loss_{t}"]))
        assert rows["bf16"][f"loss_{t}"] == pytest.approx(rows["fp32"][f"loss_{t}"], rel=0.03), t
    torch.testing.assert_close(weights["bf16"], weights["fp32"], rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("path", ["task clipping, summed in place", "task clipping, flat (PCGrad's path)",
                                  "global clipping"])
def test_the_fp16_loss_scale_is_taken_off_before_clipping_and_the_step(tiny_data, tmp_path, path):
    """The fp16 scaler's arithmetic alone: the forward stays in fp32 (so no rounding differs) while the
    losses are scaled by 2^10 before backward. The logged gradient norms, the clipping and the step must
    then equal the unscaled run's: a clip threshold compared with scaled norms would clip 1024x too hard."""
    clip = "global" if path == "global clipping" else "task"
    params, rows = {}, {}
    for scaled in (False, True):
        name = f"{clip}-{scaled}"
        (tmp_path / name).mkdir()
        trainer = Trainer(tiny_train_config(tiny_data, tmp_path, name, clip=clip, clip_norm=0.01), tmp_path / name)
        if "flat" in path:
            trainer.balancer.uses_gradients = True  # the base balancer's combine: a sum of the flat vectors
        if scaled:
            trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=True)
        rows[scaled] = trainer.train_step()
        params[scaled] = [p.detach().clone() for p in trainer.model.parameters()]
        if scaled:
            assert trainer.scaler.get_scale() == 2.0 ** 10  # no overflow: the scale stays (growth after 2000 steps)
    for t in TASKS:
        assert rows[True][f"grad_{t}"] == pytest.approx(rows[False][f"grad_{t}"], rel=1e-4)
    for a, b in zip(params[False], params[True]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_lowered(tiny_data, tmp_path):
    (tmp_path / "inf").mkdir()
    trainer = Trainer(tiny_train_config(tiny_data, tmp_path, "inf"), tmp_path / "inf")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=3.0e38, enabled=True)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()  # losses x 3e38: the gradients overflow to inf
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.scaler.get_scale() == pytest.approx(1.5e38)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has none): fp16 autocast + scaler")
def test_an_fp16_train_step_on_a_gpu_is_finite(tiny_data, tmp_path):
    (tmp_path / "fp16").mkdir()
    trainer = Trainer(tiny_train_config(tiny_data, tmp_path, "fp16", precision="fp16", device="cuda"), tmp_path / "fp16")
    row = trainer.train_step()
    assert trainer.scaler.is_enabled() and all(torch.isfinite(torch.tensor(row[f"loss_{t}"])) for t in TASKS)


def test_run_json_and_the_prediction_cache_record_the_precision(tiny_data, tmp_path):
    run = train(tiny_train_config(tiny_data, tmp_path, "bf16", precision="bf16", steps_per_epoch=1), progress=False)
    assert json.loads((run / "run.json").read_text())["precision"] == "bf16"
    config = PredictConfig(str(run), str(tiny_data), "val", device="cpu")
    _, folder, reused = predict_run(config, progress=False)  # the run's own precision by default
    assert not reused and json.loads((folder / "meta.json").read_text())["precision"] == "bf16"
    _, _, reused = predict_run(PredictConfig(str(run), str(tiny_data), "val", device="cpu", precision="fp32"),
                               progress=False)
    assert not reused  # another precision: other predictions, the entry is rebuilt
    assert json.loads((folder / "meta.json").read_text())["precision"] == "fp32"
    assert predict_run(PredictConfig(str(run), str(tiny_data), "val", device="cpu", precision="fp32"),
                       progress=False)[2]
