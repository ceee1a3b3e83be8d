"""The cell store: one zarr v3 group per slide (or dataset), one row per cell.

One file of ~430 lines on purpose: the layout, the writer (append, resume, finalise) and the reader
of one format belong together.

Layout (``SCHEMA_VERSION`` 1), all arrays chunked along cells, Zstd-compressed and (stores written
since checksums were added) CRC32C-checksummed, so a corrupt chunk fails to read instead of
decoding into garbage (``io/verify`` checks every chunk without decoding it):

- ``crops`` uint8 (N, S, S, 3): one RGB crop per cell, centred on it.
- ``centroid`` float32 (N, 2): x, y in level-0 pixels of the slide.
- ``bbox`` int32 (N, 4): x0, y0, x1, y1 in level-0 pixels (x1, y1 exclusive).
- ``area`` float32 (N,): nucleus area in level-0 pixels² (µm² = area · mpp²).
- ``contour_offsets`` int64 (N+1,) and ``contour_xy`` float32 (M, 2): the nucleus polygons, CSR style
  (cell i's polygon is ``contour_xy[offsets[i]:offsets[i+1]]``, level-0 pixels, not closed).
- ``seg_type`` int16, ``seg_prob`` float32: the segmenter's nucleus type and its probability.
- later: ``embedding`` float16 (N, D), ``cluster`` int16, ``cluster_distance`` float32 (``label``),
  ``gt_class`` int16 (benchmark stores).

Writes go to ``<name>.zarr.partial``. Rows are buffered and flushed a chunk at a time; after every
flush the attrs record how many rows and tiles are durable, so a crash leaves a partial store that a
re-run truncates to its last flush and continues; ``finalize`` renames it to ``<name>.zarr``. A
writer holds ``<name>.zarr.lock`` (``store_lock``) from start to finish, so a second writer of the
same store stops in one line instead of truncating or deleting the first one's rows.
"""

from __future__ import annotations

import shutil
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.cellrows import CellRows, column
from wsi_ccrl.io.store_lock import StoreLock
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

SCHEMA_VERSION = 1
PARTIAL_SUFFIX = ".partial"
ROW_ARRAYS = ("crops", "centroid", "bbox", "area", "seg_type", "seg_prob")
# bytes-to-bytes codecs of every array: Zstd, then a CRC32C of the compressed chunk
_COMPRESSOR = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec())


@dataclass
class CellBatch(CellRows):
    """Rows for a group of cells (one tile, usually), ready to append; ``select``, ``concat`` and
    ``empty`` (``CellBatch.empty(crops=S)``) are ``CellRows``'.

    ``contour_offsets`` has n+1 entries starting at 0 and indexes ``contour_xy`` (level-0 pixels).
    ``extra`` holds further per-cell columns, e.g. ``gt_class`` for benchmark stores.
    """

    crops: np.ndarray = column(np.uint8, None, None, 3)  # (n, S, S, 3)
    centroid: np.ndarray = column(np.float32, 2)
    bbox: np.ndarray = column(np.int32, 4)
    area: np.ndarray = column(np.float32)
    seg_type: np.ndarray = column(np.int16)
    seg_prob: np.ndarray = column(np.float32)
    contour_offsets: np.ndarray = column(np.int64)  # (n+1,)
    contour_xy: np.ndarray = column(np.float32, 2)  # (m, 2)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def final_path(path: str | Path) -> Path:
    """``x.zarr`` for ``x``, ``x.zarr`` or ``x.zarr.partial``."""
    path = Path(path)
    name = path.name
    if name.endswith(PARTIAL_SUFFIX):
        name = name[: -len(PARTIAL_SUFFIX)]
    if not name.endswith(".zarr"):
        name += ".zarr"
    return path.with_name(name)


def partial_path(path: str | Path) -> Path:
    final = final_path(path)
    return final.with_name(final.name + PARTIAL_SUFFIX)


class CellStore:
    """Read (and annotate) a finished cell store. ``CellStore.open(path)``."""

    def __init__(self, group: zarr.Group, path: Path):
        self.group = group
        self.path = path

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> CellStore:
        path = Path(path)
        if not path.exists():
            raise WsiCcrlError(f"cell store not found: {path}")
        try:
            group = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # zarr raises several types for a non-store folder
            raise WsiCcrlError(f"not a cell store: {path} ({type(exc).__name__})") from None
        if group.attrs.get("schema_version") is None or "centroid" not in group:
            raise WsiCcrlError(f"not a wsi-ccrl cell store (no schema_version/centroid): {path}")
        if path.name.endswith(PARTIAL_SUFFIX):
            raise WsiCcrlError(f"store is incomplete (resume with `wsi-ccrl segment`): {path}")
        return cls(group, path)

    # ------------------------------------------------------------------ reading
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def n_cells(self) -> int:
        return int(self.group["centroid"].shape[0])

    def __len__(self) -> int:
        return self.n_cells

    @property
    def crop_size(self) -> int:
        return int(self.group["crops"].shape[1])

    @property
    def chunk_cells(self) -> int:
        return int(self.group["centroid"].chunks[0])

    @property
    def mpp(self) -> float | None:
        mpp = self.group.attrs.get("slide", {}).get("mpp")
        return float(mpp) if mpp else None

    def __contains__(self, name: str) -> bool:
        return name in self.group

    def __getitem__(self, name: str) -> zarr.Array:
        if name not in self.group:
            raise WsiCcrlError(f"{self.path}: no array {name!r}")
        return self.group[name]

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one array; a chunk that fails to read (its checksum, its codec)
        is one line naming store, array and chunk, not a codec's traceback mid-run."""
        arr = self[name]
        try:
            return np.asarray(arr[start:stop])
        except Exception as exc:
            first, last = start // arr.chunks[0], ((stop or arr.shape[0]) - 1) // arr.chunks[0]
            where = f"chunk {first}" if first == last else f"chunks {first}-{last}"
            raise WsiCcrlError(
                f"{self.path}: {name}: {where}: failed to read ({type(exc).__name__}); "
                "`wsi-ccrl check` lists every problem"
            ) from None

    def contours(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(offsets re-based to 0, xy) for cells ``start:stop``; one read of each array."""
        stop = self.n_cells if stop is None else stop
        offsets = self.group["contour_offsets"][start : stop + 1]
        xy = self.group["contour_xy"][int(offsets[0]) : int(offsets[-1])]
        return (offsets - offsets[0]).astype(np.int64), xy

    def iter_ranges(self, rows: int | None = None) -> Iterator[tuple[int, int]]:
        """(start, stop) spans aligned to the store's chunks, for streaming every cell."""
        step = rows or self.chunk_cells
        for start in range(0, self.n_cells, step):
            yield start, min(start + step, self.n_cells)

    # ------------------------------------------------------------------ annotating
    def create_column(
        self, name: str, dtype: Any, trailing: tuple[int, ...] = (), fill_value: Any = 0
    ) -> zarr.Array:
        """A new (or replaced) per-cell array with the store's chunking, to fill chunk by chunk."""
        if name in ROW_ARRAYS or name in ("contour_offsets", "contour_xy"):
            raise WsiCcrlError(f"{name!r} is written by segmentation and cannot be replaced")
        if name in self.group:
            del self.group[name]
        return self.group.create_array(
            name,
            shape=(self.n_cells, *trailing),
            chunks=(self.chunk_cells, *trailing),
            dtype=dtype,
            compressors=_COMPRESSOR,
            fill_value=fill_value,
        )

    def write_column(self, name: str, values: np.ndarray) -> None:
        """Write a whole per-cell column (small columns: cluster ids, classes)."""
        values = np.asarray(values)
        if values.shape[0] != self.n_cells:
            raise WsiCcrlError(f"{name}: {values.shape[0]} values for {self.n_cells} cells")
        arr = self.create_column(name, values.dtype, values.shape[1:])
        arr[:] = values

    def update_attrs(self, **values: Any) -> None:
        self.group.attrs.update(values)


class CellStoreWriter:
    """Append cells to ``<name>.zarr.partial``; resume it after a crash; rename when complete.

    Args:
        path: the final store path (``OUT/<stem>.zarr``).
        crop_size: side of the square crops, pixels.
        attrs: metadata recorded in the store (slide, segmenter, crop rule, tile plan, ...).
        chunk_cells: rows per chunk; rows are flushed a chunk at a time.
        overwrite: discard an existing store or partial and start again.
        lock: the store's lock, already held by the caller; by default the writer takes it (and
            raises ``StoreBusy`` when another process holds it) and lets go in ``finalize``.
    """

    def __init__(
        self,
        path: str | Path,
        crop_size: int,
        attrs: dict[str, Any],
        chunk_cells: int = SegmentConfig.chunk_cells,
        overwrite: bool = False,
        lock: StoreLock | None = None,
    ):
        self.path = final_path(path)
        self.partial = partial_path(path)
        if lock is None:
            lock = StoreLock(self.path).acquire()
            # a writer dropped without finalize (an error, a test's "crash") lets go as well
            self._unlock = weakref.finalize(self, lock.release)
        else:
            self._unlock = None
        self.lock = lock
        self.crop_size = crop_size
        self.chunk_cells = chunk_cells
        self._buffer: list[CellBatch] = []
        self._buffered_rows = 0
        self._pending_tiles = 0
        if overwrite:
            for p in (self.path, self.partial):
                if p.exists():
                    shutil.rmtree(p)
        if self.partial.exists() and self._resumable(attrs):
            self.group = zarr.open_group(str(self.partial), mode="r+")
            self._truncate_to_durable()
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.group = self._create(attrs)

    # ------------------------------------------------------------------ state
    @property
    def tiles_done(self) -> int:
        """Tiles of the plan whose cells are all durable (resume starts after them)."""
        return int(self.group.attrs["progress"]["tiles_done"]) + self._pending_tiles

    @property
    def n_cells(self) -> int:
        return int(self.group.attrs["progress"]["n_cells"]) + self._buffered_rows

    @property
    def durable_tiles(self) -> int:
        return int(self.group.attrs["progress"]["tiles_done"])

    # ------------------------------------------------------------------ writing
    def add(self, batch: CellBatch, tiles: int = 1) -> None:
        """Buffer one batch (the cells of ``tiles`` finished tiles); flush full chunks."""
        if len(batch):
            if batch.crops.shape[1:] != (self.crop_size, self.crop_size, 3):
                raise ValueError(
                    f"crops of shape {batch.crops.shape[1:]} in a {self.crop_size} px store"
                )
            self._buffer.append(batch)
            self._buffered_rows += len(batch)
        self._pending_tiles += tiles
        if self._buffered_rows >= self.chunk_cells:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows, then record them (and their tiles) as durable."""
        progress = dict(self.group.attrs["progress"])
        if self._buffer:
            batch = CellBatch.concat(self._buffer)
            n0, m0 = progress["n_cells"], progress["n_points"]
            n1, m1 = n0 + len(batch), m0 + int(batch.contour_offsets[-1])
            for name in ROW_ARRAYS:
                arr = self.group[name]
                arr.resize((n1, *arr.shape[1:]))
                arr[n0:n1] = getattr(batch, name)
            for name, values in batch.extra.items():
                if name not in self.group:
                    self.group.create_array(
                        name,
                        shape=(n0, *values.shape[1:]),
                        chunks=(self.chunk_cells, *values.shape[1:]),
                        dtype=values.dtype,
                        compressors=_COMPRESSOR,
                    )
                arr = self.group[name]
                arr.resize((n1, *arr.shape[1:]))
                arr[n0:n1] = values
            offsets = self.group["contour_offsets"]
            offsets.resize((n1 + 1,))
            offsets[n0 + 1 : n1 + 1] = m0 + batch.contour_offsets[1:]
            xy = self.group["contour_xy"]
            xy.resize((m1, 2))
            xy[m0:m1] = batch.contour_xy
            progress.update(n_cells=n1, n_points=m1)
        progress["tiles_done"] = progress["tiles_done"] + self._pending_tiles
        self.group.attrs["progress"] = progress  # the commit point
        self._buffer, self._buffered_rows, self._pending_tiles = [], 0, 0

    def finalize(self, **attrs: Any) -> CellStore:
        """Flush, mark complete and rename the partial to its final name."""
        self.flush()
        self.group.attrs.update(attrs)
        self.group.attrs["complete"] = True
        self.group.attrs["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.partial.rename(self.path)
        self.close()
        return CellStore.open(self.path)

    def close(self) -> None:
        """Let go of the store's lock (if this writer took it); finalize does it too."""
        if self._unlock is not None:
            self._unlock()

    # ------------------------------------------------------------------ internals
    def _resumable(self, attrs: dict[str, Any]) -> bool:
        """A partial is resumed only if it was made with the same settings."""
        try:
            old = dict(zarr.open_group(str(self.partial), mode="r").attrs)
        except Exception:
            return False
        keys = ("schema_version", "slide", "segmenter", "crop", "tiles", "contour")
        return "progress" in old and all(
            old.get(k) == _jsonable(attrs.get(k)) for k in keys if k in attrs
        )

    def _create(self, attrs: dict[str, Any]) -> zarr.Group:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(self.partial), mode="w")
        s = self.crop_size
        shapes = {
            "crops": ((s, s, 3), np.uint8),
            "centroid": ((2,), np.float32),
            "bbox": ((4,), np.int32),
            "area": ((), np.float32),
            "seg_type": ((), np.int16),
            "seg_prob": ((), np.float32),
        }
        for name, (trailing, dtype) in shapes.items():
            group.create_array(
                name,
                shape=(0, *trailing),
                chunks=(self.chunk_cells, *trailing),
                dtype=dtype,
                compressors=_COMPRESSOR,
            )
        offsets = group.create_array(
            "contour_offsets",
            shape=(1,),
            chunks=(self.chunk_cells * 4,),
            dtype=np.int64,
            compressors=_COMPRESSOR,
        )
        offsets[:] = 0
        group.create_array(
            "contour_xy",
            shape=(0, 2),
            chunks=(self.chunk_cells * 64, 2),
            dtype=np.float32,
            compressors=_COMPRESSOR,
        )
        group.attrs.update(_jsonable(attrs))
        group.attrs.update(
            schema_version=SCHEMA_VERSION,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            complete=False,
            progress={"tiles_done": 0, "n_cells": 0, "n_points": 0},
        )
        return group

    def _truncate_to_durable(self) -> None:
        """Drop rows written after the last commit (a crash mid-flush)."""
        progress = self.group.attrs["progress"]
        n, m = progress["n_cells"], progress["n_points"]
        for name in self.group.array_keys():
            arr = self.group[name]
            if name == "contour_offsets":
                arr.resize((n + 1,))
            elif name == "contour_xy":
                arr.resize((m, 2))
            elif arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))


def _jsonable(value: Any) -> Any:
    """Attrs as JSON round-trips them (tuples become lists), so they compare equal on resume."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def drop_empty(stores: list[CellStore]) -> list[CellStore]:
    """The stores that hold cells; one warning line per empty one (a blank slide must not stop a
    cohort), and only one error line when none is left."""
    kept = [s for s in stores if s.n_cells > 0]
    if stores and not kept:
        names = ", ".join(s.path.name for s in stores[:3]) + (", ..." if len(stores) > 3 else "")
        raise WsiCcrlError(
            f"all {len(stores)} cell store(s) are empty ({names}): nothing was segmented in them"
        )
    for s in stores:
        if s.n_cells == 0:
            log.warning("%s has no cells (nothing was segmented); skipping it", s.path)
    return kept


def find_stores(paths: list[str | Path]) -> list[Path]:
    """Expand folders into the finished ``*.zarr`` stores they contain, in sorted order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (
            p.is_dir()
            and not p.name.endswith((".zarr", PARTIAL_SUFFIX))
            and not (p / "zarr.json").exists()
        ):
            found.extend(sorted(q for q in p.glob("*.zarr") if q.is_dir()))
        else:
            found.append(p)
    if not found:
        raise WsiCcrlError(f"no cell stores (*.zarr) found in: {', '.join(map(str, paths))}")
    return found
