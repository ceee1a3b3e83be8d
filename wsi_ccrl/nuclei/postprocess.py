"""Predicted maps -> instance label map: HoVer-Net's marker-controlled watershed.

Where the horizontal/vertical maps change steeply (their Sobel gradient is large) lies a border
between nuclei; the foreground minus those borders gives one marker per nucleus, and a watershed
on the distance-like energy grows the markers back to the full foreground. Whole-image array
operations only (OpenCV, SciPy, scikit-image): no loop over nuclei.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


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

    h = _minmax(np.asarray(hv[0], np.float32))
    v = _minmax(np.asarray(hv[1], np.float32))
    sobel_h = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=cfg.sobel_ksize)
    sobel_v = cv2.Sobel(v, cv2.CV_32F, 0, 1, ksize=cfg.sobel_ksize)
    sobel_h = 1 - _minmax(sobel_h)
    sobel_v = 1 - _minmax(sobel_v)
    edge = np.maximum(sobel_h, sobel_v)
    edge = np.clip(edge - (~blob), 0, None)

    energy = (1.0 - edge) * blob
    energy = -cv2.GaussianBlur(energy.astype(np.float32), (3, 3), 0)

    marker = blob & ~(edge >= cfg.edge_threshold)
    marker = ndi.binary_fill_holes(marker)
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
