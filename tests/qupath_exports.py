"""The export QuPath's own reader is run on beside the demo's (``.ci/run``, ``tests/label/
test_qupath_reader.py``): a synthetic store whose outlines need what the demo's rarely do.

A 20x slide (0.5 µm/px, segmented at 0.25: two outline pixels per level-0 px) with cells far from
the origin, holding plain blobs, pixels joined only at a corner (repaired into a MultiPolygon),
a bow-tie (a self-crossing outline: two triangles), a ring that touches itself around a hole
(repaired into a Polygon with a hole), a one-pixel sliver (its box) and a missing measurement.

    python tests/qupath_exports.py OUT_DIR   # writes OUT_DIR/*.geojson(.gz), prints their paths
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from wsi_ccrl.io.contours import SEGMENT_CONTOURS
from wsi_ccrl.io.store import CellBatch, CellStore, CellStoreWriter
from wsi_ccrl.label.export import export_store
from wsi_ccrl.label.palette import cluster_styles

ORIGIN = np.array([61_234.0, 38_917.0])  # level-0 px of a 20x slide
PITCH = 2.0  # level-0 px per outline pixel: a 0.5 µm/px slide segmented at 0.25

SQUARE = [[0, 0], [6, 0], [6, 6], [0, 6]]
CORNER_JOINED = [[0, 0], [6, 0], [6, 6], [12, 6], [12, 12], [6, 12], [6, 6], [0, 6]]
BOWTIE = [[0, 0], [10, 10], [10, 0], [0, 10]]
# the outer square, in to the hole along one edge, round the hole, and back out the same edge
HOLED = [[0, 0], [12, 0], [12, 12], [0, 12], [0, 0], [4, 4], [4, 8], [8, 8], [8, 4], [4, 4]]
SLIVER = [[0, 0], [1, 1]]
OUTLINES = {
    "square": SQUARE,
    "corner-joined": CORNER_JOINED,
    "bowtie": BOWTIE,
    "holed": HOLED,
    "sliver": SLIVER,
    "staircase": [[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [3, 2], [3, 3], [0, 3]],
}


def synthetic_store(path: Path, copies: int = 3) -> CellStore:
    """A labelled store of ``copies`` of each outline, spaced along x."""
    rings = [np.asarray(r, np.float64) for r in OUTLINES.values()] * copies
    xy, bbox = [], []
    for i, ring in enumerate(rings):
        level0 = ORIGIN + [40.0 * i, 0] + ring * PITCH
        xy.append(level0.astype(np.float32))
        lo, hi = level0.min(0), level0.max(0)
        bbox.append([*np.floor(lo), *np.ceil(hi) + 1])
    n = len(rings)
    attrs = {
        "slide": {"path": "synthetic-20x.svs", "mpp": 0.5},
        "segmenter": {"name": "synthetic", "types": {"1": "tumour", "2": "immune"}},
        "tiles": {"target_mpp": 0.25},
        "contour": SEGMENT_CONTOURS,
    }
    writer = CellStoreWriter(path, 8, attrs, chunk_cells=8, overwrite=True)
    bbox = np.array(bbox, np.int32)
    writer.add(
        CellBatch(
            crops=np.zeros((n, 8, 8, 3), np.uint8),
            centroid=((bbox[:, :2] + bbox[:, 2:]) / 2).astype(np.float32),
            bbox=bbox,
            area=np.full(n, 30, np.float32),
            seg_type=(np.arange(n) % 3).astype(np.int16),  # 0: a type the segmenter did not name
            seg_prob=np.linspace(0.5, 1, n, dtype=np.float32),
            contour_offsets=np.concatenate([[0], np.cumsum([len(r) for r in rings])]),
            contour_xy=np.concatenate(xy),
        )
    )
    store = CellStore.open(writer.finalize().path, mode="r+")
    distance = np.linspace(0, 1, n).astype(np.float32)
    distance[1] = np.nan  # left out of the measurements
    store.write_column("cluster", (np.arange(n) % 3).astype(np.int16))
    store.write_column("cluster_distance", distance)
    return store


def write_synthetic_exports(out: Path) -> tuple[list[Path], dict[str, int]]:
    """The synthetic store exported as ``synthetic.geojson``, ``synthetic.geojson.gz`` and, with
    exact outlines (``simplify`` 0), ``exact.geojson``."""
    out.mkdir(parents=True, exist_ok=True)
    store = synthetic_store(out / "synthetic.zarr")
    files = [out / "synthetic.geojson", out / "synthetic.geojson.gz", out / "exact.geojson"]
    counts = export_store(store, cluster_styles(3), {"geojson": files[0]})
    export_store(store, cluster_styles(3), {"geojson": files[1]}, compress=True)
    export_store(
        store, cluster_styles(3), {"geojson": files[2]}, simplify=0
    )  # corners joined: MultiPolygons
    return files, counts


if __name__ == "__main__":
    paths, _ = write_synthetic_exports(Path(sys.argv[1]))
    print("\n".join(str(p) for p in paths))
