"""One interface for every nucleus segmenter: RGB tiles in, ``Nuclei`` (per tile) out.

A segmenter knows nothing about slides: the pipeline reads tiles at the segmenter's ``mpp``, and
maps what comes back into level-0 slide coordinates. ``nuclei_from_labels`` turns any instance
label map into ``Nuclei`` so each segmenter only has to produce a label map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from wsi_ccrl.io.cellrows import CellRows, column


@dataclass
class Nuclei(CellRows):
    """Nuclei of one tile in that tile's pixel frame (at the segmenter's working mpp); ``select``,
    ``concat`` and ``empty`` are ``CellRows``'."""

    centroid: np.ndarray = column(np.float32, 2)  # x, y
    bbox: np.ndarray = column(np.float32, 4)  # x0, y0, x1, y1 (x1, y1 exclusive)
    area: np.ndarray = column(np.float32)  # pixels²
    contour_offsets: np.ndarray = column(np.int64)  # (n+1,) CSR into contour_xy
    contour_xy: np.ndarray = column(np.float32, 2)  # (m, 2) x, y polygon vertices (not closed)
    seg_type: np.ndarray = column(np.int16)  # 0 when the segmenter has no types
    seg_prob: np.ndarray = column(np.float32)


def nuclei_from_labels(
    labels: np.ndarray,
    types: np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> Nuclei:
    """Measure every instance of a label map.

    Args:
        labels: (H, W) int instance map, 0 = background, instances 1..max (gaps allowed).
        types: optional per-instance type, (max_label + 1,) indexed by label, or (H, W) type map
            (the majority type inside each instance is used).
        probs: optional per-instance probability, (max_label + 1,) indexed by label.

    Returns:
        ``Nuclei`` in the label map's pixel frame, ordered by label. Centroids are pixel centres
        (pixel (i, j) has centre x = j, y = i); contours trace the outer pixel centres (OpenCV).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got {labels.shape}")
    labels = labels.astype(np.int32, copy=False)
    slices = ndi.find_objects(labels)
    ids = np.array([i + 1 for i, s in enumerate(slices) if s is not None], dtype=np.int64)
    if ids.size == 0:
        return Nuclei.empty()
    area, cx, cy = _moments(labels, ids)
    bbox = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[i - 1] for i in ids)],
        dtype=np.float32,
    )
    contours: list[np.ndarray] = []
    for i in ids:
        sy, sx = slices[i - 1]
        mask = (labels[sy, sx] == i).astype(np.uint8)
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not found:
            contours.append(np.zeros((0, 2), np.float32))
            continue
        biggest = max(found, key=len).reshape(-1, 2).astype(np.float32)
        biggest += np.array([sx.start, sy.start], np.float32)
        contours.append(biggest)
    lengths = np.array([len(c) for c in contours], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if types is None:
        seg_type = np.zeros(ids.size, np.int16)
    else:
        types = np.asarray(types)
        if types.shape == labels.shape:
            seg_type = _majority_type(labels, types.astype(np.int64), ids)
        else:
            seg_type = types[ids]
        seg_type = seg_type.astype(np.int16)
    seg_prob = (
        np.ones(ids.size, np.float32)
        if probs is None
        else np.asarray(probs)[ids].astype(np.float32)
    )
    return Nuclei(
        centroid=np.stack([cx, cy], axis=1).astype(np.float32),
        bbox=bbox,
        area=area.astype(np.float32),
        contour_offsets=offsets,
        contour_xy=np.concatenate(contours).reshape(-1, 2).astype(np.float32),
        seg_type=seg_type,
        seg_prob=seg_prob,
    )


def _moments(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pixel count, mean x, mean y) of each label in ``ids``, from three bincounts: sums of
    whole numbers, so exactly ``ndi.center_of_mass``'s values, at a fraction of its cost."""
    h, w = labels.shape
    flat = labels.ravel()
    n = int(ids.max()) + 1
    count = np.bincount(flat, minlength=n)[ids].astype(np.float64)
    sum_x = np.bincount(flat, weights=np.tile(np.arange(w, dtype=np.float64), h), minlength=n)
    sum_y = np.bincount(flat, weights=np.repeat(np.arange(h, dtype=np.float64), w), minlength=n)
    return count, sum_x[ids] / count, sum_y[ids] / count


def _majority_type(labels: np.ndarray, type_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Most frequent type inside each instance, from one 2-D histogram (no per-pixel loop)."""
    fg = labels > 0
    n_types = int(type_map.max()) + 1
    n_labels = int(labels.max()) + 1
    flat = labels[fg].astype(np.int64) * n_types + type_map[fg]
    counts = np.bincount(flat, minlength=n_labels * n_types).reshape(n_labels, n_types)
    return counts[ids].argmax(axis=1)


class Segmenter(ABC):
    """Finds nuclei in RGB tiles at resolution ``mpp`` (µm/px)."""

    name: str = ""  # "watershed" | "hovernet" | "embedded"
    mpp: float = 0.25

    @abstractmethod
    def segment(self, tiles: list[np.ndarray]) -> list[Nuclei]:
        """One ``Nuclei`` per tile.

        Args:
            tiles: RGB tiles, each (H, W, 3) uint8, at ``self.mpp``.
        """

    def infer(self, tiles: list[np.ndarray]) -> Any:
        """The heavy, many-threaded half of ``segment`` (a network's forward pass), so a pipeline
        can run it while ``resolve`` finishes the batch before. Default: nothing (all in ``resolve``).
        """
        return None

    def resolve(self, tiles: list[np.ndarray], inferred: Any) -> list[Nuclei]:
        """``segment``'s other half: ``infer``'s output of the same tiles to ``Nuclei``."""
        return self.segment(tiles)

    def fit_slide(self, samples: list[np.ndarray]) -> None:
        """Fit per-slide settings (stain statistics) on sample regions of the slide's tissue.

        Called once per slide before its tiles, so that a nucleus' result depends on the slide,
        not on the tile around it. The default does nothing.

        Args:
            samples: RGB regions, each (H, W, 3) uint8, at ``self.mpp``.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able description recorded in the store attrs (name, model, weights...)."""
        return {"name": self.name, "mpp": float(self.mpp)}
