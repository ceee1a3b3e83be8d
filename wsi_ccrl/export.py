"""Per-slide exports: GeoJSON that QuPath imports, and a CSV with one row per cell.

Both are streamed: cells are read from the store, formatted and written a chunk at a time, into a
temporary name that is renamed when complete, so memory stays flat whatever the slide's size and a
crash leaves no half-written file under the final name.

GeoJSON follows QuPath's reader (qupath-core ``QuPathTypeAdapters`` / ``GsonTools``): a
FeatureCollection; every Feature has a UUID ``id``, a closed Polygon in level-0 pixels rounded to
2 decimals, and ``properties`` = ``{"objectType": "detection", "classification": {"name", "color"},
"measurements": {name: number}}``, with no per-object metadata strings. QuPath >= 0.6 aborts the
whole import on one self-intersecting polygon, so invalid polygons are repaired (shapely
``make_valid``, the largest polygon kept). Formatting is vectorised: one %-template per chunk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import shapely

from wsi_ccrl.log import get_logger
from wsi_ccrl.palette import ClusterStyles

log = get_logger(__name__)

EXPORT_FORMATS = ("geojson", "csv")
EXPORT_CHUNK_CELLS = 16384
_HEAD = '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":[['
_POINT = "[%.2f,%.2f],"
_LAST_POINT = "[%.2f,%.2f]"
_MEASUREMENT_FORMATS = ("%.2f", "%.4f", "%d", "%.4f")  # area, distance, type, probability


# --------------------------------------------------------------------------- geometry
def clean_polygons(
    offsets: np.ndarray, xy: np.ndarray, bbox: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Contours rounded to 2 decimals and made valid, ready to write.

    Args:
        offsets: (n+1,) int64 CSR offsets into ``xy``, starting at 0.
        xy: (m, 2) contour points, level-0 pixels (rings not closed).
        bbox: (n, 4) x0, y0, x1, y1 of each cell, used for degenerate contours (< 3 points).

    Returns:
        (offsets, xy float64, number of repaired cells). Valid contours come back unchanged but
        for the rounding; invalid ones are replaced by the exterior of the largest polygon of
        ``make_valid`` (snapped to the 0.01 grid), degenerate ones by their bounding box.
    """
    offsets = np.asarray(offsets, np.int64)
    xy = np.round(np.asarray(xy, np.float64).reshape(-1, 2), 2)
    lengths = np.diff(offsets)
    n = lengths.size
    ok = lengths >= 3
    bad = ~ok
    if ok.any():
        cell_of_point = np.repeat(np.arange(n), lengths)
        keep = ok[cell_of_point]
        _, ring_idx = np.unique(cell_of_point[keep], return_inverse=True)
        rings = shapely.linearrings(xy[keep], indices=ring_idx)
        valid = shapely.is_valid(shapely.polygons(rings))
        bad[np.flatnonzero(ok)[~valid]] = True
    if not bad.any():
        return offsets, xy, 0
    replaced: dict[int, np.ndarray] = {}
    for i in np.flatnonzero(bad):  # few cells: the rest stay vectorised
        pts = xy[offsets[i] : offsets[i + 1]]
        replaced[int(i)] = _repair(pts, np.asarray(bbox[i], np.float64))
    new_lengths = lengths.copy()
    for i, pts in replaced.items():
        new_lengths[i] = len(pts)
    new_offsets = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int64)
    new_xy = np.empty((int(new_offsets[-1]), 2), np.float64)
    good_cells = ~bad
    src_idx = np.repeat(
        offsets[:-1][good_cells] - new_offsets[:-1][good_cells], lengths[good_cells]
    )
    dst = np.repeat(good_cells, new_lengths)
    new_xy[dst] = xy[np.flatnonzero(dst) + src_idx]
    for i, pts in replaced.items():
        new_xy[new_offsets[i] : new_offsets[i + 1]] = pts
    return new_offsets, new_xy, len(replaced)


def _repair(points: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """The exterior (not closed) of the largest valid polygon for one bad contour."""
    poly = None
    if len(points) >= 3:
        poly = _largest(shapely.make_valid(shapely.Polygon(points)))
        if poly is not None:
            poly = _largest(shapely.set_precision(poly, 0.01))
    if poly is None:  # degenerate: the cell's bounding box (at least 1 px)
        x0, y0, x1, y1 = bbox
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        return np.round(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64), 2)
    return np.round(np.asarray(poly.exterior.coords)[:-1], 2)


def _largest(geom) -> shapely.Polygon | None:
    parts = [
        p
        for g in shapely.get_parts(geom)
        for p in (shapely.get_parts(g) if g.geom_type == "MultiPolygon" else [g])
        if p.geom_type == "Polygon" and p.area > 0
    ]
    return max(parts, key=lambda p: p.area) if parts else None


# --------------------------------------------------------------------------- ids
def cell_uuids(key: str, start: int, stop: int) -> np.ndarray:
    """Deterministic version-4-format UUID strings for cells ``start:stop`` of slide ``key``.

    A splitmix64 hash of (slide, cell index), vectorised: reruns give identical ids, and a cell's
    id does not depend on how the export is chunked.
    """
    seed = np.uint64(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    idx = np.arange(start, stop, dtype=np.uint64)
    words = np.stack([_splitmix64(seed + 2 * idx), _splitmix64(seed + 2 * idx + np.uint64(1))], 1)
    raw = words.astype(">u8").view(np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = np.frombuffer(raw.tobytes().hex().encode(), "S1").reshape(-1, 32)
    out = np.full((hexed.shape[0], 36), b"-", "S1")
    for a, b, o in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        out[:, o : o + b - a] = hexed[:, a:b]
    return out.view("S36").ravel().astype(str).astype(object)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# --------------------------------------------------------------------------- formatting
def measurement_names(mpp: float | None) -> tuple[str, ...]:
    """QuPath measurement names; the area is in µm² when the slide's µm/px is known."""
    area = "Area \u00b5m^2" if mpp else "Area px^2"
    return (area, "Cluster distance", "Segmenter type", "Segmenter probability")


def format_features(
    ids: np.ndarray,
    offsets: np.ndarray,
    xy: np.ndarray,
    clusters: np.ndarray,
    measurements: np.ndarray,
    styles: ClusterStyles,
    names: tuple[str, ...],
    first: bool,
) -> str:
    """GeoJSON text of a chunk of Features, comma-separated, with one %-template (no per-cell loop).

    Args:
        ids: (n,) UUID strings.
        offsets, xy: CSR contours (not closed; >= 3 points each), from ``clean_polygons``.
        clusters: (n,) cluster ids in ``0..k-1``.
        measurements: (n, len(names)) float values.
        first: whether the chunk starts the collection (no leading comma).
    """
    n = ids.shape[0]
    if n == 0:
        return ""
    meas = np.nan_to_num(np.asarray(measurements, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lengths = np.diff(offsets) + 1  # closed rings
    coff = np.concatenate([[0], np.cumsum(lengths)])
    # closed rings: each cell's points, then its first point again
    point_src = np.repeat(offsets[:-1] - coff[:-1], lengths) + np.arange(coff[-1])
    point_src[coff[1:] - 1] = offsets[:-1]
    ring = xy[point_src]
    # template: head + points + per-cluster tail (classification pre-rendered, % escaped)
    meas_fmt = ",".join(
        f"{json.dumps(m).replace('%', '%%')}:{fmt}"
        for m, fmt in zip(names, _MEASUREMENT_FORMATS, strict=True)
    )
    last_tokens = np.array(
        [
            _LAST_POINT
            + (
                ']]},"properties":{"objectType":"detection","classification":{"name":'
                + json.dumps(name)
                + ',"color":[{},{},{}]}}'.format(*colour)
            ).replace("%", "%%")
            + ',"measurements":{'
            + meas_fmt
            + "}}}"
            for name, colour in styles.styles()
        ],
        dtype=object,
    )
    tokens = np.full(coff[-1], _POINT, dtype=object)
    tokens[coff[1:] - 1] = last_tokens[np.asarray(clusters, np.int64)]
    heads = np.full(n, ",\n" + _HEAD, dtype=object)
    if first:
        heads[0] = "\n" + _HEAD
    tokens[coff[:-1]] = heads + tokens[coff[:-1]]
    # values in template order: id, x0, y0, x1, y1, ..., measurements
    width = 1 + 2 * lengths + meas.shape[1]
    base = np.concatenate([[0], np.cumsum(width)[:-1]])
    vals = np.empty(int(width.sum()), dtype=object)
    vals[base] = ids
    pos = np.repeat(base + 1 - 2 * coff[:-1], lengths) + 2 * np.arange(coff[-1])
    vals[pos] = ring[:, 0].tolist()
    vals[pos + 1] = ring[:, 1].tolist()
    mpos = base + 1 + 2 * lengths
    for j in range(meas.shape[1]):
        vals[mpos + j] = meas[:, j].tolist()
    return "".join(tokens.tolist()) % tuple(vals.tolist())


# --------------------------------------------------------------------------- writers
@contextmanager
def atomic_text(path: Path, compress: bool = False):
    """A text stream to ``path`` written under a temporary name and renamed on success."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    raw = open(tmp, "wb")  # noqa: SIM115 - closed below, renamed only on success
    try:
        stream = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) if compress else raw
        )
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
        yield text
        text.close()  # closes the gzip stream (and raw, when not compressing)
        raw.close()
        os.replace(tmp, path)
    except BaseException:
        raw.close()
        tmp.unlink(missing_ok=True)
        raise


def _chunk_measurements(store, start: int, stop: int, distance: np.ndarray) -> np.ndarray:
    mpp = store.mpp
    area = np.asarray(store["area"][start:stop], np.float64) * (mpp * mpp if mpp else 1.0)
    return np.stack(
        [
            area,
            distance.astype(np.float64),
            np.asarray(store["seg_type"][start:stop], np.float64),
            np.asarray(store["seg_prob"][start:stop], np.float64),
        ],
        axis=1,
    )


def write_geojson(
    store,
    styles: ClusterStyles,
    path: str | Path,
    compress: bool = False,
    chunk_cells: int = EXPORT_CHUNK_CELLS,
) -> dict[str, int]:
    """Stream every cell of ``store`` (with ``cluster`` / ``cluster_distance``) to a GeoJSON file.

    Returns counts: ``cells`` written, ``repaired`` polygons.
    """
    names = measurement_names(store.mpp)
    key = str(store.attrs.get("slide", {}).get("path") or store.path.name)
    repaired = 0
    with atomic_text(Path(path), compress) as f:
        f.write('{"type":"FeatureCollection","features":[')
        for start, stop in store.iter_ranges(chunk_cells):
            offsets, xy = store.contours(start, stop)
            offsets, xy, fixed = clean_polygons(offsets, xy, store["bbox"][start:stop])
            repaired += fixed
            distance = np.asarray(store["cluster_distance"][start:stop])
            f.write(
                format_features(
                    cell_uuids(key, start, stop),
                    offsets,
                    xy,
                    np.asarray(store["cluster"][start:stop]),
                    _chunk_measurements(store, start, stop, distance),
                    styles,
                    names,
                    first=start == 0,
                )
            )
        f.write("\n]}\n")
    if repaired:
        log.info("%s: %d invalid polygons repaired", store.path.name, repaired)
    return {"cells": store.n_cells, "repaired": repaired}


def csv_header(mpp: float | None) -> str:
    area = "area_um2" if mpp else "area_px2"
    return (
        f"cell,centroid_x,centroid_y,{area},cluster,cluster_name,cluster_distance,"
        "seg_type,seg_prob\n"
    )


def write_csv(
    store, styles: ClusterStyles, path: str | Path, chunk_cells: int = EXPORT_CHUNK_CELLS
) -> dict[str, int]:
    """One row per cell: index, centroid (level-0 px), area, cluster, name, distance, segmenter."""
    row = "%d,%.2f,%.2f,%.4f,%d,%s,%.6f,%d,%.4f\n"
    quoted = np.array([_csv_field(n).replace("%", "%%") for n in styles.names], dtype=object)
    with atomic_text(Path(path)) as f:
        f.write(csv_header(store.mpp))
        for start, stop in store.iter_ranges(chunk_cells):
            n = stop - start
            clusters = np.asarray(store["cluster"][start:stop]).astype(np.int64)
            distance = np.asarray(store["cluster_distance"][start:stop])
            meas = _chunk_measurements(store, start, stop, distance)
            centroid = np.asarray(store["centroid"][start:stop], np.float64)
            vals = np.empty((n, 9), dtype=object)
            vals[:, 0] = np.arange(start, stop).tolist()
            vals[:, 1] = centroid[:, 0].tolist()
            vals[:, 2] = centroid[:, 1].tolist()
            vals[:, 3] = meas[:, 0].tolist()
            vals[:, 4] = clusters.tolist()
            vals[:, 5] = quoted[clusters]
            vals[:, 6] = meas[:, 1].tolist()
            vals[:, 7] = meas[:, 2].astype(np.int64).tolist()
            vals[:, 8] = np.nan_to_num(meas[:, 3]).tolist()
            f.write((row * n) % tuple(vals.ravel().tolist()))
    return {"cells": store.n_cells}


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
