"""Predicted maps -> instance label map: HoVer-Net's marker-controlled watershed.

Where the horizontal/vertical maps change steeply (their Sobel gradient is large) lies a border
between nuclei; the foreground minus those borders gives one marker per nucleus, and a watershed
on the distance-like energy grows the markers back to the full foreground. Whole-image array
operations only (OpenCV, SciPy, scikit-image): no loop over nuclei.

HoVer-Net min-max normalises the maps and their gradients per image, so a border's strength
depends on the strongest border elsewhere in the tile; here both use fixed scales (maps are in
[-1, 1]; gradients are measured against half a unit step's response), so a nucleus' result
does not depend on the tile it was cut from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["PostprocessConfig", "instance_probs", "maps_to_instances"]


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds of the watershed (HoVer-Net's values unless tuned on training tiles)."""

    fg_threshold: float = 0.5  # foreground probability
    edge_threshold: float = 0.4  # normalised HV-gradient above which a pixel is a border
    sobel_ksize: int = 21  # HoVer-Net's kernel: smooth gradients over a nucleus' width
    min_area: int = 10  # pixels; smaller blobs and markers are noise at 0.25 µm/px
    marker_open: int = 5  # ellipse size of the opening that separates thin marker bridges


def _border_strength(hv_map: np.ndarray, axis: int, ksize: int) -> np.ndarray:
    """Falling gradient of a [-1, 1] map along ``axis`` in [0, 1] (1: the map drops like half a
    unit step of its [0, 1] form across the kernel, as between two touching nuclei)."""
    unit = np.clip((hv_map + 1) * 0.5, 0, 1).astype(np.float32)
    dx, dy = (1, 0) if axis == 0 else (0, 1)
    grad = cv2.Sobel(unit, cv2.CV_32F, dx, dy, ksize=ksize)
    return np.clip(0.5 - grad / (2 * _step_response(ksize)), 0, 1)


@lru_cache(maxsize=8)
def _step_response(ksize: int) -> float:
    """Half the Sobel response (ksize) to a unit step: the typical strongest border of a tile."""
    step = np.zeros((2 * ksize, 2 * ksize), np.float32)
    step[:, ksize:] = 1
    return 0.5 * float(cv2.Sobel(step, cv2.CV_32F, 1, 0, ksize=ksize).max())


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Zero out connected components smaller than ``min_area`` (vectorised via bincount)."""
    if labels.max() == 0:
        return labels
    area = np.bincount(labels.ravel())
    small = area < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` (4-connected background) from one labelling instead of its
    iterated dilation, ~10x faster on a 1024² tile: background not connected to the border."""
    background, _ = ndi.label(~mask)
    edge = np.unique(
        np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    )
    keep = np.zeros(int(background.max()) + 1, bool)  # background components that stay
    keep[edge] = True
    keep[0] = False
    return mask | ~keep[background] & (background > 0)


def maps_to_instances(
    fg_prob: np.ndarray, hv: np.ndarray, cfg: PostprocessConfig | None = None
) -> np.ndarray:
    """Instance label map of one tile.

    Args:
        fg_prob: (H, W) float foreground probability.
        hv: (2, H, W) float horizontal and vertical maps.
        cfg: thresholds (defaults: ``PostprocessConfig()``).

    Returns:
        (H, W) int32 labels, 0 = background, 1..n consecutive.
    """
    cfg = cfg or PostprocessConfig()
    fg_prob = np.asarray(fg_prob, np.float32)
    blob = fg_prob >= cfg.fg_threshold
    blob_lab, n_blobs = ndi.label(blob)
    blob_lab = _drop_small(blob_lab, cfg.min_area)
    blob = blob_lab > 0
    if not blob.any():
        return np.zeros(fg_prob.shape, np.int32)

    edge = np.maximum(
        _border_strength(np.asarray(hv[0], np.float32), 0, cfg.sobel_ksize),
        _border_strength(np.asarray(hv[1], np.float32), 1, cfg.sobel_ksize),
    )
    edge = np.clip(edge - (~blob), 0, None)

    energy = (1.0 - edge) * blob
    energy = -cv2.GaussianBlur(energy.astype(np.float32), (3, 3), 0)

    marker = blob & ~(edge >= cfg.edge_threshold)
    marker = fill_holes(marker)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.marker_open, cfg.marker_open))
    marker = cv2.morphologyEx(marker.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    marker_lab, _ = ndi.label(marker)
    marker_lab = _drop_small(marker_lab, cfg.min_area)
    # a small nucleus can lose its whole interior to the border band: its blob is its marker
    seeded = np.zeros(n_blobs + 1, bool)
    seeded[blob_lab[marker_lab > 0]] = True
    seeded[0] = True
    unseeded = ~seeded[blob_lab]
    marker_lab[unseeded] = marker_lab.max() + blob_lab[unseeded]

    labels = watershed(energy, markers=marker_lab, mask=blob)
    labels = _drop_small(labels.astype(np.int32), cfg.min_area)
    # consecutive ids 1..n
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, np.int32)
    lut[ids] = np.arange(ids.size, dtype=np.int32)
    return lut[labels]


def instance_probs(labels: np.ndarray, fg_prob: np.ndarray) -> np.ndarray:
    """Mean foreground probability of each instance, (max_label + 1,) indexed by label."""
    n = int(labels.max()) + 1
    total = np.bincount(labels.ravel(), weights=fg_prob.ravel().astype(np.float64), minlength=n)
    count = np.bincount(labels.ravel(), minlength=n)
    return (total / np.maximum(count, 1)).astype(np.float32)
