"""Ragged polygons stored CSR style: ``offsets`` (n+1,) into one ``xy`` (m, 2) array, and all their
maths (gathering, pixel-edge outlines, edges, moments, area, centroid), vectorised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Store attribute ``contour``: every coordinate in QuPath's frame, where pixel (i, j) covers
# x in [j, j + 1), y in [i, i + 1); segmented outlines run along the outer pixel edges.
SEGMENT_CONTOURS = {"origin": "pixel-edge", "outline": "pixel edges"}


def legacy_shift(attrs: Mapping[str, Any]) -> float:
    """How far a store's coordinates sit from QuPath's frame: 0, or 0.5 px for stores written
    before the frame was recorded (their centroids and outlines were pixel centres, -0.5 px)."""
    contour = attrs.get("contour")
    return 0.0 if isinstance(contour, Mapping) and contour.get("origin") == "pixel-edge" else 0.5


def gather_polygons(
    offsets: np.ndarray, xy: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of ``rows`` (an index array), as new (offsets from 0, xy), vectorised.

    Point j of selected polygon i sits at ``offsets[rows[i]] + j``: one gather for all points.
    """
    new_offsets, point_idx = polygon_points(offsets, rows)
    return new_offsets, xy[point_idx].reshape(-1, 2)


def polygon_points(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new offsets from 0, the indices into ``xy`` of every point of ``rows``' polygons), so a
    caller can read just those points (sorted ``rows`` give sorted indices)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    point_idx = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, point_idx


# Chain directions (x, y), y down; a pixel's corners as offsets from its centre: TL, TR, BR, BL.
_STEPS = np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]])
_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _corner_index(offset: np.ndarray) -> int:
    return int(np.flatnonzero((offset == _CORNERS).all(axis=1))[0])


def _corner_tables() -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit corner of a pixel for each chain direction of an OpenCV outer contour.

    OpenCV walks outer borders counter-clockwise on screen, the background on its right. Along an
    axis step the crack runs on that side, entering at ``(-d + n) / 2`` and leaving at
    ``(d + n) / 2`` (``n`` the outward normal); a diagonal step passes the corner the two pixels
    share, leaving at ``d / 2`` and entering the next pixel at ``-d / 2``.
    """
    entry, exit_ = np.zeros(8, np.int64), np.zeros(8, np.int64)
    for code, (dx, dy) in enumerate(_STEPS):
        d = np.array([dx, dy], np.float64)
        if dx and dy:
            entry[code], exit_[code] = _corner_index(-d / 2), _corner_index(d / 2)
        else:
            n = np.array([-dy, dx], np.float64)  # right of the step: the outside
            entry[code], exit_[code] = _corner_index((n - d) / 2), _corner_index((n + d) / 2)
    return entry, exit_


_ENTRY, _EXIT = _corner_tables()


def edge_contours(offsets: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge polygons from OpenCV outer contours through pixel centres, for all cells at once.

    QuPath (and any area, overlap or IoU computed from the polygon) reads a nucleus as the union
    of its pixel squares: the outline along the pixels' outer edges, whose area is the pixel
    count. OpenCV's contour runs through the centres of the border pixels instead, half a pixel
    inside. This walks every contour's chain and emits, at each border pixel, the corners of its
    outer edges, so the result is exactly the outline of the traced pixels (holes untraced, as
    with ``RETR_EXTERNAL``; pixels joined only at a corner give a ring touching itself there).

    Args:
        offsets: (n+1,) CSR offsets into ``xy``.
        xy: (m, 2) integer-valued x, y of the border pixel centres in OpenCV's order
            (``CHAIN_APPROX_SIMPLE`` or ``NONE``); a 1-point contour is a single pixel.

    Returns:
        (offsets, xy float64): rings (not closed), corners only, in the input's frame (pixel j
        spans x in [j - 0.5, j + 0.5]; add 0.5 where pixel j spans [j, j + 1)). An empty contour
        stays empty.
    """
    offsets = np.asarray(offsets, np.int64)
    pts = np.rint(np.asarray(xy, np.float64).reshape(-1, 2))
    lengths = np.diff(offsets)
    n = lengths.size
    owner = np.repeat(np.arange(n), lengths)
    nxt, _ = ring_neighbours(lengths)
    delta = pts[nxt] - pts
    steps = np.abs(delta).max(axis=1).astype(np.int64)
    chain_ok = (delta == 0).any(axis=1) | (np.abs(delta[:, 0]) == np.abs(delta[:, 1]))
    if not chain_ok.all():
        raise ValueError("contours must be chain codes (axis or diagonal steps between vertices)")
    single = lengths == 1
    # 1. one row per border pixel, with the unit step leaving it (a lone pixel keeps one row)
    count = np.where(single[owner], 1, steps)
    src = np.repeat(np.arange(pts.shape[0]), count)
    t = np.arange(src.size) - np.repeat(np.cumsum(count) - count, count)
    unit = delta / np.maximum(steps, 1)[:, None]
    chain = pts[src] + t[:, None] * unit[src]
    code = _direction_code(unit[src])
    chain_owner = owner[src]
    _, prev = ring_neighbours(np.bincount(chain_owner, minlength=n))
    # 2. its corners: from the entry corner (incoming step) to the exit corner (outgoing step),
    # counter-clockwise round the pixel; a full turn where the two meet (the tip of a spur)
    entry, exit_ = _ENTRY[code[prev]], _EXIT[code]
    turns = (entry - exit_) % 4
    turns[turns == 0] = 4
    lone = single[chain_owner]
    entry[lone], turns[lone] = 0, 3
    k = turns + 1
    pix = np.repeat(np.arange(chain.shape[0]), k)
    j = np.arange(pix.size) - np.repeat(np.cumsum(k) - k, k)
    out = chain[pix] + _CORNERS[(entry[pix] - j) % 4]
    return drop_redundant(out, chain_owner[pix], n)


def ring_neighbours(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the next and previous point of each point, cyclic within its ring."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    idx = np.arange(int(ends[-1]) if lengths.size else 0)
    nxt, prev = idx + 1, idx - 1
    has = lengths > 0
    nxt[ends[has] - 1] = starts[has]
    prev[starts[has]] = ends[has] - 1
    return nxt, prev


def _direction_code(unit: np.ndarray) -> np.ndarray:
    """Index into ``_STEPS`` of each unit step (x, y in {-1, 0, 1})."""
    lut = np.full((3, 3), -1, np.int64)
    lut[_STEPS[:, 0] + 1, _STEPS[:, 1] + 1] = np.arange(8)
    return lut[unit[:, 0].astype(np.int64) + 1, unit[:, 1].astype(np.int64) + 1]


def drop_redundant(xy: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated points, then points inside a straight run, ring by ring (cyclic)."""
    nxt, _ = ring_neighbours(np.bincount(owner, minlength=n))
    keep = (xy[nxt] != xy).any(axis=1)
    xy, owner = xy[keep], owner[keep]
    nxt, prev = ring_neighbours(np.bincount(owner, minlength=n))
    a, b = xy - xy[prev], xy[nxt] - xy
    straight = (a[:, 0] * b[:, 1] == a[:, 1] * b[:, 0]) & ((a * b).sum(axis=1) > 0)
    xy, owner = xy[~straight], owner[~straight]
    return np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int64), xy


# --------------------------------------------------------------------------- polygon maths
# The one place for shoelace sums over CSR polygons: the benchmark's shape features
# (``baselines``) and the datasets' ground-truth areas and centroids use these.
def polygon_edges(offsets: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every edge of every CSR polygon, the last vertex of each joined back to its first.

    Args:
        offsets: (n+1,) int into ``xy``; xy: (m, 2) vertices, not closed.

    Returns:
        owner (m,) polygon index of each edge; start (m, 2) and end (m, 2) float64 vertices.
    """
    offsets = np.asarray(offsets, np.int64)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(offsets.size - 1), lengths)
    nxt = np.arange(xy.shape[0]) + 1
    ok = lengths > 0
    nxt[offsets[1:][ok] - 1] = offsets[:-1][ok]
    return owner, xy, xy[nxt]


def polygon_moments(offsets: np.ndarray, xy: np.ndarray) -> dict[str, np.ndarray]:
    """Raw moments m00..m03 of every CSR polygon (as ``cv2.moments`` of a contour), vectorised.

    Args:
        offsets: (n+1,) int64 into ``xy``; xy: (m, 2) vertices, not closed.

    Returns:
        ``{"m00": (n,), "m10": ..., "m03": ...}`` float64, orientation-independent (area > 0).
    """
    owner, start, end = polygon_edges(offsets, xy)
    n = len(offsets) - 1
    x0, y0 = start[:, 0], start[:, 1]
    x1, y1 = end[:, 0], end[:, 1]
    a = x0 * y1 - x1 * y0

    def total(v: np.ndarray) -> np.ndarray:
        return np.bincount(owner, a * v, minlength=n)

    m = {
        "m00": total(np.ones_like(a)) / 2,
        "m10": total(x0 + x1) / 6,
        "m01": total(y0 + y1) / 6,
        "m20": total(x0 * x0 + x0 * x1 + x1 * x1) / 12,
        "m02": total(y0 * y0 + y0 * y1 + y1 * y1) / 12,
        "m11": total(x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0) / 24,
        "m30": total(x0**3 + x0**2 * x1 + x0 * x1**2 + x1**3) / 20,
        "m03": total(y0**3 + y0**2 * y1 + y0 * y1**2 + y1**3) / 20,
        "m21": total(x0**2 * (3 * y0 + y1) + 2 * x0 * x1 * (y0 + y1) + x1**2 * (y0 + 3 * y1)) / 60,
        "m12": total(y0**2 * (3 * x0 + x1) + 2 * y0 * y1 * (x0 + x1) + y1**2 * (x0 + 3 * x1)) / 60,
    }
    sign = np.where(m["m00"] < 0, -1.0, 1.0)  # clockwise polygons give negative moments
    return {k: v * sign for k, v in m.items()}


def polygon_area_centroid(offsets: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shoelace area and centroid of every CSR polygon at once.

    Args:
        offsets: (n+1,) int64 into ``xy``; xy: (m, 2) vertices (not closed).

    Returns:
        area (n,) float64 (absolute), centroid (n, 2) float64 (the vertex mean where area is 0).
    """
    n = len(offsets) - 1
    lengths = np.diff(np.asarray(offsets, np.int64))
    if n == 0 or len(xy) == 0:
        return np.zeros(n), np.zeros((n, 2))
    owner, start, end = polygon_edges(offsets, xy)
    x0, y0 = start[:, 0], start[:, 1]
    x1, y1 = end[:, 0], end[:, 1]
    cross = x0 * y1 - x1 * y0
    a2 = np.bincount(owner, cross, minlength=n)  # twice the signed area
    cx = np.bincount(owner, (x0 + x1) * cross, minlength=n)
    cy = np.bincount(owner, (y0 + y1) * cross, minlength=n)
    mean = (
        np.stack([np.bincount(owner, x0, minlength=n), np.bincount(owner, y0, minlength=n)], 1)
        / np.maximum(lengths, 1)[:, None]
    )
    safe = np.abs(a2) > 1e-9
    centroid = mean.copy()
    centroid[safe, 0] = cx[safe] / (3.0 * a2[safe])
    centroid[safe, 1] = cy[safe] / (3.0 * a2[safe])
    return np.abs(a2) / 2.0, centroid
