"""A deliberately ordinary timm fine-tuning script per task: the reference a competitor writes by hand.

    python bench/plain.py --task cls --budget 8m --seed 0 --out runs/plain-cls-s0
    python bench/plain.py --task det --budget 15m ...      # CenterNet on timm features, 320 px
    python bench/plain.py --task seg --budget 15m ...      # a light FPN decoder, 240 x 320

Nothing of the workbench's training code is used: the files are read directly, every image is
decoded and resized once up front, then plain PyTorch loops (AdamW, cosine decay over the time
budget) train efficientnet_lite0 from the ImageNet weights until the budget is spent. Only the
final val predictions go through the workbench's scorer (the same metric as every other row). The
output folder gets `val.json` (cls labels, det boxes), `val_seg.npz` (masks) and `result.json`
(metric, epochs, steps, seconds). The sealed test labels are never read.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from PIL import Image

MEAN, STD = 0.5, 0.5
WEIGHTS = "../shared/weights/efficientnet_lite0.imagenet.safetensors"


def budget_seconds(text: str) -> float:
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def load_rgb(path, size_wh) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB").resize(size_wh, Image.BILINEAR))


def to_input(batch_uint8: torch.Tensor) -> torch.Tensor:  # (B, H, W, 3) uint8 -> normalised NCHW float
    return ((batch_uint8.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def cosine_lr(opt, base: float, frac: float) -> None:
    for g in opt.param_groups:
        g["lr"] = base * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def set_weights(path: str) -> None:
    global WEIGHTS
    WEIGHTS = path


def backbone(**kw):
    if not WEIGHTS:  # random initialisation (the smoke test)
        return timm.create_model("efficientnet_lite0", **kw)
    return timm.create_model("efficientnet_lite0", pretrained=True,
                             pretrained_cfg_overlay={"file": str(Path(WEIGHTS).resolve())}, **kw)


class Decoder(nn.Module):
    """Features at strides 4-32 -> one stride-4 map: 1x1 laterals, upsample, sum, 3x3 conv."""

    def __init__(self, channels, width=64):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, feats):
        x = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            x = x + F.interpolate(lat(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(x)


class Dense(nn.Module):
    """timm backbone (strides 4-32) + decoder + a 1x1 output conv per head."""

    def __init__(self, heads: dict[str, int]):
        super().__init__()
        self.body = backbone(features_only=True, out_indices=(1, 2, 3, 4))
        self.decoder = Decoder(self.body.feature_info.channels())
        self.heads = nn.ModuleDict({k: nn.Conv2d(64, n, 1) for k, n in heads.items()})
        if "hm" in self.heads:
            nn.init.constant_(self.heads["hm"].bias, -2.19)

    def forward(self, x):
        y = self.decoder(self.body(x))
        return {k: h(y) for k, h in self.heads.items()}


def train_loop(model, params, step_fn, n: int, batch: int, budget: float, seed: int, lr: float = 1e-3):
    """Shuffled epochs until the budget is spent; lr decays by a cosine of the elapsed fraction."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    t0, steps = time.time(), 0
    model.train()
    while time.time() - t0 < budget:
        for idx in torch.randperm(n, generator=gen).split(batch):
            frac = (time.time() - t0) / budget
            if frac >= 1 or len(idx) < 2:
                break
            cosine_lr(opt, lr, frac)
            loss = step_fn(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return {"steps": steps, "epochs": round(steps / max(1, n // batch), 2), "train_s": round(time.time() - t0, 1)}


# ---------------------------------------------------------------- classification

def run_cls(root: Path, cfg: dict, budget: float, seed: int, size: int = 64) -> tuple[dict, dict]:
    classes = [c.strip() for c in (root / cfg["classes"]).read_text().splitlines() if c.strip()]

    def folder(split):
        files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / cfg[split] / c).glob("*")) if p.is_file()]
        return (torch.from_numpy(np.stack([load_rgb(p, (size, size)) for p, _ in files])),
                torch.tensor([i for _, i in files]), [p.name for p, _ in files])
    x, y, _ = folder("train")
    vx, _, vnames = folder("val")
    model = backbone(num_classes=len(classes)).to(memory_format=torch.channels_last)
    log = train_loop(model, model.parameters(),
                     lambda idx: F.cross_entropy(model(to_input(x[idx])), y[idx], label_smoothing=0.1), len(x), 64, budget, seed)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_input(b)).argmax(1) for b in vx.split(256)])
    return {"cls": dict(zip(vnames, pred.tolist()))}, log


# ---------------------------------------------------------------- detection (CenterNet)

def run_det(root: Path, cfg: dict, budget: float, seed: int, size: int = 320) -> tuple[dict, dict]:
    train = json.loads((root / cfg["train"]["annotations"]).read_text())
    val = json.loads((root / cfg["val"]["annotations"]).read_text())
    cats = [c["id"] for c in train["categories"]]
    k, grid = len(cats), size // 4
    images_dir = root / cfg["train"]["images"]

    def targets(coco):
        by_image = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            by_image[a["image_id"]].append(a)
        return [(im, by_image[im["id"]]) for im in coco["images"]]

    samples = targets(train)
    x = torch.from_numpy(np.stack([load_rgb(images_dir / im["file_name"], (size, size)) for im, _ in samples]))
    hm = torch.zeros(len(samples), k, grid, grid)
    objs = []  # (image, cy, cx, w, h, offy, offx) on the grid
    yy, xx = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
    for i, (im, anns) in enumerate(samples):
        sx, sy = size / im["width"] / 4, size / im["height"] / 4
        for a in anns:
            bx, by, bw, bh = a["bbox"]
            cx, cy, w, h = (bx + bw / 2) * sx, (by + bh / 2) * sy, bw * sx, bh * sy
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            g = torch.exp(-((xx - ix) ** 2 / (2 * max(w / 6, 0.5) ** 2) + (yy - iy) ** 2 / (2 * max(h / 6, 0.5) ** 2)))
            c = cats.index(a["category_id"])
            hm[i, c] = torch.maximum(hm[i, c], g)
            objs.append((i, iy, ix, w, h, cy - iy, cx - ix))
    objs_t = torch.tensor(objs, dtype=torch.float32)
    model = Dense({"hm": k, "wh": 2, "off": 2}).to(memory_format=torch.channels_last)

    def step(idx):
        out = model(to_input(x[idx]))
        p = out["hm"].sigmoid().clamp(1e-4, 1 - 1e-4)
        t = hm[idx]
        pos = t.eq(1).float()
        focal = -(pos * (1 - p) ** 2 * p.log() + (1 - pos) * (1 - t) ** 4 * p ** 2 * (1 - p).log()).sum()
        sel = objs_t[torch.isin(objs_t[:, 0].long(), idx)]
        where = {int(j): r for r, j in enumerate(idx.tolist())}
        b = torch.tensor([where[int(j)] for j in sel[:, 0]], dtype=torch.long)
        iy, ix = sel[:, 1].long(), sel[:, 2].long()
        wh = out["wh"][b, :, iy, ix]
        off = out["off"][b, :, iy, ix]
        n = max(1, len(sel))
        return (focal / n + 0.1 * F.l1_loss(wh, sel[:, 3:5], reduction="sum") / n
                + F.l1_loss(off, sel[:, 5:7], reduction="sum") / n)  # channel 0: y offset, 1: x offset
    log = train_loop(model, model.parameters(), step, len(x), 8, budget, seed)
    model.eval()
    dets = []
    with torch.no_grad():
        for im in val["images"]:
            img = torch.from_numpy(load_rgb(images_dir / im["file_name"], (size, size)))[None]
            out = model(to_input(img))
            heat = out["hm"].sigmoid()
            peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
            scores, flat = peaks.flatten().topk(100)
            c, rest = flat // (grid * grid), flat % (grid * grid)
            iy, ix = rest // grid, rest % grid
            w, h = out["wh"][0, 0, iy, ix], out["wh"][0, 1, iy, ix]
            cx, cy = ix + out["off"][0, 1, iy, ix], iy + out["off"][0, 0, iy, ix]
            sx, sy = im["width"] / grid, im["height"] / grid
            for s, ci, x0, y0, ww, hh in zip(scores.tolist(), c.tolist(), (cx - w / 2).tolist(), (cy - h / 2).tolist(),
                                             w.tolist(), h.tolist()):
                if s > 0.01:
                    dets.append({"image": im["file_name"], "category_id": cats[ci], "bbox": [x0 * sx, y0 * sy, ww * sx, hh * sy],
                                 "score": s})
    return {"det": dets}, log


# ---------------------------------------------------------------- segmentation

def run_seg(root: Path, cfg: dict, budget: float, seed: int, hw=(240, 320)) -> tuple[dict, dict]:
    k = len([c for c in (root / cfg["classes"]).read_text().splitlines() if c.strip()])
    ignore = int(cfg.get("ignore_index", 255))

    def split(name):
        images = sorted((root / cfg[name]["images"]).glob("*"))
        masks = [root / cfg[name]["masks"] / f"{p.stem}.png" for p in images]
        return images, masks
    images, masks = split("train")
    x = torch.from_numpy(np.stack([load_rgb(p, hw[::-1]) for p in images]))
    y = torch.from_numpy(np.stack([np.asarray(Image.open(m).resize(hw[::-1], Image.NEAREST)) for m in masks])).long()
    model = Dense({"seg": k}).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed + 1)

    def step(idx):
        xb, yb = x[idx], y[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
        yb = torch.where(flip[:, None, None], yb.flip(2), yb)
        logits = F.interpolate(model(to_input(xb))["seg"], size=hw, mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, yb, ignore_index=ignore)
    log = train_loop(model, model.parameters(), step, len(x), 8, budget, seed)
    model.eval()
    out = {}
    vimages, _ = split("val")
    with torch.no_grad():
        for p in vimages:
            with Image.open(p) as im:
                size = (im.height, im.width)
            logits = model(to_input(torch.from_numpy(load_rgb(p, hw[::-1]))[None]))["seg"]
            out[p.name] = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)[0].numpy().astype(np.uint8)
    return {"seg": out}, log


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--task", choices=("cls", "det", "seg"), required=True)
    parser.add_argument("--budget", required=True, help="training time: 90s, 8m, 15m ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--weights", default=WEIGHTS, help="ImageNet weights of efficientnet_lite0 ('' : random)")
    args = parser.parse_args(argv)
    set_weights(args.weights)
    torch.manual_seed(args.seed)
    data = Path(args.data)
    cfg = yaml.safe_load(data.read_text())
    run = {"cls": run_cls, "det": run_det, "seg": run_seg}[args.task]
    t0 = time.time()
    preds, log = run(data.parent, cfg[args.task], budget_seconds(args.budget), args.seed)
    log["total_s"] = time.time() - t0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from workbench.data.spec import DatasetSpec
    from workbench.metrics.scoring import score
    from workbench.records import Submission
    spec = DatasetSpec(args.data)
    sub = Submission(cls=preds.get("cls", {}), det=preds.get("det", []), seg=preds.get("seg", {}),
                     cls_classes=spec.cls_classes, seg_num_classes=len(spec.seg_classes))
    metrics = score(sub, spec.ground_truth("val"), tasks=(args.task,))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "val.json").write_text(json.dumps({"cls": sub.cls, "det": sub.det}))
    if sub.seg:
        np.savez_compressed(out / "val_seg.npz", **sub.seg)
    result = {"task": args.task, "budget": args.budget, "seed": args.seed, **log, **metrics}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
