"""A compact U-Net for H&E nuclei at 0.25 µm/px, predicting HoVer-Net's maps.

Three output channels per pixel: a nucleus-foreground logit and the horizontal and vertical
distances of the pixel to its nucleus' centre, each scaled to [-1, 1] within the nucleus (Graham
et al. 2019). Touching nuclei are split where the distance maps flip sign, so the network stays
small: one encoder, one decoder, one 1x1 head. Fully convolutional: any input whose sides are a
multiple of ``stride`` works.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NucleusUNet", "build_net"]

# ImageNet-free input scaling: H&E pixels in [0, 1] -> roughly zero mean, unit spread
_MEAN = (0.70, 0.55, 0.70)
_STD = (0.18, 0.20, 0.15)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class NucleusUNet(nn.Module):
    """U-Net: ``len(channels)`` levels, max-pool down, bilinear up + skip concatenation.

    With ``stem_stride`` 2 a strided convolution first halves the image, the U-Net runs at
    0.5 µm/px internally, and the maps are upsampled back to the input's 0.25 µm/px: nuclei are
    still 10-20 px wide there, and the network costs a quarter (what a shared CPU can train).

    Args:
        channels: feature channels per level, finest first, e.g. (16, 32, 64, 128).
        stem_stride: 1 (U-Net at full resolution) or 2 (strided stem, maps upsampled).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), stem_stride: int = 2) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.channels = tuple(int(c) for c in channels)
        self.stem_stride = int(stem_stride)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        c = self.channels
        if stem_stride == 2:
            stem = nn.Sequential(
                nn.Conv2d(3, c[0], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c[0]),
                nn.ReLU(inplace=True),
                _block(c[0], c[0]),
            )
        else:
            stem = _block(3, c[0])
        self.down = nn.ModuleList([stem] + [_block(a, b) for a, b in zip(c, c[1:], strict=False)])
        self.up = nn.ModuleList([_block(b + a, a) for a, b in zip(c[:-1], c[1:], strict=True)])
        self.head = nn.Conv2d(c[0], 3, 1)

    @property
    def stride(self) -> int:
        """Input sides must be a multiple of this."""
        return self.stem_stride * 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps for a batch of RGB images.

        Args:
            x: (B, 3, H, W) float in [0, 1]; H, W multiples of ``stride``.

        Returns:
            (B, 3, H, W): foreground logit, horizontal map, vertical map.
        """
        x = (x - self.mean) / self.std
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        x = self.head(x)
        if self.stem_stride > 1:
            x = F.interpolate(
                x, scale_factor=self.stem_stride, mode="bilinear", align_corners=False
            )
        return x


def build_net(config: dict[str, Any]) -> NucleusUNet:
    """The network described by a weights file's ``config`` dict."""
    return NucleusUNet(
        tuple(config.get("channels", (16, 32, 64, 128))), int(config.get("stem_stride", 1))
    )
