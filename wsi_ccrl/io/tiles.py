"""The tissue of a slide and the tiles that cover it.

Tiles are planned on a pixel grid at the segmenter's resolution (``target_mpp``): the tile *cores*
partition the region of interest exactly, so each nucleus (owned by the core holding its centroid)
is stored once; each tile is read with ``overlap`` extra pixels per side so a nucleus near a core
edge is seen whole, plus a crop margin so its crop window lies in the pixels already read. With a
tissue mask, a tile's box is trimmed to the tissue it holds (plus ``overlap``), in steps of
``TRIM_STEP`` so few distinct shapes reach the network: on scattered tissue the network sees a
quarter fewer pixels, and only glass farther than ``overlap`` from the mask's tissue is skipped.
A tile whose four quarter tiles (each trimmed alike) cover its tissue with a tenth fewer pixels
is replaced by them: large tiles inside a section, small ones on fragments and ragged edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wsi_ccrl.errors import WsiCcrlError

TRIM_STEP = 128  # target px: trimmed boxes shrink in these steps (the network's stride divides it)
SPLIT_GAIN = 0.9  # a tile is split in four when they need at most this share of its pixels


# --------------------------------------------------------------------------- tissue
def tissue_mask(thumb: np.ndarray, max_gray: int = 220) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail: Otsu on grey levels, never lighter than ``max_gray``.

    The cap keeps a blank (all-glass) slide from being split into "tissue" by Otsu; a closing
    fills pale gaps inside tissue and an opening removes dust specks.
    """
    from skimage.filters import threshold_otsu

    gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY)
    if gray.min() == gray.max():
        return np.zeros(gray.shape, bool)
    thr = min(float(threshold_otsu(gray)), float(max_gray))
    mask = (gray < thr).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool)


# --------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class Tile:
    """One tile of the plan, in target-resolution pixels of the whole slide.

    ``core`` (x0, y0, x1, y1) is the part this tile owns; ``read`` the larger box it is read with
    (``seg`` + crop margin); ``seg`` the box given to the segmenter (core + overlap, trimmed to
    the tissue the tile holds).
    """

    index: int
    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]
    seg: tuple[int, int, int, int]


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering the tissue of a region at ``target_mpp``; ``scale`` level-0 px per target px."""

    tiles: tuple[Tile, ...]
    scale: float
    tile_size: int
    overlap: int
    crop_margin: int
    target_mpp: float
    roi: tuple[int, int, int, int]  # level-0 x, y, w, h
    n_grid: int  # tiles before the tissue filter
    extent: tuple[float, float] = (float("inf"), float("inf"))  # the slide, target px (w, h)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def attrs(self) -> dict[str, Any]:
        return {
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "crop_margin": self.crop_margin,
            "target_mpp": self.target_mpp,
            "count": len(self.tiles),
            "grid": self.n_grid,
        }


def plan_tiles(
    dimensions: tuple[int, int],
    slide_mpp: float,
    target_mpp: float,
    tile_size: int,
    overlap: int,
    crop_margin: int = 0,
    roi: tuple[int, int, int, int] | None = None,
    mask: np.ndarray | None = None,
    mask_downsample: float = 1.0,
    min_tissue_fraction: float = 0.0,
) -> TilePlan:
    """Tiles whose cores partition the ROI on the target-resolution grid; tissue tiles only.

    Args:
        dimensions: level-0 (width, height).
        slide_mpp: µm per level-0 pixel.
        target_mpp: µm per pixel the segmenter works at.
        tile_size: side of the box given to the segmenter (core + 2 * overlap), target px.
        overlap: pixels per side around the core, wider than the largest nucleus.
        crop_margin: extra pixels per side read for the crops of nuclei near the core edge.
        roi: level-0 (x, y, w, h) to limit the work to; default the whole slide.
        mask: optional tissue mask (thumbnail), with ``mask_downsample`` level-0 px per pixel.
        min_tissue_fraction: tiles whose core has less tissue than this are dropped.
    """
    core = tile_size - 2 * overlap
    if core < 16:
        raise WsiCcrlError(
            f"tile_size {tile_size} leaves a core of {core} px with overlap {overlap}: "
            "use a larger tile or a smaller overlap"
        )
    w0, h0 = dimensions
    x, y, w, h = roi if roi is not None else (0, 0, w0, h0)
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(w0, int(x) + int(w)), min(h0, int(y) + int(h))
    if x1 <= x0 or y1 <= y0:
        raise WsiCcrlError(f"--roi {x},{y},{w},{h} lies outside the slide ({w0} x {h0} px)")
    scale = target_mpp / slide_mpp
    # ROI in target pixels: the cores tile [tx0, tx1) x [ty0, ty1)
    tx0, ty0 = int(np.floor(x0 / scale)), int(np.floor(y0 / scale))
    tx1, ty1 = int(np.ceil(x1 / scale)), int(np.ceil(y1 / scale))
    xs = np.arange(tx0, tx1, core)
    ys = np.arange(ty0, ty1, core)
    gx, gy = np.meshgrid(xs, ys)  # row-major: tiles ordered by rows, then columns
    cx0, cy0 = gx.ravel(), gy.ravel()
    cx1, cy1 = np.minimum(cx0 + core, tx1), np.minimum(cy0 + core, ty1)
    keep = np.ones(cx0.size, bool)
    if mask is not None:
        frac = _tissue_fraction(mask, mask_downsample / scale, cx0, cy0, cx1, cy1)
        keep = frac >= min_tissue_fraction if min_tissue_fraction > 0 else frac > 0
    tiles = []
    m = crop_margin
    for i in np.flatnonzero(keep):
        c = (int(cx0[i]), int(cy0[i]), int(cx1[i]), int(cy1[i]))
        seg = (c[0] - overlap, c[1] - overlap, c[0] + core + overlap, c[1] + core + overlap)
        boxes = [(c, seg)]
        if mask is not None:
            boxes = _fit_to_tissue(c, seg, mask, mask_downsample / scale, overlap)
        for owned, box in boxes:
            tiles.append(
                Tile(
                    index=len(tiles),
                    core=owned,
                    read=(box[0] - m, box[1] - m, box[2] + m, box[3] + m),
                    seg=box,
                )
            )
    return TilePlan(
        tiles=tuple(tiles),
        scale=scale,
        tile_size=tile_size,
        overlap=overlap,
        crop_margin=crop_margin,
        target_mpp=target_mpp,
        roi=(x0, y0, x1 - x0, y1 - y0),
        n_grid=int(cx0.size),
        extent=(w0 / scale, h0 / scale),
    )


def _fit_to_tissue(
    core: tuple[int, int, int, int],
    seg: tuple[int, int, int, int],
    mask: np.ndarray,
    ds: float,
    overlap: int,
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """(core, box) pairs for one tile: its box trimmed to its tissue, or its four quarters (those
    holding tissue, each trimmed alike) when they need at most ``SPLIT_GAIN`` of its pixels."""
    whole = _trim_to_tissue(seg, mask, ds, core, overlap)
    x0, y0, x1, y1 = core
    mx, my = (x0 + x1) // 2, (y0 + y1) // 2
    if mx - x0 < TRIM_STEP or my - y0 < TRIM_STEP:
        return [(core, whole)]
    quarters = []
    for q in ((x0, y0, mx, my), (mx, y0, x1, my), (x0, my, mx, y1), (mx, my, x1, y1)):
        mx0, my0 = int(np.floor(q[0] / ds)), int(np.floor(q[1] / ds))
        if mask[my0 : int(np.ceil(q[3] / ds)), mx0 : int(np.ceil(q[2] / ds))].any():
            box = (q[0] - overlap, q[1] - overlap, q[2] + overlap, q[3] + overlap)
            quarters.append((q, _trim_to_tissue(box, mask, ds, q, overlap)))
    if sum(_area(b) for _, b in quarters) <= SPLIT_GAIN * _area(whole):
        return quarters
    return [(core, whole)]


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _trim_to_tissue(
    seg: tuple[int, int, int, int],
    mask: np.ndarray,
    ds: float,
    core: tuple[int, int, int, int],
    halo: int,
) -> tuple[int, int, int, int]:
    """``seg`` shrunk, side by side in ``TRIM_STEP`` steps, to the bounding box of the mask's
    tissue in ``core`` (``ds`` target px per mask px) grown by ``halo``."""
    mh, mw = mask.shape
    mx0, my0 = min(int(core[0] // ds), mw), min(int(core[1] // ds), mh)
    mx1, my1 = min(int(np.ceil(core[2] / ds)), mw), min(int(np.ceil(core[3] / ds)), mh)
    rows, cols = np.nonzero(mask[my0:my1, mx0:mx1])
    if rows.size == 0:
        return seg
    tissue = (
        (mx0 + cols.min()) * ds - halo,
        (my0 + rows.min()) * ds - halo,
        (mx0 + cols.max() + 1) * ds + halo,
        (my0 + rows.max() + 1) * ds + halo,
    )
    x0, y0, x1, y1 = seg
    x0 += int(max(tissue[0] - x0, 0) // TRIM_STEP) * TRIM_STEP
    y0 += int(max(tissue[1] - y0, 0) // TRIM_STEP) * TRIM_STEP
    x1 -= int(max(x1 - tissue[2], 0) // TRIM_STEP) * TRIM_STEP
    y1 -= int(max(y1 - tissue[3], 0) // TRIM_STEP) * TRIM_STEP
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else seg


def _tissue_fraction(
    mask: np.ndarray,
    ds: float,
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
) -> np.ndarray:
    """Mean of ``mask`` over boxes given in target px (``ds`` target px per mask px), vectorised
    with an integral image."""
    integral = cv2.integral(mask.astype(np.uint8)).astype(np.int64)  # (H+1, W+1)
    mh, mw = mask.shape
    mx0 = np.clip(np.floor(x0 / ds).astype(int), 0, mw)
    my0 = np.clip(np.floor(y0 / ds).astype(int), 0, mh)
    mx1 = np.clip(np.ceil(x1 / ds).astype(int), 0, mw)
    my1 = np.clip(np.ceil(y1 / ds).astype(int), 0, mh)
    area = np.maximum((mx1 - mx0) * (my1 - my0), 1)
    total = integral[my1, mx1] - integral[my0, mx1] - integral[my1, mx0] + integral[my0, mx0]
    return total / area


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"x,y,w,h"`` (level-0 pixels) to a tuple; one clear error for anything else."""
    if text is None or text == "":
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(float(p)) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise WsiCcrlError(f"--roi must be x,y,w,h in level-0 pixels with w, h > 0, got {text!r}")
    return values  # type: ignore[return-value]
