"""The AllInOne model: one timm backbone, an FPN neck, and a head per task.

Forward contract: `model(images, tasks=("cls", "det", "seg"))` returns `{task: output}` for the tasks
asked. Images are (B, 3, H, W) float in [0, 1] (or uint8 in [0, 255]); the model normalises them with
its own mean and std, so callers never need to know the backbone's preprocessing.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import replace, asdict, dataclass
from pathlib import Path
from typing import Sequence

import timm
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from workbench.errors import DeviceError, RunError, did_you_mean
from workbench.models.heads import FPN, AttentionPoolHead, CenterHead, SemanticHead
from workbench.records.tasks import DET_STRIDE, TASKS



@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (weights come from the run folder)."""

    backbone: str
    num_cls: int
    num_det: int
    num_seg: int
    neck_channels: int = 64
    pretrained: str | None = None  # local weights file for the backbone, or "timm" for timm's own download
    mean: tuple[float, float, float] | None = None  # None: the backbone's pretrained_cfg
    std: tuple[float, float, float] | None = None
    det_size_activation: str = "softplus"  # runs written before it existed used "relu" (from_dict)
    head_convs: str = "conv"  # "conv" or "separable" 3x3s in the neck and heads (models.heads.conv_gn_relu)
    heads: str = "full"  # det/seg head layout, "full" or "light" (models.heads.HEAD_LAYOUTS)
    norm_stats: str = "shared"  # BatchNorm running statistics of the backbone: "shared", "task" (per task) or
    # "frozen" (the pretrained ones, never updated: one backbone pass serves every task)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean) if self.mean else None
        d["std"] = list(self.std) if self.std else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for k in ("mean", "std"):
            d[k] = tuple(d[k]) if d.get(k) else None
        d.setdefault("det_size_activation", "relu")  # older run.json: the head had a ReLU
        d.setdefault("head_convs", "conv")
        d.setdefault("heads", "full")  # older run.json: the full heads
        d.setdefault("norm_stats", "shared")
        return cls(**d)


NORM_STATS = ("shared", "task", "frozen")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """"auto" -> bf16 on a GPU that has it, else fp32 (CPU autocast in bf16 is slower than fp32 on CPUs
    without AMX/AVX512-BF16 and changes results); anything else is checked and passed through."""
    if name not in PRECISIONS:
        raise RunError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return name


class TaskNormStats(nn.Module):
    """One task's copy of the running statistics of a list of BatchNorm layers (buffers mean_i, var_i,
    count_i), starting from the layers' own (the pretrained statistics)."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        for i, m in enumerate(norms):
            self.register_buffer(f"mean_{i}", m.running_mean.detach().clone())
            self.register_buffer(f"var_{i}", m.running_var.detach().clone())
            self.register_buffer(f"count_{i}", m.num_batches_tracked.detach().clone())

    def stats(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean_{i}"), getattr(self, f"var_{i}"), getattr(self, f"count_{i}")


def one_pass(model: "MultiTaskModel") -> "MultiTaskModel":
    """A per-task-statistics model turned into one whose backbone runs once for all three tasks.

    Each BatchNorm layer gets one set of running statistics, the equal mixture of the tasks' own:
    mean = mean of the task means, var = mean of (task var + task mean^2) - mean^2 (the variance of
    the three tasks' activations pooled), and keeps it ("frozen": training never updates it). The
    features shift for every task (each was trained under its own statistics), so the heads are then
    fine-tuned on them (`mtwb train headft --one-pass`). A model with shared or frozen statistics
    already runs one pass and is returned as it is.
    """
    if model.task_stats is None:
        return model
    merged = MultiTaskModel(replace(model.config, norm_stats="frozen", pretrained=None))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("task_stats.")}
    names = {id(m): f"backbone.{n}" for n, m in model.backbone.named_modules()}
    for i, m in enumerate(model._norms):
        stats = [model.task_stats[t].stats(i) for t in model.task_stats]
        mean = torch.stack([mu for mu, _, _ in stats]).mean(0)
        var = torch.stack([v + mu ** 2 for mu, v, _ in stats]).mean(0) - mean ** 2
        state[f"{names[id(m)]}.running_mean"], state[f"{names[id(m)]}.running_var"] = mean, var.clamp_min(0)
    merged.load_state_dict(state)
    device = next(model.parameters()).device
    return merged.to(device).train(model.training).set_precision(model.precision)


def fold_batchnorm(backbone: nn.Module) -> nn.Module | None:
    """A copy of `backbone` (in eval mode) with every BatchNorm layer folded into the convolution
    registered just before it in the same parent (torch.nn.utils.fusion.fuse_conv_bn_eval; a timm
    BatchNormAct2d keeps its activation), or None when nothing folds.

    Registration order is how timm's CNNs (EfficientNet, ResNet, MobileNet ...) run their layers, not a
    rule of PyTorch, so the copy is checked against the original on a random input: a backbone whose
    layers run in another order (e.g. BatchNorm before its convolution) gets None, with a warning."""
    folded = copy.deepcopy(backbone).eval()
    count = 0
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (before_name, before), (bn_name, bn) in zip(children, children[1:]):
            # the convolution: the module before, or the last of a Sequential before (timm's deep stems)
            owner, conv_name = (before, str(len(before) - 1)) if isinstance(before, nn.Sequential) and len(before) \
                else (parent, before_name)
            conv = getattr(owner, conv_name)
            if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
                rest = nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))
                setattr(parent, bn_name, rest)
                count += 1
    if not count:
        return None
    folded.to(memory_format=torch.channels_last)
    param = next(backbone.parameters())
    x = torch.randn(2, 3, 64, 64, device=param.device, dtype=param.dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        for a, b in zip(backbone(x), folded(x)):
            if not torch.allclose(b, a, rtol=1e-3, atol=1e-3 * float(a.abs().max()) + 1e-6):
                warnings.warn(f"{type(backbone).__name__}: folding BatchNorm into the convolutions changed the "
                              "features (layers not run in the order registered); predicting without folding")
                return None
    return folded


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights holding NaN or infinity, naming the file and the first such tensor.

    Raises:
        RunError: a floating-point tensor with a non-finite value.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise RunError(f"{path}: tensor '{name}' holds {bad} non-finite value(s) (NaN or inf): the weights are "
                           "broken, not the settings used to load them")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state dict: safetensors, or a torch file loaded with weights_only=True
    (a {"state_dict": ...}, {"model": ...} or {"state_dict_ema": ...} wrapper is unwrapped)."""
    if not path.is_file():
        raise RunError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{path}: not a state dict of tensors")
    check_finite(state, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_pretrained(name: str, path: Path) -> None:
    """Refuse a weights file that does not fit the backbone, listing the keys that do not match.

    timm loads feature extractors leniently: a file of a deeper sibling (efficientnet_lite0 weights for
    efficientnet_lite1) would leave blocks at random initialisation without a word. Every parameter and
    buffer of the timm model (its classifier excepted) must be in the file with the same shape.
    """
    state = read_state_dict(path)
    try:
        reference = timm.create_model(name).state_dict()
    except RuntimeError as e:
        raise RunError(f"backbone {name!r}: {str(e).splitlines()[0]}") from None
    classifier = timm.create_model(name, pretrained=False).pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = {k: v for k, v in reference.items()
                if not any(k.startswith(h + ".") for h in heads) and not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                    if k in state and state[k].shape != v.shape)
    if missing or shapes:
        unexpected = sorted(set(state) - set(reference))
        parts = [f"{len(missing)} missing ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})" if missing else "",
                 f"{len(shapes)} of another shape (file vs model: {'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''})" if shapes else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''})" if unexpected else ""]
        raise RunError(f"{path}: weights do not fit {name}: " + "; ".join(p for p in parts if p))


def check_backbone(name: str) -> None:
    """Refuse a name that is not a timm model, suggesting close ones (timm's own error names neither)."""
    if not timm.is_model(name):
        raise RunError(f"backbone {name!r}: not a timm model{did_you_mean(name, timm.list_models())}")


def create_backbone(name: str, pretrained: str | None) -> nn.Module:
    """timm feature extractor; `pretrained` is a local file (safetensors / state dict), "timm", or None."""
    check_backbone(name)
    kwargs: dict = {"features_only": True}
    if pretrained == "timm":
        kwargs["pretrained"] = True
    elif pretrained:
        path = Path(pretrained)
        check_pretrained(name, path)
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path.resolve())})
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names and mismatched weights
        raise RunError(f"backbone {name!r}: {str(e).splitlines()[0]}") from None


class MultiTaskModel(nn.Module):
    """Shared backbone + FPN + cls/det/seg heads.

    Args:
        config: ModelConfig (backbone name, class counts, neck width, normalisation).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone, config.pretrained)
        info = self.backbone.feature_info
        # levels from stride 4 down: det and seg work at 1/4 resolution.
        self.levels = [i for i, r in enumerate(info.reduction()) if r >= DET_STRIDE]
        if not self.levels or info.reduction()[self.levels[0]] != DET_STRIDE:
            raise RunError(f"backbone {config.backbone!r} has no stride-4 feature level")
        channels = [info.channels()[i] for i in self.levels]
        cfg = self.backbone.pretrained_cfg
        mean = config.mean or cfg.get("mean", (0.485, 0.456, 0.406))
        std = config.std or cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if config.norm_stats not in NORM_STATS:
            raise RunError(f"norm statistics must be one of {', '.join(NORM_STATS)}, got {config.norm_stats!r}")
        # per-task BatchNorm statistics: classification crops (64 px) and street scenes (256 px) have
        # different activation statistics; one shared running mean fits neither (DESIGN.md: cls Top-1
        # 0.569 shared vs 0.668 with statistics re-estimated on crops alone, weights untouched)
        # frozen: the pretrained statistics serve every task and one backbone pass serves all three (the
        # AllInOne inference cost of one model, not three); the BatchNorm scales and shifts still train
        self._norms = [m for m in self.backbone.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.norm_stats = config.norm_stats
        self._folded: dict | None = None  # backbone copies with BatchNorm folded in, inside folded_norms()
        self.precision = "fp32"  # forward under autocast in bf16 / fp16 (set_precision); outputs are float32
        self.task_stats = (nn.ModuleDict({t: TaskNormStats(self._norms) for t in TASKS})
                           if config.norm_stats == "task" else None)
        convs = config.head_convs
        self.neck = FPN(channels, config.neck_channels, convs=convs)
        self.heads = nn.ModuleDict({
            "cls": AttentionPoolHead(channels[-1], config.num_cls),
            "det": CenterHead(config.neck_channels, config.num_det, size_activation=config.det_size_activation,
                              convs=convs, layout=config.heads),
            "seg": SemanticHead(config.neck_channels, len(channels), config.num_seg, convs=convs, layout=config.heads),
        })
        # channels-last convolutions: on this 2-core CPU a train step of lite0 at 256 px is 1.3x and
        # inference 1.5x faster than in NCHW (oneDNN); on a GPU it is what AMP's tensor cores want.
        self.to(memory_format=torch.channels_last)
        self.train()  # a new module trains; frozen statistics keep the backbone's BatchNorm layers in eval (train)

    def forward(self, images: torch.Tensor, tasks: Sequence[str] = TASKS) -> dict:
        """Run the tasks asked.

        Args:
            images: (B, 3, H, W), float in [0, 1] or uint8; H and W multiples of 32.
            tasks: any of "cls", "det", "seg".
        Returns:
            {"cls": (B, K_cls) logits, "det": CenterHead dict at H/4 x W/4, "seg": (B, K_seg, H/4, W/4) logits}.
        """
        if self.task_stats is not None and len(tasks) > 1:  # each task's backbone pass with its own statistics
            return {k: v for t in TASKS if t in tasks for k, v in self.forward(images, (t,)).items()}
        dtype = _AMP_DTYPES[self.precision]
        if dtype is None:
            return self._forward(images, tasks)
        with torch.autocast(images.device.type, dtype=dtype):
            out = self._forward(images, tasks)
        # losses, decoding and blending see float32, whatever the precision of the layers
        return {t: ({k: v.float() for k, v in o.items()} if isinstance(o, dict) else o.float()) for t, o in out.items()}

    def set_precision(self, precision: str) -> "MultiTaskModel":
        """Run the forward under autocast: "fp32" (none), "bf16" or "fp16" (resolve "auto" first)."""
        if precision not in _AMP_DTYPES:
            raise RunError(f"precision must be one of {', '.join(_AMP_DTYPES)}, got {precision!r}")
        self.precision = precision
        return self

    def _forward(self, images: torch.Tensor, tasks: Sequence[str]) -> dict:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        task = tasks[0] if self.task_stats is not None else None
        folded = self._folded_backbone(task) if self._folded is not None and not self.training else None
        if folded is not None:
            feats = folded(x)
        else:
            with self.norm_stats_of(task):
                feats = self.backbone(x)
        feats = [feats[i] for i in self.levels]
        out = {}
        if "cls" in tasks:
            out["cls"] = self.heads["cls"](feats[-1])
        if "det" in tasks or "seg" in tasks:
            pyramid = self.neck(feats)
            if "det" in tasks:
                out["det"] = self.heads["det"](pyramid[0])
            if "seg" in tasks:
                out["seg"] = self.heads["seg"](pyramid)
        return out

    def train(self, mode: bool = True) -> "MultiTaskModel":
        """nn.Module.train, except that frozen statistics keep the backbone's BatchNorm layers in eval mode."""
        super().train(mode)
        if self.norm_stats == "frozen":
            for m in self._norms:
                m.eval()
        return self

    @contextmanager
    def folded_norms(self):
        """Inference only: within the block the backbone runs with its BatchNorm layers folded into the
        convolutions before them (fold_batchnorm; with per-task statistics one folded copy per task, made
        at the task's first forward): the same outputs to float rounding, and on a CPU about 1.5x the
        speed (an unfolded BatchNorm in eval is a memory-bound pass of its own: 39% of a lite0 forward at
        320x256 on the 2-core EPYC, bench/INFERENCE.md). The copies are dropped when the block ends, so
        weights changed later (training, EMA) are never served stale."""
        if self.training:
            raise RuntimeError("folded BatchNorm is for inference: call model.eval() first")
        self._folded = {}
        try:
            yield self
        finally:
            self._folded = None

    def _folded_backbone(self, task: str | None) -> nn.Module | None:
        if task not in self._folded:
            with torch.no_grad(), self.norm_stats_of(task):
                self._folded[task] = fold_batchnorm(self.backbone)
        return self._folded[task]

    @contextmanager
    def norm_stats_of(self, task: str | None):
        """Within the block the backbone's BatchNorm layers use (and, training, update) `task`'s running
        statistics; None (or shared statistics): their own. The layers' own buffers are put back after."""
        if task is None or self.task_stats is None:
            yield
            return
        own = [(m.running_mean, m.running_var, m.num_batches_tracked) for m in self._norms]
        holder = self.task_stats[task]
        for i, m in enumerate(self._norms):
            m.running_mean, m.running_var, m.num_batches_tracked = holder.stats(i)
        try:
            yield
        finally:
            for m, (mean, var, count) in zip(self._norms, own):
                m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of one task's head (the neck is shared by det and seg)."""
        return list(self.heads[task].parameters())


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; anything else names a device, checked to exist here
    (DeviceError, one line, instead of torch's error at the first tensor moved there)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {name}: no CUDA device on this machine (torch {torch.__version__}); "
                              "use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: not supported here (auto, cpu, cuda, cuda:N, mps)")
    return device


def describe_device(device: torch.device) -> str:
    """One line naming the device a command runs on: 'cuda:0 (NVIDIA A100-SXM4-40GB)', 'cpu (2 threads)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
