"""Pictures to look at rather than read: a per-slide overview and a per-run cluster gallery.

- Overview: the slide's thumbnail with every cell drawn in its cluster's colour, and a legend with
  each cluster's name and count. Cells are drawn as filled outlines when they are large enough at
  thumbnail scale, otherwise as dots (vectorised, any number of cells). A missing slide file gives
  a white background, so the picture can still be made from the store alone.
- Gallery: one row per cluster of ``per_cluster`` random crops, labelled, so clusters can be named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsi_ccrl.label.cluster import read_rows
from wsi_ccrl.label.palette import ClusterStyles
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)

LEGEND_WIDTH = 280
LEGEND_ROW = 22
GALLERY_LABEL_WIDTH = 200
GALLERY_PAD = 4
MAX_OUTLINED_CELLS = 200_000  # above this, dots (one numpy scatter per chunk) however large


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizing
        return ImageFont.load_default()


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (temporary name, then rename)."""
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


# --------------------------------------------------------------------------- overview
def slide_dimensions(store) -> tuple[int, int]:
    """Level-0 (width, height) from the store's attrs, else the extent of its cells."""
    slide = store.attrs.get("slide", {}) or {}
    dims = slide.get("dimensions")
    if dims and len(dims) == 2:
        return int(dims[0]), int(dims[1])
    if store.n_cells:
        bbox = np.asarray(store["bbox"][:])
        return int(bbox[:, 2].max()) + 1, int(bbox[:, 3].max()) + 1
    return 1, 1


def overview_size(dims: tuple[int, int], max_side: int, k: int) -> tuple[tuple[int, int], float]:
    """((width, height) of the picture, thumbnail scale) for a slide of ``dims`` and ``k`` clusters."""
    w, h = dims
    scale = min(1.0, max_side / max(w, h))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    return (tw + LEGEND_WIDTH, max(th, _legend_height(k))), scale


def _legend_height(k: int) -> int:
    return 2 * LEGEND_ROW + k * LEGEND_ROW + 8


def _thumbnail(store, size: tuple[int, int]) -> Image.Image:
    """The slide at ``size``; white when the slide cannot be read."""
    path = (store.attrs.get("slide", {}) or {}).get("path")
    if path and Path(path).is_file():
        try:
            from wsi_ccrl.io.slide import Slide

            with Slide.open(path, mpp=store.mpp or 1.0) as slide:
                # block-wise read at about the thumbnail's resolution (bounded memory)
                thumb, _ = slide.thumbnail(slide.mpp * slide.dimensions[0] / size[0])
            return Image.fromarray(thumb).resize(size, Image.Resampling.BILINEAR)
        except Exception as exc:  # any reader failure: draw on white, say so
            log.warning("cannot read slide %s (%s); overview drawn on white", path, exc)
    elif path:
        log.warning("slide %s not found; overview drawn on white", path)
    return Image.new("RGB", size, "white")


def draw_overview(
    store, clusters: np.ndarray, styles: ClusterStyles, path: str | Path, max_side: int = 2048
) -> Path:
    """Thumbnail with cells coloured by cluster, and a legend; written atomically as PNG.

    Args:
        store: a CellStore.
        clusters: (N,) cluster id of every cell.
        styles: names and colours.
        max_side: longest side of the thumbnail, pixels.
    """
    dims = slide_dimensions(store)
    (width, height), scale = overview_size(dims, max_side, styles.k)
    tw, th = width - LEGEND_WIDTH, round(dims[1] * scale) or 1
    thumb = _thumbnail(store, (tw, th))
    colours = np.array(styles.colours, np.uint8)
    side = 0.0
    if store.n_cells:
        bbox = np.asarray(store["bbox"][: min(store.n_cells, 10_000)], np.float64)
        side = float(np.median(np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])))
    if side * scale >= 4 and store.n_cells <= MAX_OUTLINED_CELLS:
        thumb = _draw_outlines(store, clusters, colours, thumb, scale)
    else:
        thumb = _draw_dots(
            store, clusters, colours, thumb, scale, radius=max(1, round(side * scale / 2))
        )
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(thumb, (0, 0))
    counts = np.bincount(np.asarray(clusters, np.int64), minlength=styles.k)
    _draw_legend(ImageDraw.Draw(canvas), tw, styles, counts)
    return save_png(canvas, path)


def _draw_outlines(store, clusters, colours, thumb, scale) -> Image.Image:
    overlay = Image.new("RGBA", thumb.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for start, stop in store.iter_ranges():
        offsets, xy = store.contours(start, stop)
        xy = xy * scale
        for i in range(stop - start):  # bounded by MAX_OUTLINED_CELLS
            pts = xy[offsets[i] : offsets[i + 1]]
            if len(pts) < 2:
                continue
            r, g, b = (int(v) for v in colours[clusters[start + i]])
            draw.polygon(
                [tuple(p) for p in pts.tolist()], fill=(r, g, b, 110), outline=(r, g, b, 255)
            )
    return Image.alpha_composite(thumb.convert("RGBA"), overlay).convert("RGB")


def _draw_dots(store, clusters, colours, thumb, scale, radius: int) -> Image.Image:
    arr = np.array(thumb)
    h, w = arr.shape[:2]
    r = min(radius, 3)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (dx * dx + dy * dy) <= r * r + 0.5
    dx, dy = dx[disk], dy[disk]
    for start, stop in store.iter_ranges():
        c = np.asarray(store["centroid"][start:stop], np.float64) * scale
        x = np.clip(np.floor(c[:, 0]).astype(np.int64)[:, None] + dx[None], 0, w - 1)
        y = np.clip(np.floor(c[:, 1]).astype(np.int64)[:, None] + dy[None], 0, h - 1)
        col = colours[np.asarray(clusters[start:stop], np.int64)]
        arr[y.ravel(), x.ravel()] = np.repeat(col, dx.size, axis=0)
    return Image.fromarray(arr)


def _draw_legend(draw: ImageDraw.ImageDraw, x0: int, styles: ClusterStyles, counts) -> None:
    font = _font(14)
    total = int(np.sum(counts))
    draw.text((x0 + 10, 8), f"{styles.k} clusters, {total:,} cells", fill="black", font=font)
    for i, (name, colour) in enumerate(styles.styles()):
        y = 8 + LEGEND_ROW * (i + 1) + 6
        draw.rectangle([x0 + 10, y, x0 + 26, y + 16], fill=tuple(colour), outline="black")
        draw.text((x0 + 34, y), f"{name}  ({int(counts[i]):,})", fill="black", font=font)


# --------------------------------------------------------------------------- gallery
def gallery_size(k: int, per_cluster: int, tile: int) -> tuple[int, int]:
    """(width, height) of a gallery of ``k`` rows of ``per_cluster`` tiles of ``tile`` px."""
    return (
        GALLERY_LABEL_WIDTH + per_cluster * (tile + GALLERY_PAD) + GALLERY_PAD,
        k * (tile + GALLERY_PAD) + GALLERY_PAD,
    )


def draw_gallery(
    stores: list,
    clusters: list[np.ndarray],
    styles: ClusterStyles,
    path: str | Path,
    per_cluster: int = 16,
    seed: int = 0,
    tile: int = 64,
) -> Path:
    """A grid of ``per_cluster`` random crops of each cluster, drawn across all stores.

    Args:
        stores: CellStores.
        clusters: per store, (N_s,) cluster ids.
        tile: side of each crop in the picture (crops are enlarged, nearest neighbour).
    """
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", gallery_size(styles.k, per_cluster, tile), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    store_of = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(clusters)])
    row_of = np.concatenate([np.arange(len(c)) for c in clusters])
    every = np.concatenate([np.asarray(c, np.int64) for c in clusters])
    for cl, (name, colour) in enumerate(styles.styles()):
        y = GALLERY_PAD + cl * (tile + GALLERY_PAD)
        members = np.flatnonzero(every == cl)
        draw.rectangle([GALLERY_PAD, y, GALLERY_PAD + 14, y + tile], fill=tuple(colour))
        draw.text((GALLERY_PAD + 22, y + 4), name, fill="black", font=font)
        draw.text((GALLERY_PAD + 22, y + 24), f"{members.size:,} cells", fill="gray", font=font)
        if members.size == 0:
            continue
        pick = np.sort(rng.choice(members, size=min(per_cluster, members.size), replace=False))
        col = 0
        for s in np.unique(store_of[pick]):
            rows = row_of[pick[store_of[pick] == s]]
            for crop in read_rows(stores[s]["crops"], rows):
                img = Image.fromarray(crop).resize((tile, tile), Image.Resampling.NEAREST)
                canvas.paste(
                    img, (GALLERY_LABEL_WIDTH + GALLERY_PAD + col * (tile + GALLERY_PAD), y)
                )
                col += 1
    return save_png(canvas, path)
