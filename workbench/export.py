"""`mtwb export RUN --format onnx`: a run's model as one ONNX file (workbench.models.onnx) and, beside
it, a JSON description of its inputs, outputs, pre- and post-processing and classes, so that the
model can be deployed without the workbench. `mtwb predict RUN --backend onnxruntime` runs the file
through the same prediction code as the PyTorch model (workbench.predict.cache.open_export;
tests/test_export.py: the same val metrics)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from workbench.data.spec import DatasetSpec
from workbench.data.transforms import canvas_hw
from workbench.errors import DataError, RunError
from workbench.io import atomic_path, hash_file, write_json
from workbench.models.onnx import INPUTS, OUTPUTS, export_onnx
from workbench.records.tasks import DET_STRIDE, TASKS
from workbench.runs import Run, load_model, open_run

FORMATS = ("onnx",)


def description_path(model_path: Path) -> Path:
    """model.onnx -> model.json beside it."""
    return Path(model_path).with_suffix(".json")


def class_names(run: Run) -> dict:
    """The data set's class names, when its dataset.yaml is still readable here; else {}."""
    try:
        spec = DatasetSpec(run.info.data)
        return {"cls": list(spec.cls_classes),
                "det": [{"id": int(c["id"]), "name": c.get("name", str(c["id"]))} for c in spec.det_categories],
                "seg": list(spec.seg_classes)}
    except (DataError, OSError, TypeError):
        return {}


def describe(run: Run, sizes: dict, opset: int, model_file: Path) -> dict:
    """What a deployment needs to know besides the graph."""
    try:
        ours = version("mtwb")
    except PackageNotFoundError:
        ours = "unknown"
    config = run.model_config()
    return {
        "format": "onnx", "opset": opset, "run": run.id, "weights_sha256": run.checkpoint_hash(),
        "onnx_sha256": hash_file(model_file), "exported_with": f"mtwb {ours}, torch {torch.__version__}",
        "tasks": list(run.tasks),
        "inputs": {INPUTS[t]: {"task": t, "shape": ["batch", 3, *sizes[t]], "dtype": "float32"} for t in run.tasks},
        "outputs": {k: v for k, v in {
            "cls_logits": ["batch", config.num_cls], "det_heatmap": ["batch", config.num_det, "H/4", "W/4"],
            "det_size": ["batch", 2, "H/4", "W/4"], "det_offset": ["batch", 2, "H/4", "W/4"],
            "seg_logits": ["batch", config.num_seg, "H/4", "W/4"]}.items()
            if any(k in OUTPUTS[t] for t in run.tasks)},
        "preprocess": {
            "all": "RGB, float32 in [0, 1] (uint8 / 255), NCHW; the mean / std normalisation is inside the graph",
            "cls": f"resize to the canvas {sizes['cls'][0]} x {sizes['cls'][1]} (H x W)",
            "det": f"letterbox to the canvas {sizes['det'][0]} x {sizes['det'][1]}: scale = min(H_canvas / H, "
                   "W_canvas / W), resize, pad bottom and right with 0",
            "seg": f"letterbox to the canvas {sizes['seg'][0]} x {sizes['seg'][1]} as det",
            "sizes": "any H, W that are multiples of 32 run; the canvases above are the ones the model trained on",
        },
        "postprocess": {
            "cls": "softmax over the classes",
            "det": f"CenterNet decoding at stride {DET_STRIDE}: sigmoid(det_heatmap); peaks = 3x3 local maxima; the "
                   "top 100 above 0.01; box centre = (cell x + offset x, cell y + offset y), width, height = det_size; "
                   f"xyxy x {DET_STRIDE} in canvas pixels; class-wise NMS at IoU 0.6; divide by the letterbox scale "
                   "for original pixels",
            "seg": "softmax over the classes at H/4 x W/4 of the canvas; crop the letterbox padding; resize to the "
                   "original image (bilinear) and take the argmax",
        },
        "outputs_of": {t: OUTPUTS[t] for t in run.tasks},
        "classes": class_names(run),
        "mean": list(config.mean or []), "std": list(config.std or []),
    }


def export_run(run_ref: str, fmt: str = "onnx", out: str | None = None, opset: int = 17) -> Path:
    """Write RUN's model in `fmt` (ONNX) to `out` (default runs/RUN/export/model.onnx) and its description
    beside it (model.json); both written to temporary names and renamed. Returns the model file."""
    if fmt not in FORMATS:
        raise RunError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = open_run(run_ref)
    path = Path(out) if out else run.onnx
    sizes = {t: canvas_hw(run.info.img_size[t]) for t in TASKS}
    model = load_model(run, torch.device("cpu"))
    with atomic_path(path) as tmp:
        export_onnx(model, sizes, tmp, run.tasks, opset)
        description = describe(run, sizes, opset, tmp)
    write_json(description_path(path), description)
    return path
