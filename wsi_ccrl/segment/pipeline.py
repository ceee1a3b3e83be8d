"""One slide in, one cell store out: tile the tissue, segment, keep each nucleus once, crop, append.

One file of ~350 lines on purpose: the per-slide stream (read ahead, segment, own, crop, append)
shares the slide, its tile plan and the store writer; many slides are ``cohort``'s.

Per slide: open it (resolution checked first), mask the tissue on a thumbnail, plan tiles at the
segmenter's resolution, then stream them through three threads: a batch is read ahead, the
network (``Segmenter.infer``) runs on the next while a worker finishes the one before
(``Segmenter.resolve``: post-processing; then per tile: keep the nuclei whose centroid lies in its
core, map them to level-0 pixels, cut their crops from the tile in memory, reading around the
nucleus from the slide when its window passes the tile's margin, mirrored past the slide's edge,
and append one ``CellBatch``). Order is the plan's, so the store is the same. Nothing grows
with the slide: the writer flushes a chunk at a time and records the tiles that are durable, so a
re-run resumes after the last flushed tile and ends with the same store as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wsi_ccrl.config import SegmentConfig, to_dict
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.contours import SEGMENT_CONTOURS, edge_contours
from wsi_ccrl.io.crops import CropSpec, extract_crops, inside
from wsi_ccrl.io.slide import Slide
from wsi_ccrl.io.store import (
    CellBatch,
    CellStore,
    CellStoreWriter,
)
from wsi_ccrl.io.store_lock import StoreLock
from wsi_ccrl.io.tiles import Tile, TilePlan, plan_tiles, tissue_mask
from wsi_ccrl.log import get_logger, progress_enabled
from wsi_ccrl.runtime import release_freed_heap
from wsi_ccrl.segment.base import Nuclei, Segmenter
from wsi_ccrl.segment.stages import STAGES

log = get_logger(__name__)
RELEASE_EVERY = 4  # batches between handing freed heap back (peak RSS flat with slide size)


# --------------------------------------------------------------------------- one slide
def store_path_for(slide_path: str | Path, out: str | Path) -> Path:
    """``out`` itself when it names a ``.zarr``, else ``out/<slide stem>.zarr``."""
    out = Path(out)
    if out.name.endswith(".zarr"):
        return out
    return out / f"{Path(slide_path).stem}.zarr"


def segment_slide(
    path: str | Path,
    out: str | Path,
    config: SegmentConfig | None = None,
    segmenter: Segmenter | None = None,
) -> CellStore:
    """Segment every nucleus of one slide into a cell store (resuming a partial one).

    Args:
        path: the slide file.
        out: an output folder (the store is ``out/<stem>.zarr``) or a ``.zarr`` path.
        config: segmentation settings; defaults to ``SegmentConfig()``.
        segmenter: an already built segmenter (reused across slides); built from ``config`` if None.

    Returns:
        The finished store, opened read-only.
    """
    from wsi_ccrl.segment import build_segmenter

    cfg = config or SegmentConfig()
    store_path = store_path_for(path, out)
    ensure_writable(store_path.parent)
    slide = Slide.open(path, mpp=cfg.mpp)
    try:
        if store_path.exists() and not cfg.overwrite:
            log.info(
                "%s: already segmented (%s); skipping (--overwrite redoes it)", path, store_path
            )
            return CellStore.open(store_path)
        with StoreLock(store_path) as lock:  # StoreBusy: another run is writing this store
            if store_path.exists() and not cfg.overwrite:  # that run finished it meanwhile
                return CellStore.open(store_path)
            seg = segmenter or build_segmenter(cfg)
            return _segment_open_slide(slide, store_path, cfg, seg, lock)
    finally:
        slide.close()


def _segment_open_slide(
    slide: Slide, store_path: Path, cfg: SegmentConfig, seg: Segmenter, lock: StoreLock
) -> CellStore:
    t0 = time.perf_counter()
    STAGES.reset()
    with STAGES("tissue mask"):
        tissue = tissue_thumbnail(slide, cfg)  # read once: the plan and the stain statistics
    with STAGES("tile plan"):
        plan = make_plan(slide, cfg, seg.mpp, tissue)
    with STAGES("stain fit"):
        seg.fit_slide(stain_samples(slide, tissue, plan))
    attrs = {
        "slide": slide.info.attrs(),
        "segmenter": seg.describe(),
        "crop": CropSpec.of(cfg).attrs(window_units=f"pixels at {seg.mpp} mpp"),
        "tiles": plan.attrs(),
        "contour": SEGMENT_CONTOURS,
        "roi": list(plan.roi) if cfg.roi is not None else None,
        "config": to_dict(cfg),
    }
    name = Path(slide.info.path).name
    writer = CellStoreWriter(
        store_path,
        cfg.crop_size,
        attrs,
        chunk_cells=cfg.chunk_cells,
        overwrite=cfg.overwrite,
        lock=lock,
    )
    start = writer.tiles_done
    if start:
        log.info(
            "%s: resuming after %d of %d tiles (%d cells)", name, start, len(plan), writer.n_cells
        )
    if len(plan) == 0:
        log.warning(
            "%s: no tissue found%s; the store has 0 cells", name, " in the ROI" if cfg.roi else ""
        )
    n_before = writer.n_cells
    bar = tqdm(
        total=len(plan),
        initial=start,
        desc=name,
        unit="tile",
        disable=not progress_enabled(),
        leave=False,
    )

    def read_box(box: tuple[int, int, int, int]) -> np.ndarray:
        return _read_box(slide, plan, box)[0]

    batches_done = 0

    def finish(batch: list[Tile], images: list[tuple], views: list, inferred) -> None:
        with STAGES("resolve"):
            nuclei = seg.resolve(views, inferred)
        for tile, (image, mapping), nuc in zip(batch, images, nuclei, strict=True):
            with STAGES("cells"):
                cells = tile_cells(tile, image, mapping, nuc, plan, cfg, read_box)
            with STAGES("store"):
                writer.add(cells, tiles=1)
            bar.update(1)
        nonlocal batches_done
        batches_done += 1
        if batches_done % RELEASE_EVERY == 0:
            with STAGES("release freed heap"):
                release_freed_heap()

    with bar:
        _stream(_read_ahead(slide, plan, start, cfg.batch_size), plan.crop_margin, seg, finish)
    with STAGES("store"):
        store = writer.finalize()
    seconds = time.perf_counter() - t0
    log.debug("%s: seconds per stage: %s", name, STAGES.summary())
    new = store.n_cells - n_before
    log.info(
        "%s: %d cells, %d tissue tiles, %.1f s, %.0f cells/s -> %s",
        name,
        store.n_cells,
        len(plan),
        seconds,
        new / max(seconds, 1e-9),
        store.path,
    )
    return store


def tissue_thumbnail(slide: Slide, cfg: SegmentConfig) -> tuple[np.ndarray, float]:
    """(tissue mask of the slide's thumbnail at ``cfg.tissue_mpp``, its downsample)."""
    thumb, downsample = slide.thumbnail(max(cfg.tissue_mpp, slide.mpp))
    return tissue_mask(thumb), downsample


def make_plan(
    slide: Slide,
    cfg: SegmentConfig,
    target_mpp: float,
    tissue: tuple[np.ndarray, float] | None = None,
) -> TilePlan:
    """The tile plan over the tissue (of the ROI); ``tissue`` from ``tissue_thumbnail``."""
    mask, downsample = tissue or tissue_thumbnail(slide, cfg)
    crop_margin = max(
        0,
        math.ceil(max(cfg.window_scale * cfg.tile_overlap, cfg.min_window) / 2) - cfg.tile_overlap,
    )
    return plan_tiles(
        slide.dimensions,
        slide.mpp,
        target_mpp,
        cfg.tile_size,
        cfg.tile_overlap,
        crop_margin=crop_margin,
        roi=cfg.roi,
        mask=mask,
        mask_downsample=downsample,
        min_tissue_fraction=cfg.min_tissue_fraction,
    )


STAIN_SAMPLES = 16  # regions of 256² target pixels: enough tissue for stable statistics


def stain_samples(
    slide: Slide,
    tissue: tuple[np.ndarray, float],
    plan: TilePlan,
    n: int = STAIN_SAMPLES,
    size: int = 256,
) -> list[np.ndarray]:
    """Regions of the slide's tissue at the target resolution, to fit per-slide statistics on.

    Centred on tissue pixels of the thumbnail's mask, evenly spaced in raster order: they depend
    on the slide alone (not on tile size, batch or ROI), so every tile is normalised alike.
    """
    mask, downsample = tissue
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    pick = np.unique(np.linspace(0, rows.size - 1, min(n, rows.size)).round().astype(np.int64))
    width, height = slide.dimensions
    half = size * plan.scale / 2
    samples = []
    for r, c in zip(rows[pick], cols[pick], strict=True):
        x = min(max((c + 0.5) * downsample, half), max(width - half, half))
        y = min(max((r + 0.5) * downsample, half), max(height - half, half))
        samples.append(slide.read_scaled(x - half, y - half, x + half, y + half, size, size)[0])
    return samples


def _read_box(
    slide: Slide, plan: TilePlan, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, tuple]:
    """The box (x0, y0, x1, y1) of target pixels, read at the target resolution."""
    x0, y0, x1, y1 = box
    s = plan.scale
    return slide.read_scaled(x0 * s, y0 * s, x1 * s, y1 * s, x1 - x0, y1 - y0)


def _read_ahead(
    slide: Slide, plan: TilePlan, start: int, batch_size: int
) -> Iterator[tuple[list[Tile], list[tuple[np.ndarray, tuple]]]]:
    """Batches of (tiles, [(image, mapping)]) in plan order from tile ``start`` on, each read in a
    thread while the one before is segmented."""
    tiles = plan.tiles[start:]
    batches = [list(tiles[i : i + batch_size]) for i in range(0, len(tiles), batch_size)]

    def read(batch):
        with STAGES("read"):
            return [_read_box(slide, plan, t.read) for t in batch]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-read") as pool:
        future = pool.submit(read, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            with STAGES("wait for reads"):
                images = future.result()
            future = pool.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
            yield batch, images


def _stream(
    batches: Iterator[tuple[list[Tile], list[tuple[np.ndarray, tuple]]]],
    margin: int,
    seg: Segmenter,
    finish: Callable[[list[Tile], list[tuple], list[np.ndarray], Any], None],
) -> None:
    """``seg.infer`` (the network) on each batch here while a worker runs ``finish`` (resolve,
    cells, store) on the batch before: in plan order, one batch in flight, so memory stays flat
    and the network never waits on post-processing or writes."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-post") as post:
        pending = None
        for batch, images in batches:
            views = [
                img[margin : img.shape[0] - margin, margin : img.shape[1] - margin]
                for img, _ in images
            ]
            with STAGES("infer"):
                inferred = seg.infer(views)
            if pending is not None:
                with STAGES("wait for post-processing"):
                    pending.result()
            pending = post.submit(finish, batch, images, views, inferred)
        if pending is not None:
            with STAGES("wait for post-processing"):
                pending.result()


def tile_cells(
    tile: Tile,
    image: np.ndarray,
    mapping: tuple[float, float, float, float],
    nuclei: Nuclei,
    plan: TilePlan,
    cfg: SegmentConfig,
    read_box: Callable[[tuple[int, int, int, int]], np.ndarray] | None = None,
) -> CellBatch:
    """The cells one tile owns, in level-0 pixels, with their crops.

    Args:
        tile: the tile of the plan.
        image: the tile as read, (H, W, 3) uint8 over ``tile.read``.
        mapping: (ox, oy, sx, sy) from read pixels to level 0 (``Slide.read_scaled``).
        nuclei: the segmenter's nuclei, in the frame of ``tile.seg`` (the image without margin).
        plan: the tile plan (overlap, crop margin, the slide's extent).
        cfg: crop rule.
        read_box: reads a box of target pixels from the slide, for the few crop windows that
            pass the tile's margin or the slide; without it those are mirrored at the tile edge.
    """
    m = plan.crop_margin
    if len(nuclei) == 0:
        return CellBatch.empty(crops=cfg.crop_size)
    # centroids in the read frame (pixel centres), then in global target px (pixel edges)
    cx = nuclei.centroid[:, 0].astype(np.float64) + m
    cy = nuclei.centroid[:, 1].astype(np.float64) + m
    gx, gy = tile.read[0] + cx + 0.5, tile.read[1] + cy + 0.5
    x0, y0, x1, y1 = tile.core
    owned = (gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1)
    if not owned.any():
        return CellBatch.empty(crops=cfg.crop_size)
    nuc = nuclei.select(owned)
    centroid = nuc.centroid.astype(np.float64) + m
    bbox = nuc.bbox.astype(np.float64) + m
    with STAGES("cells: crops"):
        crops = _tile_crops(image, bbox, tile, plan, cfg, read_box)
    ox, oy, sx, sy = mapping
    scale = np.array([sx, sy])
    origin = np.array([ox, oy])
    # level 0 in QuPath's frame: pixel (i, j) covers [j, j + 1) x [i, i + 1), so a pixel centre
    # is at +0.5 and the outline runs along the outer pixel edges, not through their centres
    centroid0 = origin + (centroid + 0.5) * scale
    offsets, edges = edge_contours(nuc.contour_offsets, nuc.contour_xy)
    xy0 = origin + (edges + m + 0.5) * scale
    bbox0 = np.concatenate(
        [np.floor(origin + bbox[:, :2] * scale), np.ceil(origin + bbox[:, 2:] * scale)], axis=1
    )
    return CellBatch(
        crops=crops,
        centroid=centroid0.astype(np.float32),
        bbox=bbox0.astype(np.int32),
        area=(nuc.area.astype(np.float64) * sx * sy).astype(np.float32),
        seg_type=nuc.seg_type.astype(np.int16),
        seg_prob=nuc.seg_prob.astype(np.float32),
        contour_offsets=offsets,
        contour_xy=xy0.astype(np.float32).reshape(-1, 2),
    )


def _tile_crops(
    image: np.ndarray,
    bbox: np.ndarray,
    tile: Tile,
    plan: TilePlan,
    cfg: SegmentConfig,
    read_box: Callable[[tuple[int, int, int, int]], np.ndarray] | None,
) -> np.ndarray:
    """The crop rule on a slide: cut from the tile in memory, or, for the few windows that pass
    the tile or the slide, read around the nucleus from the slide and mirror past its edge."""
    origin = np.tile(np.array(tile.read[:2], np.float64), 2)
    windows = CropSpec.of(cfg).windows(bbox + origin)  # global target px
    local = windows - origin
    if read_box is None:  # no slide at hand: mirror at the tile's edge
        return extract_crops(image, local, cfg.crop_size)
    h, w = image.shape[:2]
    width, height = plan.extent
    in_tile = inside(local, w, h) & inside(windows, width, height)
    crops = np.empty((len(windows), cfg.crop_size, cfg.crop_size, 3), np.uint8)
    crops[in_tile] = extract_crops(image, local[in_tile], cfg.crop_size)
    last = (int(np.floor(width)), int(np.floor(height)))  # whole target pixels of the slide
    for i in np.flatnonzero(~in_tile):  # rare: large nuclei at a core's edge, the slide's edge
        lo = np.clip(np.floor(windows[i, :2]), 0, None).astype(int)
        hi = np.minimum(np.ceil(windows[i, 2:]), last).astype(int)
        region = read_box((int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))
        crops[i] = extract_crops(region, windows[i] - np.tile(lo, 2), cfg.crop_size)[0]
    return crops


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove it is writable, before any long work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".wsi-ccrl-write-test-{time.monotonic_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WsiCcrlError(
            f"cannot write to output folder {folder}: {exc.strerror or exc}"
        ) from None
