"""One crop per nucleus, for all nuclei at once: the single crop rule of ``segment`` and the benchmark.

The window is CCRL's adaptive window (VOLTA's cell converter): a square centred on the nucleus's
bounding box whose side is ``window_scale`` times the box's longer side (at least ``min_window``),
resized to ``crop_size``. ``window_scale = 2`` is the paper's CoNSeP setting (the box padded by half
its size per side), ``1`` its NuCLS one (the box itself).

Crops never contain invented pixels. A constant fill where a window leaves the image was measured
to be a shortcut that both contrastive training and K-means latch onto; instead the part of a
window past the image (or slide) edge is mirrored from the image (``reflect``), so the nucleus
stays centred and every pixel is one of the image's. Mirroring beat shifting the window inside the
image for CCRL on the validation split (AMI 21.5 vs 15.1, BENCHMARKS.md "Crops"). Resampling is
torchvision's ``roi_align`` (area-averaging bilinear samples), one call for every cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# recorded in every store's ``crop`` attribute
CROP_RULE = (
    "square window centred on the nucleus box, side = window_scale * max(box w, h) (>= "
    "min_window); the part past the image or slide edge mirrored (reflect); resampled with "
    "roi_align"
)


@dataclass(frozen=True)
class CropSpec:
    """The crop rule's numbers, one value travelling from the config to the store and back:
    ``size`` (output side), ``window_scale`` (window / the box's longer side), ``min_window``
    (smallest window side, pixels of the image cropped)."""

    size: int = 32
    window_scale: float = 2.0
    min_window: float = 16.0

    @classmethod
    def of(cls, cfg: Any) -> CropSpec:
        """From a config section that has ``crop_size``, ``window_scale`` and ``min_window``."""
        return cls(int(cfg.crop_size), float(cfg.window_scale), float(cfg.min_window))

    def windows(self, bbox: np.ndarray) -> np.ndarray:
        return crop_windows(bbox, self.window_scale, self.min_window)

    def crops(self, image: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """The rule on one image: windows from the boxes, mirrored past its edges, resampled."""
        return extract_crops(image, self.windows(bbox), self.size)

    def attrs(self, **extra: Any) -> dict[str, Any]:
        """What a store records of its crops (its ``crop`` attribute)."""
        return {
            "rule": CROP_RULE,
            "crop_size": self.size,
            "window_scale": self.window_scale,
            "min_window": self.min_window,
            **extra,
        }

    def matches(self, crop: dict[str, Any] | None) -> bool:
        """Whether a store's ``crop`` attribute records this rule with these numbers."""
        crop = crop or {}
        return (
            crop.get("rule") == CROP_RULE
            and crop.get("crop_size") == self.size
            and crop.get("window_scale") == self.window_scale
            and float(crop.get("min_window", -1)) == self.min_window
        )


def crop_windows(bbox: np.ndarray, window_scale: float, min_window: float) -> np.ndarray:
    """Square windows (x0, y0, x1, y1), float, centred on each nucleus box.

    Args:
        bbox: (N, 4) x0, y0, x1, y1 of each nucleus, pixel-edge coordinates (x1, y1 exclusive).
        window_scale: window side as a multiple of the box's longer side.
        min_window: smallest window side, same units.
    """
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    centre = (bbox[:, :2] + bbox[:, 2:]) / 2.0
    side = np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])
    half = np.maximum(side * window_scale, min_window)[:, None] / 2.0
    return np.concatenate([centre - half, centre + half], axis=1)


def inside(windows: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N,) bool: the window lies within [0, width] x [0, height]."""
    w = np.asarray(windows, np.float64).reshape(-1, 4)
    return (w[:, 0] >= 0) & (w[:, 1] >= 0) & (w[:, 2] <= width) & (w[:, 3] <= height)


def extract_crops(image: np.ndarray, windows: np.ndarray, crop_size: int) -> np.ndarray:
    """Resample every window of ``image`` to a ``crop_size`` square, in one vectorised call.

    Whatever part of a window lies outside the image is mirrored from it (numpy's ``reflect``),
    never a constant.

    Args:
        image: (H, W, 3) uint8 RGB.
        windows: (N, 4) x0, y0, x1, y1 in pixel-edge coordinates of ``image``.
        crop_size: output side S.

    Returns:
        (N, S, S, 3) uint8.
    """
    import torch
    from torchvision.ops import roi_align

    windows = np.asarray(windows, np.float64).reshape(-1, 4)
    n = windows.shape[0]
    if n == 0:
        return np.zeros((0, crop_size, crop_size, 3), np.uint8)
    h, w = image.shape[:2]
    # pad (mirrored) so every window and its bilinear support lie inside the padded image
    over = max(0.0, -windows[:, :2].min(), (windows[:, 2] - w).max(), (windows[:, 3] - h).max())
    pad = int(np.ceil(over)) + 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    tensor = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float()
    boxes = torch.from_numpy(windows + pad).float()
    boxes = torch.cat([torch.zeros(n, 1), boxes], dim=1)
    # sampling_ratio 0: ceil(window / crop_size) samples per output pixel and axis, per window, so
    # every crop is area-averaged (antialiased) at its own scale and a window of crop_size pixels
    # is copied exactly
    with torch.no_grad():
        out = roi_align(tensor, boxes, output_size=crop_size, sampling_ratio=0, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
