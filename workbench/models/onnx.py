"""ONNX: a model's task graphs in one file, and a wrapper that runs the file like the model.

The file has one input and its outputs per task the run serves (each task's images have their own size,
and with per-task BatchNorm statistics each task's backbone pass has its own constants):

    cls_images (B, 3, H, W) -> cls_logits (B, K_cls)
    det_images (B, 3, H, W) -> det_heatmap (B, K_det, H/4, W/4), det_size (B, 2, H/4, W/4), det_offset (B, 2, H/4, W/4)
    seg_images (B, 3, H, W) -> seg_logits (B, K_seg, H/4, W/4)

Inputs are float32 RGB in [0, 1], NCHW, letterboxed (det, seg) or resized (cls) to a canvas whose sides
are multiples of 32; the mean / std normalisation is inside the graph. Batch, height and width are
dynamic. onnxruntime needs every input fed: `OnnxModel` feeds a task it does not ask for a 1 x 3 x 32 x 32
blank (a few milliseconds) and fetches only the outputs asked for.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from workbench.errors import RunError
from workbench.records.tasks import TASKS

INPUTS = {"cls": "cls_images", "det": "det_images", "seg": "seg_images"}
DET_KEYS = ("heatmap", "size", "offset")
OUTPUTS = {"cls": ["cls_logits"], "det": [f"det_{k}" for k in DET_KEYS], "seg": ["seg_logits"]}
BLANK = (1, 3, 32, 32)


class TaskGraphs(nn.Module):
    """The model with one positional input per task of `tasks` and flat outputs (OUTPUTS of each task,
    in task order): what torch.onnx.export traces."""

    def __init__(self, model: nn.Module, tasks: Sequence[str]):
        super().__init__()
        self.model, self.tasks = model, tuple(t for t in TASKS if t in tasks)

    def forward(self, *images: torch.Tensor):
        flat = []
        for task, x in zip(self.tasks, images):
            out = self.model(x, (task,))[task]
            flat += [out[k] for k in DET_KEYS] if task == "det" else [out]
        return tuple(flat)


def export_onnx(model: nn.Module, sizes: dict[str, tuple[int, int]], path: Path, tasks: Sequence[str] = TASKS,
                opset: int = 17) -> None:
    """Trace `model` (float32, eval, CPU) with a batch of 2 blank images per task of `tasks` at its canvas
    `sizes` (task -> (H, W)) and write the ONNX file `path` (TorchScript exporter; every dimension but the
    channels dynamic)."""
    model = model.to("cpu").float().eval()
    if hasattr(model, "set_precision"):
        model.set_precision("fp32")
    graphs = TaskGraphs(model, tasks)
    dummies = tuple(torch.zeros(2, 3, *sizes[t]) for t in graphs.tasks)
    names = [n for t in graphs.tasks for n in OUTPUTS[t]]
    # each task's dimensions are its own (one name shared by two inputs would tell onnxruntime they are equal)
    axes = {INPUTS[t]: {0: f"{t}_batch", 2: f"{t}_height", 3: f"{t}_width"} for t in graphs.tasks}
    axes.update({n: ({0: f"{t}_batch"} if n == "cls_logits" else {0: f"{t}_batch", 2: f"{t}_height/4", 3: f"{t}_width/4"})
                 for t in graphs.tasks for n in OUTPUTS[t]})
    # no constant folding: folding each task's BatchNorm statistics into the convolutions it shares with
    # the other tasks would write three copies of the backbone (60 MB instead of 20 for resnet10t);
    # onnxruntime fuses them in memory when it loads the file
    # the TorchScript exporter (dynamo=False) needs no onnxscript; torch warns that it is the legacy one, and
    # the tracer that a size check in a norm layer is a constant: both expected, neither for the user
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graphs, dummies, str(path), dynamo=False, opset_version=opset, do_constant_folding=False,
                          input_names=[INPUTS[t] for t in graphs.tasks], output_names=names, dynamic_axes=axes)


class OnnxModel:
    """An exported file run by onnxruntime (CPU), called like MultiTaskModel: `model(images, tasks)` ->
    {"cls": logits, "det": {"heatmap", "size", "offset"}, "seg": logits}, float32 torch tensors."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunError("onnxruntime is not installed: pip install onnxruntime (or the [export] extra)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a missing or corrupt file
            raise RunError(f"{path}: cannot load the ONNX model ({str(e).splitlines()[0]})") from None
        self.path = Path(path)
        given = {i.name for i in self.session.get_inputs()}
        self.tasks = tuple(t for t in TASKS if INPUTS[t] in given)

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, images: torch.Tensor, tasks: Sequence[str] = TASKS) -> dict:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = np.ascontiguousarray(x.cpu().numpy())
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise RunError(f"{self.path}: the exported model has no {', '.join(missing)} graph (it serves "
                           f"{', '.join(self.tasks)})")
        blank = np.zeros(BLANK, np.float32)
        feeds = {INPUTS[t]: (x if t in tasks else blank) for t in self.tasks}
        wanted = [n for t in self.tasks if t in tasks for n in OUTPUTS[t]]
        got = dict(zip(wanted, (torch.from_numpy(o) for o in self.session.run(wanted, feeds))))
        out = {}
        if "cls" in tasks:
            out["cls"] = got["cls_logits"]
        if "det" in tasks:
            out["det"] = {k: got[f"det_{k}"] for k in DET_KEYS}
        if "seg" in tasks:
            out["seg"] = got["seg_logits"]
        return out
