"""Classical nucleus detection needing no weights, in the spirit of QuPath's cell detection.

Hematoxylin optical density by colour deconvolution (Ruifrok & Johnston, ``skimage.color.rgb2hed``),
Gaussian smoothing, a per-tile Otsu threshold with a floor (so a tile of pale stroma does not turn
its background into nuclei), then a distance-transform watershed seeded at distance peaks to split
touching nuclei, and size filters in µm² so the same settings work at any resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from wsi_ccrl.config import SegmentConfig, WatershedConfig
from wsi_ccrl.segment import register
from wsi_ccrl.segment.base import Nuclei, Segmenter, nuclei_from_labels


class WatershedSegmenter(Segmenter):
    """Hematoxylin threshold + distance watershed; nuclei have no type (``seg_type`` 0).

    ``seg_prob`` is the nucleus's mean hematoxylin OD above the threshold, squashed to (0, 1): a
    confidence ranking, not a calibrated probability.
    """

    name = "watershed"

    def __init__(self, cfg: WatershedConfig | None = None, mpp: float = 0.25):
        self.cfg = cfg or WatershedConfig()
        self.mpp = float(mpp)

    def segment(self, tiles: list[np.ndarray]) -> list[Nuclei]:
        return [nuclei_from_labels(*self.label(tile)) for tile in tiles]

    def label(self, tile: np.ndarray) -> tuple[np.ndarray, None, np.ndarray]:
        """(labels (H, W) int32, no types, per-label probability) for one RGB tile."""
        c = self.cfg
        hema = self.hematoxylin(tile)
        if c.smooth_sigma > 0:
            hema = ndi.gaussian_filter(hema, c.smooth_sigma)
        thr = c.threshold
        if thr is None:
            thr = float(threshold_otsu(hema)) if hema.max() > hema.min() else np.inf
        thr = max(thr, c.min_threshold)
        mask = ndi.binary_fill_holes(hema > thr)
        if c.open_radius > 0:
            mask = ndi.binary_opening(mask, _disk(c.open_radius))
        px_area = self.mpp**2
        min_px, max_px = c.min_area_um2 / px_area, c.max_area_um2 / px_area
        blobs, n = ndi.label(mask)
        if n == 0:
            return blobs.astype(np.int32), None, np.zeros(1, np.float32)
        dist = ndi.distance_transform_edt(mask)
        if c.dist_sigma > 0:
            dist = ndi.gaussian_filter(dist, c.dist_sigma)
        if c.seed_weight > 0:
            # nuclei are darkest near their centre: blend in the hematoxylin at nucleus scale
            blob = ndi.gaussian_filter(hema, c.seed_sigma_um / self.mpp)
            dist = dist + c.seed_weight * (blob - thr) / max(thr, 1e-3) * (c.min_peak_um / self.mpp)
            dist[~mask] = 0
        min_distance = max(1, round(c.split_distance_um / self.mpp))
        peaks = peak_local_max(
            dist,
            min_distance=min_distance,
            threshold_abs=c.min_peak_um / self.mpp,
            labels=blobs,
            exclude_border=False,
        )
        markers = np.zeros(mask.shape, np.int32)
        markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
        # blobs that got no peak keep one seed at their deepest point
        seeded = np.zeros(n + 1, bool)
        seeded[blobs[peaks[:, 0], peaks[:, 1]]] = True
        missing = np.flatnonzero(~seeded[1:]) + 1
        if missing.size:
            pos = ndi.maximum_position(dist, blobs, missing)
            rows, cols = np.asarray(pos, dtype=np.int64).reshape(-1, 2).T
            markers[rows, cols] = len(peaks) + np.arange(1, missing.size + 1)
        labels = watershed(-dist, markers, mask=mask)
        area = np.bincount(labels.ravel())
        bad = (area < min_px) | (area > max_px)
        bad[0] = False
        labels[bad[labels]] = 0
        # confidence: mean OD above threshold, squashed
        area = np.bincount(labels.ravel())
        od = np.bincount(labels.ravel(), weights=hema.ravel()) / np.maximum(area, 1)
        prob = (1.0 - np.exp(-2.0 * np.maximum(od - thr, 0) / max(thr, 1e-3))).astype(np.float32)
        return labels.astype(np.int32), None, prob

    @staticmethod
    def hematoxylin(tile: np.ndarray) -> np.ndarray:
        """Hematoxylin optical density (H, W) float32 of an RGB uint8 tile."""
        return rgb2hed(tile)[..., 0].astype(np.float32)

    def describe(self) -> dict[str, Any]:
        from wsi_ccrl.config import to_dict

        return {"name": self.name, "mpp": self.mpp, "params": to_dict(self.cfg)}


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= r * r


@register("watershed")
def _build(cfg: SegmentConfig) -> WatershedSegmenter:
    return WatershedSegmenter(cfg.watershed, mpp=cfg.target_mpp)
