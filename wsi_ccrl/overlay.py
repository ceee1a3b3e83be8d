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
    exact_area = np.abs(ring_areas(offsets, xy))
    geoms = np.full(n, None, dtype=object)
    ok = np.diff(offsets) >= 3  # a ring with no area is found invalid below
    if not ok.all():
        offsets, xy = gather_polygons(offsets, xy, np.flatnonzero(ok))
        exact_area = exact_area[ok]
    xy = np.round(xy, 2)  # QuPath's grid; validity is checked on what is written
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
    lengths = np.diff(offsets)
    x, y = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
    nxt, _ = ring_neighbours(lengths)
    dx, dy = x[nxt] - x, y[nxt] - y
    span = (np.abs(dx) + np.abs(dy)) / pitch
    steps = np.rint(span)
    pixel_edge = ((dx == 0) | (dy == 0)) & (np.abs(span - steps) < 0.05) & (steps >= 1)
    half = 0.5 / np.maximum(span, 1e-12)
    hx, hy = dx * half, dy * half  # half a pixel edge along the edge
    second = steps >= 2  # a longer edge also gives the midpoint of its last pixel edge
    if not pixel_edge.all():  # other rings keep their own vertices
        bad = np.concatenate([[0], np.cumsum(~pixel_edge)])
        ok = np.repeat(bad[offsets[1:]] == bad[offsets[:-1]], lengths)
        hx, hy = np.where(ok, hx, 0.0), np.where(ok, hy, 0.0)
        second &= ok
    # interleave (first, second) per edge, the second only where it exists
    extra = np.concatenate([[0], np.cumsum(second)])
    first_at = np.arange(x.size) + extra[:-1]
    m = x.size + int(extra[-1])
    ox, oy = np.empty(m), np.empty(m)
    ox[first_at], oy[first_at] = x + hx, y + hy
    at = first_at[second] + 1
    ox[at], oy[at] = (x[nxt] - hx)[second], (y[nxt] - hy)[second]
    return drop_collinear(ox, oy, offsets + extra[offsets], tol=0.05 * pitch * pitch)


def drop_collinear(
    x: np.ndarray, y: np.ndarray, offsets: np.ndarray, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the points inside straight runs of each ring (cyclic; |cross| <= ``tol`` px²);
    returns (offsets, xy)."""
    nxt, prev = ring_neighbours(np.diff(offsets))
    ax, ay = x - x[prev], y - y[prev]
    bx, by = x[nxt] - x, y[nxt] - y
    keep = (np.abs(ax * by - ay * bx) > tol) | (ax * bx + ay * by <= 0)
    kept = np.concatenate([[0], np.cumsum(keep)])
    return kept[offsets].astype(np.int64), np.stack([x[keep], y[keep]], axis=1)


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
