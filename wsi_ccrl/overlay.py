"""Nucleus outlines made ready for QuPath: simplified, on its 0.01 px grid, valid, whole.

QuPath >= 0.6 snaps every imported geometry to a 0.01 px grid (JTS ``PrecisionModel(100)``) and
aborts the whole import on a geometry that is invalid before that snap, so validity is checked
here after rounding to the same grid. An invalid outline (pixels joined only at a corner, a
self-touching contour) is repaired by GEOS ``make_valid`` (``structure``), keeping every part as
a MultiPolygon, which QuPath 0.6 reads, rather than dropping all but the largest.

Everything runs on a chunk of cells at once (shapely's vectorised functions, NumPy); only the rare
invalid or degenerate cells take a slower path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import shapely

from wsi_ccrl.contours import edge_contours, gather_polygons, ring_neighbours

GRID = 0.01  # QuPath's precision: coordinates are multiples of 0.01 px
DEFAULT_SIMPLIFY = 0.5  # Douglas-Peucker tolerance, outline pixels (benchmarks/overlay_geometry.py)
MAX_AREA_CHANGE = 0.01  # a cell whose simplified area would change more keeps a finer outline


@dataclass
class CellShapes:
    """The (multi)polygons of ``n`` cells, flattened (CSR) for writing.

    ``xy`` holds closed rings (first point repeated last) on the 0.01 grid: ring r is
    ``xy[ring_offsets[r]:ring_offsets[r + 1]]``, polygon p has rings
    ``polygon_offsets[p]:polygon_offsets[p + 1]`` (the first its shell, later ones holes), and
    cell i has polygons ``cell_offsets[i]:cell_offsets[i + 1]`` (one: a Polygon, more: a
    MultiPolygon).
    """

    xy: np.ndarray  # (m, 2) float64
    ring_offsets: np.ndarray  # (r + 1,) int64
    polygon_offsets: np.ndarray  # (p + 1,) int64
    cell_offsets: np.ndarray  # (n + 1,) int64
    area: np.ndarray  # (n,) float64, px²
    centroid: np.ndarray  # (n, 2) float64, px
    repaired: int  # cells whose outline was invalid or had no area

    @property
    def n_cells(self) -> int:
        return int(self.area.shape[0])

    def vertices(self) -> int:
        """Distinct vertices written (closing points not counted)."""
        return int(self.xy.shape[0] - (self.ring_offsets.size - 1))


def cell_shapes(
    offsets: np.ndarray,
    xy: np.ndarray,
    bbox: np.ndarray,
    simplify: float = DEFAULT_SIMPLIFY,
    pitch: float = 1.0,
    legacy_shift: float = 0.0,
) -> CellShapes:
    """Simplified, valid (multi)polygons of a chunk of cells from their stored outlines.

    Simplifying a pixel outline: first its corners are cut at the middle of every pixel edge
    (the same pixel centres stay inside; 0.5 pixel² less per outline), which turns a staircase
    into its straight line, then Douglas-Peucker removes the vertices within ``simplify``
    pixels. A cell keeps the corner-cut outline, or failing that its exact one, where the
    simpler one would be invalid or change its area by more than ``MAX_AREA_CHANGE``.

    Args:
        offsets: (n+1,) CSR offsets into ``xy``, starting at 0.
        xy: (m, 2) outline points (rings not closed), level-0 px.
        bbox: (n, 4) x0, y0, x1, y1: the shape of a cell whose outline has no area.
        simplify: tolerance in outline pixels; 0 keeps the exact outline.
        pitch: level-0 px per outline pixel (the segmenter's pixel: 0.5 on a 0.5 µm/px slide
            segmented at 0.25 µm/px).
        legacy_shift: 0.5 for stores whose coordinates are pixel centres (written before the
            pixel-edge frame): integer outlines are re-traced along the pixel edges exactly,
            others are only shifted.
    """
    offsets = np.asarray(offsets, np.int64)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    if legacy_shift:
        offsets, xy = _from_pixel_centres(offsets, xy, legacy_shift)
    n = offsets.size - 1
    geoms = np.full(n, None, dtype=object)
    ok = np.diff(offsets) >= 3  # a ring with no area is found invalid below
    if not ok.all():
        offsets, xy = gather_polygons(offsets, xy, np.flatnonzero(ok))
    xy = np.round(xy, 2)  # QuPath's grid: validity and area are those of what is written
    exact_area = np.abs(ring_areas(offsets, xy))
    if simplify > 0 and offsets.size > 1:
        chosen, valid = _simplest(offsets, xy, exact_area, simplify, pitch)
    else:
        chosen = _polygons(offsets, xy)
        valid = shapely.is_valid(chosen)
    bad = ~valid
    if bad.any():  # corner-joined pixels, self-touching outlines: every part kept
        fixed = shapely.make_valid(chosen[bad], method="structure", keep_collapsed=False)
        chosen[bad] = _polygonal(shapely.set_precision(fixed, GRID))
    geoms[ok] = chosen
    repaired = np.zeros(n, bool)
    repaired[np.flatnonzero(ok)[bad]] = True
    has_area = ok.copy()
    has_area[ok] = shapely.area(chosen) > 0
    if not has_area.all():  # nothing with an area: the cell's box (at least 1 px)
        geoms[~has_area] = _boxes(bbox[~has_area])
    coords, (ring_offsets, polygon_offsets, cell_offsets) = _ragged(geoms)
    area = shapely.area(geoms)
    return CellShapes(
        xy=coords,
        ring_offsets=ring_offsets.astype(np.int64),
        polygon_offsets=polygon_offsets.astype(np.int64),
        cell_offsets=cell_offsets.astype(np.int64),
        area=area,
        centroid=shapely.get_coordinates(shapely.centroid(geoms)),
        repaired=int((~has_area | repaired).sum()),
    )


def _simplest(
    offsets: np.ndarray, xy: np.ndarray, exact_area: np.ndarray, simplify: float, pitch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the simplest of (corner-cut + Douglas-Peucker, corner-cut, exact) that is
    valid and keeps the area within ``MAX_AREA_CHANGE``; and whether it is valid (only an exact
    outline can be invalid)."""
    cut_offsets, cut_xy = cut_corners(offsets, xy, pitch)
    cut = _polygons(cut_offsets, np.round(cut_xy, 2))
    out = shapely.simplify(cut, simplify * pitch, preserve_topology=False)
    limit = MAX_AREA_CHANGE * exact_area
    valid = shapely.is_valid(out)
    coarse = ~valid | (np.abs(shapely.area(out) - exact_area) > limit)
    if coarse.any():
        idx = np.flatnonzero(coarse)
        out[idx] = cut[idx]
        valid[idx] = shapely.is_valid(cut[idx])
        far = idx[~valid[idx] | (np.abs(shapely.area(cut[idx]) - exact_area[idx]) > limit[idx])]
        if far.size:
            out[far] = _polygons(*gather_polygons(offsets, xy, far))
            valid[far] = shapely.is_valid(out[far])
    return out, valid


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Only the polygons of each geometry (a collection's lines and points dropped)."""
    mixed = ~np.isin(shapely.get_type_id(geoms), (3, 6))
    for i in np.flatnonzero(mixed):  # rare: the few repaired cells that collapsed in part
        parts = [p for p in shapely.get_parts(geoms[i]) if p.geom_type == "Polygon"]
        geoms[i] = shapely.MultiPolygon(parts) if parts else shapely.Polygon()
    return geoms


def _polygons(offsets: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """One shapely Polygon per CSR ring (not closed), built in one call."""
    lengths = np.diff(offsets)
    closed = lengths + 1
    ends = np.cumsum(closed)
    idx = np.repeat(offsets[:-1] - (ends - closed), closed) + np.arange(
        int(ends[-1]) if ends.size else 0
    )
    idx[ends - 1] = offsets[:-1]
    ring_offsets = np.concatenate([[0], ends])
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, xy[idx], (ring_offsets, np.arange(lengths.size + 1))
    )


def _ragged(geoms: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Flat coordinates and (ring, polygon, cell) offsets of Polygons and MultiPolygons."""
    kind, coords, offs = shapely.to_ragged_array(geoms)
    if kind == shapely.GeometryType.POLYGON:
        return coords, (offs[0], np.arange(offs[1].size), offs[1])
    return coords, tuple(offs)


def ring_areas(offsets: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Signed shoelace area of each ring (CSR, not closed), vectorised."""
    lengths = np.diff(offsets)
    nxt, _ = ring_neighbours(lengths)
    cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    owner = np.repeat(np.arange(lengths.size), lengths)
    return 0.5 * np.bincount(owner, cross, minlength=lengths.size)


def cut_corners(
    offsets: np.ndarray, xy: np.ndarray, pitch: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel outline through the middles of its pixel edges (other rings unchanged).

    For a ring whose edges are all axis-aligned multiples of ``pitch``: the first and last pixel
    edge of every edge contribute their midpoints, and points in a straight run are dropped, so
    a 45-degree staircase becomes one straight edge. Every pixel centre stays on the same side,
    and a simple ring loses exactly 0.5 pixel² (a quarter of each corner pixel, net).
    """
    x = np.ascontiguousarray(xy[:, 0], np.float64)
    y = np.ascontiguousarray(xy[:, 1], np.float64)
    new_offsets, ox, oy = _cut_corners(np.asarray(offsets, np.int64), x, y, float(pitch))
    return new_offsets, np.stack([ox, oy], axis=1)


@numba.njit(cache=True, nogil=True)
def _cut_corners(offsets, x, y, pitch):  # pragma: no cover - compiled; tested via cut_corners
    """One pass per ring (a compiled loop: NumPy needed ~10 temporaries per point)."""
    n = offsets.size - 1
    ox = np.empty(2 * x.size)
    oy = np.empty(2 * x.size)
    keep = np.empty(2 * x.size, np.bool_)
    out = np.zeros(n + 1, np.int64)
    k = 0
    tol = 0.05 * pitch * pitch  # |cross| below this: a straight run (float32-stored input)
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        pixel_ring = True
        for i in range(a, b):
            j = i + 1 if i + 1 < b else a
            dx, dy = x[j] - x[i], y[j] - y[i]
            span = (abs(dx) + abs(dy)) / pitch
            if not ((dx == 0 or dy == 0) and abs(span - np.rint(span)) < 0.05 and span > 0.5):
                pixel_ring = False
                break
        start = k
        for i in range(a, b):
            if not pixel_ring:
                ox[k], oy[k] = x[i], y[i]
                k += 1
                continue
            j = i + 1 if i + 1 < b else a
            dx, dy = x[j] - x[i], y[j] - y[i]
            span = (abs(dx) + abs(dy)) / pitch
            hx, hy = 0.5 * dx / span, 0.5 * dy / span
            ox[k], oy[k] = x[i] + hx, y[i] + hy
            k += 1
            if np.rint(span) >= 2:
                ox[k], oy[k] = x[j] - hx, y[j] - hy
                k += 1
        for i in range(start, k):  # straight-run points, against the ring as built
            p = i - 1 if i > start else k - 1
            q = i + 1 if i + 1 < k else start
            ax, ay = ox[i] - ox[p], oy[i] - oy[p]
            bx, by = ox[q] - ox[i], oy[q] - oy[i]
            keep[i] = abs(ax * by - ay * bx) > tol or ax * bx + ay * by <= 0
        w = start
        for i in range(start, k):
            if keep[i]:
                ox[w], oy[w] = ox[i], oy[i]
                w += 1
        k = w
        out[r + 1] = k
    return out, ox[:k].copy(), oy[:k].copy()


def _from_pixel_centres(
    offsets: np.ndarray, xy: np.ndarray, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Outlines of a store from before the pixel-edge frame, moved into it."""
    if xy.size and np.array_equal(xy, np.rint(xy)):
        try:
            new_offsets, edges = edge_contours(offsets, xy)
            return new_offsets, edges + shift
        except ValueError:  # not an OpenCV chain: shift only
            pass
    return offsets, xy + shift


def _boxes(bbox: np.ndarray) -> np.ndarray:
    x0, y0 = bbox[:, 0], bbox[:, 1]
    x1, y1 = np.maximum(bbox[:, 2], x0 + 1), np.maximum(bbox[:, 3], y0 + 1)
    return shapely.box(np.round(x0, 2), np.round(y0, 2), np.round(x1, 2), np.round(y1, 2))
