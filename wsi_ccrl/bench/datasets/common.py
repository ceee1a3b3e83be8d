"""Ground-truth nuclei → cell stores with a ``gt_class`` column, shared by the dataset readers.

A reader yields one :class:`GroundTruthTile` per image (its nuclei as polygons or an instance map,
with class indices); :func:`write_store` turns them into a cell store in the same format that
``segment`` writes, so that training, embedding and the baselines read benchmark data exactly as
they read slides.

Crops follow the one crop rule of ``wsi_ccrl.io.crops`` (the paper's adaptive window, mirrored past
the image's edge), with the same ``window_scale`` meaning as ``segment``: the window side is
``window_scale`` times the nucleus box's longer side (2 on CoNSeP, 1 on NuCLS).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.io.cellrows import CellRows, column
from wsi_ccrl.io.crops import CropSpec
from wsi_ccrl.io.store import CellBatch, CellStore, CellStoreWriter, final_path
from wsi_ccrl.log import get_logger, progress_enabled

log = get_logger(__name__)

STORE_FORMAT = "wsi-ccrl-benchmark-store"


@dataclass
class GroundTruthNuclei(CellRows):
    """The annotated nuclei of one image, in its pixel coordinates (pixel-edge frame).

    ``contour_offsets``/``contour_xy`` are CSR polygons as in the cell store; ``gt_class`` indexes
    the dataset's class names. ``select`` and the other row operations are ``CellRows``'.
    """

    centroid: np.ndarray = column(np.float32, 2)  # x y
    bbox: np.ndarray = column(np.int32, 4)  # x0 y0 x1 y1 (exclusive)
    area: np.ndarray = column(np.float32)  # pixels²
    contour_offsets: np.ndarray = column(np.int64)  # (n+1,)
    contour_xy: np.ndarray = column(np.float32, 2)  # (m, 2)
    gt_class: np.ndarray = column(np.int16)


@dataclass
class GroundTruthTile:
    """One annotated image: RGB pixels and its labelled nuclei."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    nuclei: GroundTruthNuclei
    meta: dict[str, Any] = field(default_factory=dict)


def nuclei_from_instance_map(inst_map: np.ndarray, inst_class: np.ndarray) -> GroundTruthNuclei:
    """Centroids, boxes, areas and polygons of an instance map, with each instance's class.

    The measuring is the segmenters' (``nuclei_from_labels``); here its pixel-centre frame is
    moved to pixel-edge coordinates (pixel (i, j) covers x in [j, j+1)), the store's convention.

    Args:
        inst_map: (H, W) int, 0 = background, 1..N instances (ids may have gaps).
        inst_class: (N_max + 1,) int class index per instance id (index 0 unused); a negative
            value drops that instance (unlabelled).
    """
    from wsi_ccrl.segment.base import nuclei_from_labels

    found = nuclei_from_labels(np.asarray(inst_map), types=np.asarray(inst_class))
    nuclei = GroundTruthNuclei(
        centroid=found.centroid + 0.5,
        bbox=found.bbox.astype(np.int32),
        area=found.area,
        contour_offsets=found.contour_offsets,
        contour_xy=found.contour_xy + 0.5,
        gt_class=found.seg_type.astype(np.int16),
    )
    return nuclei.select(nuclei.gt_class >= 0)


def tile_to_batch(tile: GroundTruthTile, tile_index: int, spec: CropSpec) -> CellBatch:
    """One tile's nuclei as store rows, all crops cut in one call."""
    nuc = tile.nuclei
    crops = spec.crops(tile.image, nuc.bbox)
    n = len(nuc)
    return CellBatch(
        crops=crops,
        centroid=nuc.centroid.astype(np.float32),
        bbox=nuc.bbox.astype(np.int32),
        area=nuc.area.astype(np.float32),
        seg_type=nuc.gt_class.astype(np.int16),
        seg_prob=np.ones(n, np.float32),
        contour_offsets=nuc.contour_offsets,
        contour_xy=nuc.contour_xy,
        extra={
            "gt_class": nuc.gt_class.astype(np.int16),
            "tile": np.full(n, tile_index, np.int32),
        },
    )


def write_store(
    path: str | Path,
    tiles: Iterable[GroundTruthTile],
    tile_names: list[str],
    attrs: dict[str, Any],
    spec: CropSpec,
    chunk_cells: int = SegmentConfig.chunk_cells,
) -> CellStore:
    """Write every tile's labelled nuclei to a finished store (an existing one is replaced).

    Args:
        tiles: the tiles, in the order of ``tile_names`` (the ``tile`` column indexes it).
        attrs: dataset description (``dataset``, ``classes``, ``split`` ...), stored as attrs.
        spec: the crop rule's numbers (``CropSpec.of(BenchmarkConfig)``).
    """
    from tqdm import tqdm

    writer = CellStoreWriter(
        path,
        crop_size=spec.size,
        attrs={
            "format": STORE_FORMAT,
            "slide": {"path": attrs.get("data_dir"), "mpp": attrs.get("mpp")},
            "segmenter": "ground-truth",
            "crop": spec.attrs(),
            "tiles": tile_names,
            "contour": {"origin": "pixel-edge"},
            "benchmark": attrs,
        },
        chunk_cells=chunk_cells,
        overwrite=True,
    )
    n_cells = 0
    bar = tqdm(
        tiles,
        total=len(tile_names),
        desc=final_path(path).stem,
        unit="tile",
        disable=not progress_enabled(),
    )
    for i, tile in enumerate(bar):
        batch = tile_to_batch(tile, i, spec)
        writer.add(batch, tiles=1)
        n_cells += len(batch)
    store = writer.finalize()
    log.info("%s: %d cells from %d tiles", store.path, n_cells, len(tile_names))
    return store


def store_matches(path: str | Path, attrs: dict[str, Any], spec: CropSpec) -> bool:
    """True when a finished store at ``path`` was written from the same data and settings."""
    import json

    path = final_path(path)
    if not path.exists():
        return False
    try:
        store = CellStore.open(path)
    except Exception:
        return False
    old = store.attrs
    return old.get("benchmark") == json.loads(json.dumps(attrs)) and spec.matches(old.get("crop"))


@dataclass
class TypedImage:
    """One image of a data set whose nuclei are typed points (dots, or centroids of masks)."""

    path: Path
    mpp: float  # µm per pixel of the image as stored
    points: np.ndarray  # (n, 2) float64 x, y in the image's pixel-edge frame
    classes: np.ndarray  # (n,) int64 index into the data set's class names
    split: str  # the data set's split the image belongs to
    slide: str  # the source slide, the unit stain varies by


@dataclass
class CellSet(CellRows):
    """The per-cell arrays the benchmark models read, loaded from a store (optionally a subset)."""

    crops: np.ndarray = column(np.uint8, None, None, 3)  # (n, S, S, 3)
    area: np.ndarray = column(np.float32)
    bbox: np.ndarray = column(np.int32, 4)
    contour_offsets: np.ndarray = column(np.int64)  # (n+1,)
    contour_xy: np.ndarray = column(np.float32, 2)  # (m, 2)
    gt_class: np.ndarray = column(np.int16)


def load_cells(store: CellStore, index: np.ndarray | None = None) -> CellSet:
    """Read a store's crops, shapes and classes into memory (``index``: sorted rows to keep)."""
    offsets, xy = store.contours()
    cells = CellSet(
        crops=store["crops"][:],
        area=store["area"][:],
        bbox=store["bbox"][:],
        contour_offsets=offsets,
        contour_xy=xy,
        gt_class=store["gt_class"][:],
    )
    if index is None:
        return cells
    keep = np.zeros(len(cells), bool)
    keep[np.asarray(index, np.int64)] = True
    return cells.select(keep)
