"""Ragged polygons stored CSR style: ``offsets`` (n+1,) into one ``xy`` (m, 2) array."""

from __future__ import annotations

import numpy as np


def gather_polygons(
    offsets: np.ndarray, xy: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of ``rows`` (an index array), as new (offsets from 0, xy), vectorised.

    Point j of selected polygon i sits at ``offsets[rows[i]] + j``: one gather for all points.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    point_idx = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, xy[point_idx].reshape(-1, 2)
