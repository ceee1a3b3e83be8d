"""Pre-activation ResNet18 (He et al., "Identity Mappings in Deep Residual Networks"), 512-d output.

Built without a classifier, like timm's ``num_classes=0``: ``forward`` returns pooled features.
The ``small`` stem (3x3 conv, stride 1, no max-pool) suits 32 px cell crops (the paper's);
``imagenet`` is the usual 7x7/2 conv + max-pool, 16x fewer FLOPs: what trains in minutes on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_ccrl.config import STEMS, TrainConfig


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice, identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> (B, 512) features."""

    feature_dim = 512

    def __init__(self, stem: str = TrainConfig.stem):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.stem_name = stem
        if stem == "small":
            self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(
                    PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)  # the final pre-activation
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 512, h, w) feature map."""
        x = (x - self.mean) / self.std
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.relu(self.bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))
