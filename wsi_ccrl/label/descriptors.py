"""Seven plain numbers per cell: size, shape and the nucleus's colour, in physical units.

CCRL's crop window follows the nucleus (twice its box, resized to 32 px), so every nucleus looks
the same size to the network: absolute size, the first cue between a lymphocyte, a tumour nucleus
and a stromal one, is not in the embedding. These numbers carry it. They are the baseline any
learnt representation has to clear (``bench.baselines``' ``shape_colour``) and the part of the
``joint`` read-out that ``label`` clusters beside the embedding (``label.features``). Vectorised
over cells: polygon moments by Green's theorem, one slice of the crops.
"""

from __future__ import annotations

import numpy as np

from wsi_ccrl.io.contours import polygon_moments, polygon_points

DESCRIPTORS = ("area_um2", "width_um", "height_um", "elongation", "red", "green", "blue")
CENTRE = 8  # side of the crop's central square whose mean colour is the nucleus's


def elongation(offsets: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(n,) minor / major axis of the ellipse with each polygon's second moments (1 = round)."""
    m = polygon_moments(offsets, np.asarray(xy, np.float64))
    area = np.maximum(np.abs(m["m00"]), 1e-9)
    cx, cy = m["m10"] / area, m["m01"] / area
    mu20, mu02 = m["m20"] / area - cx**2, m["m02"] / area - cy**2
    mu11 = m["m11"] / area - cx * cy
    common = np.sqrt(np.maximum(((mu20 - mu02) / 2) ** 2 + mu11**2, 0))
    l1 = np.maximum((mu20 + mu02) / 2 + common, 1e-9)
    l2 = np.maximum((mu20 + mu02) / 2 - common, 1e-9)
    return np.sqrt(l2 / l1)


def cell_descriptors(
    area: np.ndarray,
    bbox: np.ndarray,
    offsets: np.ndarray,
    xy: np.ndarray,
    crops: np.ndarray,
    mpp: float | None,
) -> np.ndarray:
    """(n, 7) float32 ``DESCRIPTORS`` of n cells.

    Args:
        area: (n,) level-0 pixels²; bbox: (n, 4) x0 y0 x1 y1 level-0 pixels.
        offsets, xy: the cells' CSR outlines (any frame: only their shape is used).
        crops: (n, S, S, 3) uint8; the mean RGB of the central ``CENTRE``² pixels is the nucleus's.
        mpp: µm per level-0 pixel (None: sizes stay in pixels).
    """
    scale = float(mpp) if mpp else 1.0
    bbox = np.asarray(bbox, np.float64)
    s = crops.shape[1]
    lo = max(s // 2 - CENTRE // 2, 0)
    centre = np.asarray(crops[:, lo : lo + CENTRE, lo : lo + CENTRE], np.float64)
    colour = centre.reshape(len(centre), centre.shape[1] * centre.shape[2], 3).mean(1)
    return np.column_stack(
        [
            np.asarray(area, np.float64) * scale**2,
            (bbox[:, 2] - bbox[:, 0]) * scale,
            (bbox[:, 3] - bbox[:, 1]) * scale,
            elongation(offsets, xy),
            colour,
        ]
    ).astype(np.float32)


def store_descriptors(store, start: int = 0, stop: int | None = None) -> np.ndarray:
    """``cell_descriptors`` of a cell store's rows ``start:stop`` (its mpp converts sizes)."""
    stop = store.n_cells if stop is None else stop
    offsets, xy = store.contours(start, stop)
    return cell_descriptors(
        store["area"][start:stop],
        store["bbox"][start:stop],
        offsets,
        xy,
        store["crops"][start:stop],
        store.mpp,
    )


def row_descriptors(store, rows: np.ndarray) -> np.ndarray:
    """``cell_descriptors`` of a store's sorted ``rows``, reading only those cells (a sample)."""
    from wsi_ccrl.label.cluster import read_rows

    rows = np.asarray(rows, np.int64)
    offsets, points = polygon_points(np.asarray(store["contour_offsets"][:], np.int64), rows)
    return cell_descriptors(
        read_rows(store["area"], rows),
        read_rows(store["bbox"], rows),
        offsets,
        read_rows(store["contour_xy"], points),
        read_rows(store["crops"], rows),
        store.mpp,
    )
