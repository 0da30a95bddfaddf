"""Neck and task heads, each sized from the backbone's `feature_info` alone."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


HEAD_CONVS = ("conv", "separable")
# "full": a 3x3 block per det output (heatmap, size, offset) and one after seg's merge; "light": det's size
# and offset share one block (both box regressions) and seg's logits come straight from the merge (the
# Panoptic-FPN semantic branch as published): two stride-4 blocks fewer, one-pass inference 0.38x instead of
# 0.40x of three single-task models, at -0.009 val score one-pass and -0.016 single-task (det; bench/LIGHT_HEADS.md)
HEAD_LAYOUTS = ("full", "light")


def conv_gn_relu(cin: int, cout: int, k: int = 3, convs: str = "conv") -> nn.Sequential:
    """Conv k x k + GroupNorm + ReLU (GroupNorm: batch-size independent, good for small batches).

    convs: "conv" (a full k x k convolution) or "separable" (depthwise k x k, then pointwise 1 x 1,
    as in EfficientDet's heads: about 1/8 of the multiply-adds at 64 channels)."""
    if convs == "separable":
        conv = [nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False)]
    elif convs == "conv":
        conv = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    else:
        raise ValueError(f"head convolutions must be one of {', '.join(HEAD_CONVS)}, got {convs!r}")
    return nn.Sequential(*conv, nn.GroupNorm(math.gcd(min(8, cout), cout), cout),  # gcd: groups must divide cout
                         nn.ReLU(inplace=True))


def check_layout(layout: str) -> None:
    if layout not in HEAD_LAYOUTS:
        raise ValueError(f"head layout must be one of {', '.join(HEAD_LAYOUTS)}, got {layout!r}")


class FPN(nn.Module):
    """Feature pyramid: lateral 1x1 convs, top-down nearest upsampling and sum, 3x3 output convs.

    Args:
        in_channels: channels of the backbone levels used, finest first.
        channels: channels of every pyramid level.
        convs: the 3x3 output convolutions, "conv" or "separable" (see conv_gn_relu).
    Input: list of (B, C_i, H/s_i, W/s_i), finest first. Output: list of (B, channels, H/s_i, W/s_i).
    """

    def __init__(self, in_channels: Sequence[int], channels: int, convs: str = "conv"):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(conv_gn_relu(channels, channels, convs=convs) for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        return [out(x) for out, x in zip(self.output, laterals)]


class AttentionPoolHead(nn.Module):
    """Classification head on the deepest feature: CBAM-style channel and spatial attention, then
    average + max pooling and a linear layer. (B, C, h, w) -> (B, num_classes) logits."""

    def __init__(self, channels: int, num_classes: int, reduction: int = 8, dropout: float = 0.2):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * ca
        sa = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        x = x * sa
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return self.fc(self.drop(pooled))


class CenterHead(nn.Module):
    """Anchor-free detection head (CenterNet) on the finest pyramid level (stride 4).

    Output dict: "heatmap" (B, K, h, w) logits of object centres per class, "size" (B, 2, h, w) box
    width and height in feature cells, "offset" (B, 2, h, w) sub-cell centre offset in [0, 1).
    layout: "full" (a branch per output) or "light" (size and offset from one "box" branch), HEAD_LAYOUTS.
    """

    def __init__(self, channels: int, num_classes: int, prior: float = 0.1, size_activation: str = "softplus",
                 convs: str = "conv", layout: str = "full"):
        super().__init__()

        def branch(cout: int) -> nn.Sequential:
            return nn.Sequential(conv_gn_relu(channels, channels, convs=convs), nn.Conv2d(channels, cout, 1))

        check_layout(layout)
        self.heatmap = branch(num_classes)
        if layout == "light":
            self.box = branch(4)  # channels 0-1 size, 2-3 offset
        else:
            self.size, self.offset = branch(2), branch(2)
        self.layout = layout
        nn.init.constant_(self.heatmap[-1].bias, -torch.log(torch.tensor((1 - prior) / prior)).item())
        if size_activation not in ("softplus", "relu"):
            raise ValueError(f"size_activation must be softplus or relu, got {size_activation!r}")
        # softplus: a ReLU here can die (every pre-activation negative, no gradient), and then every box
        # has zero size and is dropped: mAP 0 for the rest of the run. "relu" rebuilds older runs.
        self.size_activation = size_activation

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.layout == "light":
            size, offset = self.box(x).split(2, dim=1)
        else:
            size, offset = self.size(x), self.offset(x)
        size = F.softplus(size) if self.size_activation == "softplus" else F.relu(size)
        return {"heatmap": self.heatmap(x), "size": size, "offset": torch.sigmoid(offset)}


class SemanticHead(nn.Module):
    """Panoptic-FPN semantic branch: every pyramid level -> conv, upsampled to the finest level,
    summed, then (layout "full") a 3x3 block and a 1x1 conv to class logits, or (layout "light") the 1x1 conv
    alone, as in Panoptic FPN. list of (B, C, H/s, W/s) -> (B, K, H/4, W/4)."""

    def __init__(self, channels: int, num_levels: int, num_classes: int, convs: str = "conv", layout: str = "full"):
        super().__init__()
        check_layout(layout)
        self.level_convs = nn.ModuleList(conv_gn_relu(channels, channels, convs=convs) for _ in range(num_levels))
        block = [conv_gn_relu(channels, channels, convs=convs)] if layout == "full" else []
        self.classifier = nn.Sequential(*block, nn.Conv2d(channels, num_classes, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        merged = sum(F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False) if i else conv(f)
                     for i, (conv, f) in enumerate(zip(self.level_convs, feats)))
        return self.classifier(merged)
