"""Run by tests/distributed/test_torchrun.py, as one process or under torchrun: a few joint train steps of the
tiny set; rank 0 saves the weights and the step rows. Not a test module itself.

    python steps_script.py DATA RUNS PRETRAINED OUT STEPS [skip-allreduce]
"""
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import tiny_train_config  # noqa: E402
from workbench.train.trainer import Trainer  # noqa: E402

data, runs, pretrained, out, steps = sys.argv[1:6]
config = tiny_train_config(Path(data), Path(runs), "dist", norm_stats="frozen", pretrained=pretrained,
                           clip="task", steps_per_epoch=int(steps))
config = replace(config, device="cuda" if "cuda" in sys.argv[6:] else "cpu")
(Path(runs) / "dist").mkdir(parents=True, exist_ok=True)
trainer = Trainer(config, Path(runs) / "dist")
trainer.model.heads["cls"].drop.p = 0.0
trainer.recipe.set_train_mode(trainer.model)  # dropout draws per rank differ from one process's draws
if "skip-allreduce" in sys.argv[6:]:
    trainer.dist.sum_ = lambda tensors: None  # the ranks' gradients are not combined: each its own slice
rows = [trainer.train_step() for _ in range(int(steps))]
if trainer.dist.main:
    torch.save({"state": trainer.model.state_dict(), "rows": rows, "world": trainer.dist.world}, out)
