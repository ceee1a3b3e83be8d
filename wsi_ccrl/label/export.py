"""Exports by name, and the per-slide ones written in one streamed pass: GeoJSON that QuPath
imports, and a CSV.

A format is one class with ``@register_export(name)``: a ``SlideFormat`` renders chunks of a
store's rows as bytes (header, chunks, footer), so every per-slide format shares one pass; a
``RunFormat`` writes one file of every cell of the run (``label.h5ad``). ``label.export`` and
``--export`` accept exactly the registered names.

The GeoJSON follows QuPath's reader (qupath-core ``PathObjectTypeAdapters``, ``GsonTools``,
``ROITypeAdapters``; 0.4.4, 0.5.1, 0.6.0): a FeatureCollection of Features with a UUID ``id``
(QuPath's object ID), a Polygon or MultiPolygon in level-0 pixels of QuPath's frame (pixel
(i, j) covers [j, j + 1) x [i, i + 1)) on its 0.01 px grid, and ``properties`` =
``{"objectType": "detection", "name"?, "classification": {"name", "color"}, "measurements"}``.
Measurements are numbers only; a missing value (NaN) is left out, never written as 0. The area is
the exported polygon's own, named ``Nucleus: Area µm^2`` so that it neither clashes with the
``Area µm^2`` QuPath's "Add shape features" writes on detections nor disagrees with it. The file is
ASCII (names escaped), which QuPath reads whatever its platform's charset.

The CSV has one row per cell, keyed by the same object ID as QuPath's measurement export
("Object ID"), with the polygon's centroid and area, so the two tables join.

The store is read in large spans (one thread: zarr's cost is per call); chunks of 4,096 cells are
shaped (``overlay``) and formatted (``textrows``) as whole arrays on two worker
threads (NumPy, shapely and the compiled loops release the GIL) and written, in order, by a third
(which also gzips), under a temporary name renamed when complete: memory stays flat whatever the
slide's size, and a crash leaves no half-written file under the final name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.errors import ConfigError
from wsi_ccrl.io import labelset
from wsi_ccrl.io.contours import legacy_shift
from wsi_ccrl.label.overlay import CellShapes, cell_shapes
from wsi_ccrl.label.palette import ClusterStyles
from wsi_ccrl.label.textrows import Rows, point_rows
from wsi_ccrl.log import get_logger
from wsi_ccrl.registry import Registry
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)

EXPORT_CHUNK_CELLS = 4096  # cells shaped and formatted at once: arrays stay in cache
EXPORT_READ_CELLS = 32768  # cells read from the store at once
GZIP_ABOVE_CELLS = 100_000  # default: .geojson.gz above this (about 60 MB of GeoJSON)
AREA_DECIMALS, DISTANCE_DECIMALS, PROB_DECIMALS = 2, 4, 4
EXPORT_THREADS = 2  # chunks shaped and formatted at once (shapely and NumPy release the GIL)


# --------------------------------------------------------------------------- the registry
class SlideFormat(ABC):
    """One file per slide, streamed: ``header``, ``chunk`` for each chunk of rows in order,
    ``footer``; built once per store."""

    suffix = ""
    compressible = False  # written as SUFFIX.gz when the run compresses

    def __init__(self, styles: ClusterStyles, store: Any):
        self.styles, self.mpp, self.types = styles, store.mpp, type_names(store)

    def header(self) -> bytes:
        return b""

    @abstractmethod
    def chunk(self, c: Chunk, first: bool) -> bytes:
        """The rows of one chunk, as the file's bytes."""

    def footer(self) -> bytes:
        return b""


class RunFormat(ABC):
    """One file of every cell of a label run (all its stores)."""

    @abstractmethod
    def write(self, stores: list, stems: list[str], styles: ClusterStyles, path: Path) -> Path:
        """Write the file of every cell of ``stores`` to ``path``; return it."""

    @staticmethod
    @abstractmethod
    def file_name(suffix: str) -> str:
        """The file's name in the run's folder (``suffix``: a shard's, or empty)."""


# name -> SlideFormat / RunFormat class; AnnData registers in its module, imported on use
EXPORT_FORMATS = Registry(
    {"geojson": __name__, "csv": __name__, "anndata": "wsi_ccrl.label.h5ad"},
    "label: unknown export format {name!r} (valid: {known})",
)


register_export = EXPORT_FORMATS.register  # ``@register_export("csv")`` on a format class
export_names = EXPORT_FORMATS.names


def export_format(name: str) -> type:
    """The class of format ``name``; one line listing the valid ones when unknown."""
    return EXPORT_FORMATS.entry(name)


def check_exports(names: tuple[str, ...]) -> None:
    for name in names:
        export_format(name)


# --------------------------------------------------------------------------- ids
def uuid_chars(key: str, start: int, stop: int) -> np.ndarray:
    """(n, 36) ASCII bytes of deterministic version-4-format UUIDs for cells ``start:stop``.

    A splitmix64 hash of (slide, cell index), vectorised: reruns give identical ids, and a cell's
    id does not depend on how the export is chunked.
    """
    seed = np.uint64(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    idx = np.arange(start, stop, dtype=np.uint64)
    words = np.stack([_splitmix64(seed + 2 * idx), _splitmix64(seed + 2 * idx + np.uint64(1))], 1)
    raw = words.astype(">u8").view(np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    nibbles = np.stack([raw >> 4, raw & 0x0F], axis=2).reshape(-1, 32)
    hexed = hexdigits[nibbles]
    out = np.full((hexed.shape[0], 36), ord("-"), np.uint8)
    for a, b, o in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        out[:, o : o + b - a] = hexed[:, a:b]
    return out


def cell_uuids(key: str, start: int, stop: int) -> np.ndarray:
    """The UUIDs of ``uuid_chars`` as an array of str."""
    return uuid_chars(key, start, stop).view("S36").ravel().astype(str)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# --------------------------------------------------------------------------- what is written
def measurement_names(mpp: float | None) -> tuple[str, str, str]:
    """QuPath measurement names: area (µm² when the slide's µm/px is known), distance, prob."""
    area = "Nucleus: Area \u00b5m^2" if mpp else "Nucleus: Area px^2"
    return (area, "CCRL: Cluster distance", "Segmenter: Probability")


CSV_COLUMNS = (
    "Object ID", "cell", "centroid_x", "centroid_y", "{area}", "cluster", "cluster_name",
    "cluster_distance", "seg_type", "seg_type_name", "seg_prob",
)  # fmt: skip


def csv_header(mpp: float | None) -> str:
    area = "area_um2" if mpp else "area_px2"
    return ",".join(CSV_COLUMNS).replace("{area}", area) + "\n"


def type_names(store) -> dict[int, str]:
    """The segmenter's class name of each ``seg_type`` code (HoVer-Net's ``nuc_type_dict``)."""
    seg = store.attrs.get("segmenter")
    types = seg.get("types") if isinstance(seg, dict) else None
    return {int(k): str(v) for k, v in (types or {}).items()}


@dataclass
class Chunk:
    """One chunk of cells as read from the store; ``shapes`` are added before formatting."""

    start: int
    offsets: np.ndarray  # (n + 1,) stored outlines, CSR
    xy: np.ndarray  # (m, 2)
    bbox: np.ndarray  # (n, 4)
    ids: np.ndarray  # (n, 36) uint8
    cluster: np.ndarray  # (n,) int64
    distance: np.ndarray  # (n,) float64
    seg_type: np.ndarray  # (n,) int64
    seg_prob: np.ndarray  # (n,) float64
    area_scale: float  # px² -> written area unit
    shapes: CellShapes | None = None


def read_chunks(store, start: int, stop: int, key: str, size: int) -> list[Chunk]:
    """Cells ``start:stop`` of a labelled store, read at once (zarr is read from one thread,
    in large spans: its cost is per call), as chunks of ``size`` cells."""
    offsets, xy = store.contours(start, stop)
    mpp = store.mpp
    columns = {
        "bbox": store["bbox"][start:stop],
        "ids": uuid_chars(key, start, stop),
        "cluster": np.asarray(store["cluster"][start:stop]).astype(np.int64),
        "distance": np.asarray(store["cluster_distance"][start:stop], np.float64),
        "seg_type": np.asarray(store["seg_type"][start:stop]).astype(np.int64),
        "seg_prob": np.asarray(store["seg_prob"][start:stop], np.float64),
    }
    out = []
    for a in range(0, stop - start, size):
        b = min(a + size, stop - start)
        out.append(
            Chunk(
                start=start + a,
                offsets=offsets[a : b + 1] - offsets[a],
                xy=xy[offsets[a] : offsets[b]],
                area_scale=mpp * mpp if mpp else 1.0,
                **{k: v[a:b] for k, v in columns.items()},
            )
        )
    return out


def outline_pitch(attrs: dict[str, Any]) -> float:
    """Level-0 px per pixel of the segmenter's outline (tile plan's µm/px over the slide's)."""
    tiles, slide = attrs.get("tiles"), attrs.get("slide")
    target = tiles.get("target_mpp") if isinstance(tiles, dict) else None
    mpp = slide.get("mpp") if isinstance(slide, dict) else None
    return float(target) / float(mpp) if target and mpp else 1.0


# --------------------------------------------------------------------------- formatting
@register_export("geojson")
class GeoJsonFormat(SlideFormat):
    """Features of a store's chunks as bytes; classification and names rendered once."""

    suffix = ".geojson"
    compressible = True

    def __init__(self, styles: ClusterStyles, store: Any):
        super().__init__(styles, store)
        types = self.types
        area, distance, prob = (json.dumps(m) for m in measurement_names(self.mpp))
        self.classes = [
            ',"classification":{"name":'
            + json.dumps(name)
            + ',"color":[{},{},{}]}},"measurements":{{'.format(*colour)
            + area
            + ":"
            for name, colour in styles.styles()
        ]
        self.distance_key = f",{distance}:"
        self.prob_key = f",{prob}:"
        codes = sorted(types)
        self.type_codes = np.array(codes, np.int64)
        self.type_table = [f',"name":{json.dumps(types[c])}' for c in codes] + [""]

    def chunk(self, c: Chunk, first: bool) -> bytes:
        s = c.shapes
        n = s.n_cells
        rows = Rows(n)
        lead = np.ones(n, np.int64)
        if first:
            lead[0] = 0
        rows.pick(['\n{"type":"Feature","id":"', ',\n{"type":"Feature","id":"'], lead)
        rows.items(np.ones(n, np.int64), [c.ids])
        multi = np.diff(s.cell_offsets) > 1
        rows.pick(
            ['","geometry":{"type":"Polygon","coordinates":',
             '","geometry":{"type":"MultiPolygon","coordinates":'],
            multi.astype(np.int64),
        )  # fmt: skip
        opens, closes, sep, per_cell = _bracket_counts(s, multi)
        rows.packed(per_cell, *point_rows(s.xy[:, 0], s.xy[:, 1], opens, closes, sep))
        rows.literal('},"properties":{"objectType":"detection"')
        if self.types:
            rows.pick(self.type_table, _table_index(self.type_codes, c.seg_type))
        rows.pick(self.classes, c.cluster)
        rows.number(s.area * c.area_scale, AREA_DECIMALS)
        rows.number(
            c.distance, DISTANCE_DECIMALS, self.distance_key, present=np.isfinite(c.distance)
        )
        rows.number(c.seg_prob, PROB_DECIMALS, self.prob_key, present=np.isfinite(c.seg_prob))
        rows.literal("}}}")
        return rows.to_bytes()

    def header(self) -> bytes:
        return b'{"type":"FeatureCollection","features":['

    def footer(self) -> bytes:
        return b"\n]}\n"


def _table_index(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each value in a table ordered like sorted ``codes``; unknown values: the last row
    (empty, so a type the segmenter did not name is left out)."""
    pos = np.searchsorted(codes, values)
    known = (pos < codes.size) & (codes[np.minimum(pos, codes.size - 1)] == values)
    return np.where(known, pos, codes.size)


def _bracket_counts(s: CellShapes, multi: np.ndarray):
    """Per point: brackets to open before it and close after it, whether a comma follows it; and
    points per cell. Polygon: ``[[[x,y],...],[hole]]``; MultiPolygon: ``[[[[x,y],...]],...]``."""
    ring_len = np.diff(s.ring_offsets)
    poly_rings = np.diff(s.polygon_offsets)
    cell_polys = np.diff(s.cell_offsets)
    poly_cell = np.repeat(np.arange(cell_polys.size), cell_polys)
    ring_poly = np.repeat(np.arange(poly_rings.size), poly_rings)
    ring_cell = poly_cell[ring_poly]
    ring_ids = np.arange(ring_len.size)
    # ring r opens its polygon (and maybe its cell) / closes them
    ring_opens_poly = ring_ids == s.polygon_offsets[:-1][ring_poly]
    ring_closes_poly = ring_ids == s.polygon_offsets[1:][ring_poly] - 1
    poly_ids = np.arange(poly_rings.size)
    poly_opens_cell = poly_ids == s.cell_offsets[:-1][poly_cell]
    poly_closes_cell = poly_ids == s.cell_offsets[1:][poly_cell] - 1
    ring_multi = multi[ring_cell].astype(np.int64)  # counts: bool + bool would be an "or"
    ring_open = 1 + ring_opens_poly * (ring_multi + poly_opens_cell[ring_poly])
    ring_close = 1 + ring_closes_poly * (ring_multi + poly_closes_cell[ring_poly])
    ring_ends_cell = ring_closes_poly & poly_closes_cell[ring_poly]
    opens = np.zeros(s.xy.shape[0], np.int64)
    closes = np.zeros(s.xy.shape[0], np.int64)
    opens[s.ring_offsets[:-1]] = ring_open
    closes[s.ring_offsets[1:] - 1] = ring_close
    comma = np.ones(s.xy.shape[0], np.int64)
    comma[s.ring_offsets[1:][ring_ends_cell] - 1] = 0
    per_cell = np.bincount(ring_cell, ring_len, minlength=multi.size).astype(np.int64)
    return opens, closes, comma, per_cell


@register_export("csv")
class CsvFormat(SlideFormat):
    """CSV rows of a store's chunks as bytes."""

    suffix = ".csv"

    def __init__(self, styles: ClusterStyles, store: Any):
        super().__init__(styles, store)
        types = self.types
        self.names = [_csv_field(n) for n in styles.names]
        codes = sorted(types)
        self.type_codes = np.array(codes, np.int64)
        self.type_table = [_csv_field(types[c]) for c in codes] + [""]

    def header(self) -> bytes:
        return csv_header(self.mpp).encode()

    def chunk(self, c: Chunk, first: bool = False) -> bytes:
        s = c.shapes
        n = s.n_cells
        rows = Rows(n)
        rows.items(np.ones(n, np.int64), [c.ids])
        rows.number(np.arange(c.start, c.start + n), 0, ",")
        rows.number(s.centroid[:, 0], 2, ",")
        rows.number(s.centroid[:, 1], 2, ",")
        rows.number(s.area * c.area_scale, AREA_DECIMALS, ",")
        rows.number(c.cluster, 0, ",")
        rows.literal(",")
        rows.pick(self.names, c.cluster)
        rows.literal(",")
        rows.number(c.distance, 6, present=np.isfinite(c.distance))
        rows.number(c.seg_type, 0, ",")
        rows.literal(",")
        if self.type_codes.size:
            rows.pick(self.type_table, _table_index(self.type_codes, c.seg_type))
        rows.literal(",")
        rows.number(c.seg_prob, PROB_DECIMALS, present=np.isfinite(c.seg_prob))
        rows.literal("\n")
        return rows.to_bytes()


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# --------------------------------------------------------------------------- writing
@contextmanager
def atomic_binary(path: Path, compress: bool = False):
    """A binary stream to ``path`` written under a temporary name and renamed on success."""
    with atomic_write(path) as tmp, open(tmp, "wb") as raw:
        if not compress:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
            yield stream


def default_compress(n_cells: int) -> bool:
    """Gzip the GeoJSON of slides with more than ``GZIP_ABOVE_CELLS`` cells."""
    return n_cells > GZIP_ABOVE_CELLS


def export_store(
    store,
    styles: ClusterStyles,
    files: dict[str, str | Path],
    compress: bool = False,
    simplify: float = LabelConfig.simplify,
    chunk_cells: int = EXPORT_CHUNK_CELLS,
) -> dict[str, int]:
    """Stream every cell of a labelled ``store`` to per-slide files, all in one pass.

    Args:
        store: a ``CellStore`` with ``cluster`` and ``cluster_distance``.
        styles: cluster names and colours.
        files: format name (``geojson``, ``csv``, any ``SlideFormat``) -> output path.
        compress: gzip the compressible ones (QuPath >= 0.4 imports ``.geojson.gz``).
        simplify: outline simplification tolerance, outline pixels (``wsi_ccrl.label.overlay``).

    Returns:
        counts: ``cells``, ``repaired`` outlines, ``vertices`` written, ``bytes`` of the first
        format's text before compression.
    """
    labelset.require_current(store)  # one line for a store not labelled, or its labels stale
    key = str(store.attrs.get("slide", {}).get("path") or store.path.name)
    formats = [export_format(name)(styles, store) for name in files]
    if not all(isinstance(f, SlideFormat) for f in formats):
        raise ConfigError(f"export_store writes per-slide formats, not {list(files)}")
    shift = legacy_shift(store.attrs)
    if shift:
        log.warning(
            "%s was written before outlines followed the pixel edges: its coordinates are moved "
            "by +%.1f px (integer outlines re-traced exactly); segment it again for exact ones",
            store.path.name,
            shift,
        )
    pitch = outline_pitch(store.attrs)

    def render(chunk: Chunk) -> tuple[Chunk, list[bytes]]:
        chunk.shapes = cell_shapes(chunk.offsets, chunk.xy, chunk.bbox, simplify, pitch, shift)
        return chunk, [f.chunk(chunk, first=chunk.start == 0) for f in formats]

    counts = {"cells": 0, "repaired": 0, "vertices": 0, "bytes": 0}
    workers = max(1, min(EXPORT_THREADS, os.cpu_count() or 1))
    packs = [compress and f.compressible for f in formats]
    with _outputs(list(files.values()), packs) as writers, ThreadPoolExecutor(workers) as pool:
        for write, f in zip(writers, formats, strict=True):
            write(f.header())
        jobs: deque = deque()

        def done() -> None:
            chunk, texts = jobs.popleft().result()
            counts["cells"] += chunk.shapes.n_cells
            counts["repaired"] += chunk.shapes.repaired
            counts["vertices"] += chunk.shapes.vertices()
            counts["bytes"] += len(texts[0]) if texts else 0
            for write, text in zip(writers, texts, strict=True):
                write(text)

        for start, stop in store.iter_ranges(EXPORT_READ_CELLS):  # read here, shape and format
            for chunk in read_chunks(store, start, stop, key, chunk_cells):  # there
                jobs.append(pool.submit(render, chunk))
                while len(jobs) > 2 * workers:  # in order, a few in flight: memory stays flat
                    done()
        while jobs:
            done()
        for write, f in zip(writers, formats, strict=True):
            write(f.footer())
    if counts["repaired"]:
        log.info("%s: %d invalid outlines repaired", store.path.name, counts["repaired"])
    return counts


@contextmanager
def _outputs(paths: list, packs: list[bool]):
    """A writer per file, fed by one background thread (in order, bounded)."""
    with ThreadPoolExecutor(max_workers=1) as pool, ExitStack() as files:
        pending: list = []

        def writer(stream):
            def write(data: bytes) -> None:
                if data:
                    pending.append(pool.submit(stream.write, data))
                while len(pending) > 4:  # bounded: memory stays flat
                    pending.pop(0).result()

            return write

        streams = [
            files.enter_context(atomic_binary(Path(p), z))
            for p, z in zip(paths, packs, strict=True)
        ]
        try:
            yield [writer(s) for s in streams]
        finally:
            for f in pending:
                f.result()
