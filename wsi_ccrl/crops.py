"""One crop per nucleus, for all nuclei at once: the single crop rule of ``segment`` and the benchmark.

The window is CCRL's adaptive window (VOLTA's cell converter): a square centred on the nucleus's
bounding box whose side is ``window_scale`` times the box's longer side (at least ``min_window``),
resized to ``crop_size``. ``window_scale = 2`` is the paper's CoNSeP setting (the box padded by half
its size per side), ``1`` its NuCLS one (the box itself).

Crops never contain invented pixels. A constant fill where a window leaves the image was measured
to be a shortcut that both contrastive training and K-means latch onto, so a window that would
cross an image (or slide) edge is shifted back inside it (``fit_windows``): the nucleus sits off
centre, but every pixel is real tissue. Only a window larger than the image itself cannot fit; its
overhang is mirrored (reflect) rather than filled. Resampling is torchvision's ``roi_align``
(area-averaging bilinear samples), one call for every cell.
"""

from __future__ import annotations

import numpy as np

# recorded in every store's ``crop`` attribute
CROP_RULE = (
    "square window centred on the nucleus box, side = window_scale * max(box w, h) (>= "
    "min_window), shifted inside the image at its edges, overhang of a window larger than the "
    "image mirrored; resampled with roi_align"
)


def crop_windows(
    bbox: np.ndarray, window_scale: float = 2.0, min_window: float = 16.0
) -> np.ndarray:
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


def fit_windows(windows: np.ndarray, width: float, height: float, x0: float = 0, y0: float = 0):
    """Shift each window inside the box [x0, x0 + width) x [y0, y0 + height), keeping its size.

    A window wider (or taller) than the box is centred on it instead (its overhang is then mirrored
    by ``extract_crops``).
    """
    windows = np.asarray(windows, np.float64).reshape(-1, 4).copy()
    for axis, (lo, size) in enumerate(((x0, width), (y0, height))):
        a, b = windows[:, axis], windows[:, axis + 2]
        side = b - a
        start = np.clip(a, lo, lo + size - side)
        start = np.where(side > size, lo + (size - side) / 2.0, start)
        windows[:, axis], windows[:, axis + 2] = start, start + side
    return windows


def inside(windows: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N,) bool: the window lies within [0, width] x [0, height]."""
    w = np.asarray(windows, np.float64).reshape(-1, 4)
    return (w[:, 0] >= 0) & (w[:, 1] >= 0) & (w[:, 2] <= width) & (w[:, 3] <= height)


def extract_crops(image: np.ndarray, windows: np.ndarray, crop_size: int) -> np.ndarray:
    """Resample every window of ``image`` to a ``crop_size`` square, in one vectorised call.

    Windows are taken as given; pass them through ``fit_windows`` first to keep them inside the
    image. Whatever still lies outside is mirrored from the image (numpy's ``reflect``), never a
    constant.

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


def crops_in_image(
    image: np.ndarray, bbox: np.ndarray, crop_size: int, window_scale: float, min_window: float
) -> np.ndarray:
    """The crop rule on one image: windows from the boxes, fitted inside the image, resampled."""
    h, w = image.shape[:2]
    windows = fit_windows(crop_windows(bbox, window_scale, min_window), w, h)
    return extract_crops(image, windows, crop_size)
