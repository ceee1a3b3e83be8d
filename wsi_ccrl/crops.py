"""One crop per nucleus, cut from an image already in memory, for all nuclei at once.

The window rule is CCRL's adaptive window (after VOLTA's cell converter): a square centred on the
nucleus, ``window_scale`` times the longer side of its bounding box, at least ``min_window`` pixels,
resized to ``crop_size``. ``window_scale = 2`` is the paper's CoNSeP setting, ``1`` its NuCLS one.
Resampling is torchvision's ``roi_align`` (area-averaging bilinear samples), one call for every cell.
"""

from __future__ import annotations

import numpy as np


def crop_windows(
    centroid: np.ndarray,
    bbox: np.ndarray,
    window_scale: float = 2.0,
    min_window: float = 16.0,
) -> np.ndarray:
    """Square windows (x0, y0, x1, y1), float, centred on each centroid.

    Args:
        centroid: (N, 2) x, y.
        bbox: (N, 4) x0, y0, x1, y1 of each nucleus (x1, y1 exclusive).
        window_scale: window side as a multiple of the bbox's longer side.
        min_window: smallest window side, same units.
    """
    centroid = np.asarray(centroid, np.float64).reshape(-1, 2)
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    side = np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])
    half = np.maximum(side * window_scale, min_window) / 2.0
    return np.stack(
        [
            centroid[:, 0] - half,
            centroid[:, 1] - half,
            centroid[:, 0] + half,
            centroid[:, 1] + half,
        ],
        axis=1,
    )


def extract_crops(
    image: np.ndarray,
    windows: np.ndarray,
    crop_size: int,
    fill: int = 255,
) -> np.ndarray:
    """Resample every window of ``image`` to a ``crop_size`` square, in one vectorised call.

    Args:
        image: (H, W, 3) uint8 RGB.
        windows: (N, 4) x0, y0, x1, y1 in pixel-edge coordinates of ``image``; windows may extend
            past the image, where the crop is filled with ``fill`` (white: background glass).
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
    # pad so that every window lies inside the padded image, then sample with roi_align
    h, w = image.shape[:2]
    pad = int(
        np.ceil(
            max(0.0, -windows[:, :2].min(), (windows[:, 2] - w).max(), (windows[:, 3] - h).max())
        )
    )
    pad += 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=fill)
    tensor = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float()
    boxes = torch.from_numpy(windows + pad).float()
    boxes = torch.cat([torch.zeros(n, 1), boxes], dim=1)
    side = float(np.max(windows[:, 2] - windows[:, 0]))
    # enough samples per output pixel to average over the window (antialiasing when shrinking)
    sampling = int(np.clip(np.ceil(side / crop_size), 1, 8))
    with torch.no_grad():
        out = roi_align(tensor, boxes, output_size=crop_size, sampling_ratio=sampling, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
