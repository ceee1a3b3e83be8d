"""Nucleus outlines made ready for QuPath: simplified, on its 0.01 px grid, valid, whole.

QuPath >= 0.6 snaps every imported geometry to a 0.01 px grid (JTS ``PrecisionModel(100)``) and
aborts the whole import on a geometry that is invalid before that snap, so validity is checked
here after rounding to the same grid. An invalid outline (pixels joined only at a corner, a
self-touching contour) is repaired by GEOS ``make_valid`` (``structure``), keeping every part as
a MultiPolygon, which QuPath 0.6 reads, rather than dropping all but the largest.

A chunk of cells goes through one compiled pass per ring (``overlay_kernels``: simplification,
an exact validity test, area, centroid); only the rare invalid or degenerate cells go through GEOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.io.contours import edge_contours, gather_polygons, ring_neighbours
from wsi_ccrl.label.overlay_kernels import cut_rings, simplest_rings

GRID = 0.01  # QuPath's precision: coordinates are multiples of 0.01 px
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
    simplify: float = LabelConfig.simplify,
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
    xy = np.round(xy, 2)  # QuPath's grid: validity and area are those of what is written
    ring_offsets, rx, ry, valid, area, centroid = simplest_rings(
        offsets,
        np.ascontiguousarray(xy[:, 0]),
        np.ascontiguousarray(xy[:, 1]),
        float(simplify),
        float(pitch),
        MAX_AREA_CHANGE,
    )
    special = np.flatnonzero(~valid | (area <= 0))  # repaired with GEOS: few cells
    fixed = _repaired(ring_offsets, rx, ry, bbox, special)
    shapes = _assemble(ring_offsets, rx, ry, area, centroid, special, fixed)
    shapes.repaired = int(special.size)
    return shapes


def _repaired(
    offsets: np.ndarray, x: np.ndarray, y: np.ndarray, bbox: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """Valid (multi)polygons for the cells whose outline is invalid: every part kept (GEOS
    ``make_valid``, snapped to the grid); the cell's box where nothing with an area remains."""
    if not cells.size:
        return np.empty(0, dtype=object)
    lengths = np.diff(offsets)[cells]
    geoms = np.full(cells.size, None, dtype=object)
    ring = lengths >= 3
    if ring.any():
        sub_off, sub_xy = gather_polygons(offsets, np.stack([x, y], axis=1), cells[ring])
        fixed = shapely.make_valid(
            _polygons(sub_off, sub_xy), method="structure", keep_collapsed=False
        )
        geoms[ring] = _polygonal(shapely.set_precision(fixed, GRID))
    empty = np.array([g is None or g.is_empty or g.area <= 0 for g in geoms], bool)
    if empty.any():  # nothing with an area: the cell's box (at least 1 px)
        geoms[empty] = _boxes(bbox[cells[empty]])
    return geoms


def _assemble(
    offsets: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    area: np.ndarray,
    centroid: np.ndarray,
    special: np.ndarray,
    fixed: np.ndarray,
) -> CellShapes:
    """CellShapes from one ring per cell (closed here), the ``special`` cells replaced by the
    ``fixed`` geometries."""
    n = offsets.size - 1
    lengths = np.diff(offsets)
    closed = lengths + 1
    ends = np.cumsum(closed)
    idx = np.repeat(offsets[:-1] - (ends - closed), closed) + np.arange(int(ends[-1]) if n else 0)
    idx[ends - 1] = offsets[:-1]
    points = np.stack([x[idx], y[idx]], axis=1)
    if not special.size:
        return CellShapes(
            xy=points,
            ring_offsets=np.concatenate([[0], ends]).astype(np.int64),
            polygon_offsets=np.arange(n + 1, dtype=np.int64),
            cell_offsets=np.arange(n + 1, dtype=np.int64),
            area=area,
            centroid=centroid,
            repaired=0,
        )
    area, centroid = area.copy(), centroid.copy()
    area[special] = shapely.area(fixed)
    centroid[special] = shapely.get_coordinates(shapely.centroid(fixed))
    point_start = np.concatenate([[0], ends])
    blocks_xy, ring_len, poly_rings, cell_polys = [], [], [], []
    prev = 0
    for cell, geom in zip(special.tolist(), fixed, strict=True):  # runs of regular cells between
        blocks_xy.append(points[point_start[prev] : point_start[cell]])
        ring_len.append(closed[prev:cell])
        poly_rings.append(np.ones(cell - prev, np.int64))
        cell_polys.append(np.ones(cell - prev, np.int64))
        coords, (r_off, p_off, c_off) = _ragged(np.array([geom], dtype=object))
        blocks_xy.append(coords)
        ring_len.append(np.diff(r_off))
        poly_rings.append(np.diff(p_off))
        cell_polys.append(np.diff(c_off))
        prev = cell + 1
    blocks_xy.append(points[point_start[prev] :])
    ring_len.append(closed[prev:])
    poly_rings.append(np.ones(n - prev, np.int64))
    cell_polys.append(np.ones(n - prev, np.int64))

    def csr(parts):
        return np.concatenate([[0], np.cumsum(np.concatenate(parts))]).astype(np.int64)

    return CellShapes(
        xy=np.concatenate(blocks_xy),
        ring_offsets=csr(ring_len),
        polygon_offsets=csr(poly_rings),
        cell_offsets=csr(cell_polys),
        area=area,
        centroid=centroid,
        repaired=0,
    )


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
    if kind == shapely.GeometryType.POLYGON:  # (ring, polygon) offsets; one polygon per cell
        return coords, (offs[0], offs[1], np.arange(offs[1].size))
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
    new_offsets, ox, oy = cut_rings(np.asarray(offsets, np.int64), x, y, float(pitch))
    return new_offsets, np.stack([ox, oy], axis=1)


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
