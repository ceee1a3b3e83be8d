"""Open a whole-slide image, find its tissue and plan the tiles that cover it.

One file of ~510 lines on purpose: the three readers behind one ``Slide``, its tissue mask and its
tile plan work on the same slide geometry.

``Slide`` reads through OpenSlide, TIAToolbox's reader for the tiled TIFFs OpenSlide refuses, or
``plain_image`` for PNG, JPEG, BMP and untiled TIFF (an image is a one-slide cohort of its own).
Tiles are planned on a pixel grid at the segmenter's resolution (``target_mpp``): the tile *cores*
partition the region of interest exactly, so each nucleus (owned by the core holding its centroid)
is stored once; each tile is read with ``overlap`` extra pixels per side so a nucleus near a core
edge is seen whole, plus a crop margin so its crop window lies in the pixels already read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.plain_image import PIL_SUFFIXES, open_image
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)

_BLOCK = 2048  # level pixels per read when building a thumbnail (bounded memory)


@dataclass(frozen=True)
class SlideInfo:
    """What the store records about its source slide."""

    path: str
    dimensions: tuple[int, int]  # level-0 width, height
    mpp: float  # µm per level-0 pixel
    objective_power: float | None
    vendor: str | None
    level_downsamples: tuple[float, ...]

    def attrs(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dimensions": list(self.dimensions),
            "mpp": self.mpp,
            "objective_power": self.objective_power,
            "vendor": self.vendor,
        }


class Slide:
    """A readable slide with a known resolution. ``Slide.open(path, mpp=None)``."""

    def __init__(self, backend: str, handle: Any, info: SlideInfo, level_dims: list):
        self.backend = backend  # "openslide" | "tiatoolbox" | "image"
        self._handle = handle
        self.info = info
        self.level_dimensions = level_dims

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, mpp: float | None = None) -> Slide:
        """Open ``path``; ``mpp`` overrides (or supplies) the slide's µm/px.

        Raises:
            WsiCcrlError: missing, unreadable or unsupported file, or no resolution known.
        """
        path = Path(path)
        if not path.exists():
            raise WsiCcrlError(f"slide not found: {path}")
        if not path.is_file():
            raise WsiCcrlError(f"not a slide file: {path}")
        plain = path.suffix.lower() in PIL_SUFFIXES  # never a pyramid: straight to the image reader
        slide = None if plain else cls._open_openslide(path)
        if not plain and (slide is None or slide.info.mpp is None):
            # TIAToolbox also reads OME-XML, where OpenSlide's generic TIFF sees no resolution
            other = cls._open_tiatoolbox(path)
            if other is not None and (slide is None or other.info.mpp is not None):
                if slide is not None:
                    slide.close()
                slide = other
        if slide is None:
            slide = cls._open_image(path)
        if slide is None:
            raise WsiCcrlError(
                f"cannot read slide {path}: not a format OpenSlide, TIAToolbox or the image reader "
                "(PNG, JPEG, BMP, TIFF) can open (unsupported or corrupt file)"
            )
        info = slide.info
        if mpp is not None:
            if mpp <= 0:
                raise WsiCcrlError(f"--mpp must be positive, got {mpp}")
            info = SlideInfo(**{**info.__dict__, "mpp": float(mpp)})
        elif info.mpp is None or not np.isfinite(info.mpp) or info.mpp <= 0:
            what = "image" if slide.backend == "image" else "slide"
            raise WsiCcrlError(
                f"{path}: the {what}'s metadata has no resolution (µm/px); pass it with --mpp "
                "(e.g. --mpp 0.25 for 40x, 0.5 for 20x)"
            )
        slide.info = info
        return slide

    @classmethod
    def _open_openslide(cls, path: Path) -> Slide | None:
        import openslide

        try:
            handle = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError, ValueError):
            return None
        props = handle.properties
        mpp = _float(props.get(openslide.PROPERTY_NAME_MPP_X))
        info = SlideInfo(
            path=str(path.resolve()),
            dimensions=tuple(int(v) for v in handle.dimensions),
            mpp=mpp,
            objective_power=_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        )
        try:  # a corrupt file may open and fail on the first pixel read
            handle.read_region((0, 0), handle.level_count - 1, (1, 1))
        except openslide.OpenSlideError:
            return None
        return cls("openslide", handle, info, [tuple(d) for d in handle.level_dimensions])

    @classmethod
    def _open_tiatoolbox(cls, path: Path) -> Slide | None:
        if path.suffix.lower() not in (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".qptiff"):
            return None
        if not _is_tiled_tiff(path):  # TIAToolbox would load it whole and drop its resolution
            return None
        try:
            from tiatoolbox.wsicore.wsireader import WSIReader

            reader = WSIReader.open(str(path))
            meta = reader.info
            reader.read_rect((0, 0), (1, 1), resolution=0, units="level")
        except Exception as exc:  # TIAToolbox raises many types for a bad file
            log.debug("TIAToolbox cannot read %s: %s", path, exc)
            return None
        mpp = None if meta.mpp is None else float(np.asarray(meta.mpp, dtype=float)[0])
        info = SlideInfo(
            path=str(path.resolve()),
            dimensions=tuple(int(v) for v in meta.slide_dimensions),
            mpp=mpp,
            objective_power=_float(meta.objective_power),
            vendor=meta.vendor if meta.vendor not in (None, "None") else None,
            level_downsamples=tuple(float(d) for d in meta.level_downsamples),
        )
        dims = [tuple(int(v) for v in d) for d in meta.level_dimensions]
        return cls("tiatoolbox", reader, info, dims)

    @classmethod
    def _open_image(cls, path: Path) -> Slide | None:
        image = open_image(path)
        if image is None:
            return None
        info = SlideInfo(
            path=str(path.resolve()),
            dimensions=image.dimensions[0],
            mpp=image.mpp,
            objective_power=None,
            vendor=image.format,
            level_downsamples=image.downsamples,
        )
        return cls("image", image, info, image.dimensions)

    def close(self) -> None:
        if self.backend == "openslide":
            self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.info.dimensions

    @property
    def mpp(self) -> float:
        return self.info.mpp

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample``."""
        ds = np.asarray(self.info.level_downsamples)
        ok = np.flatnonzero(ds <= downsample * 1.001)
        return int(ok[np.argmax(ds[ok])]) if ok.size else 0

    def read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        """RGB (h, w, 3) uint8 at ``level``, top-left at level-0 (x, y); white outside the slide."""
        if self.backend == "openslide":
            rgba = np.asarray(self._handle.read_region((int(x), int(y)), level, (int(w), int(h))))
            rgb = rgba[..., :3].copy()
            rgb[rgba[..., 3] == 0] = 255  # transparent = outside the scanned area
            return rgb
        if self.backend == "image":
            return self._handle.read(int(x), int(y), int(w), int(h), level)
        out = self._handle.read_rect(
            (int(x), int(y)),
            (int(w), int(h)),
            resolution=level,
            units="level",
            pad_mode="constant",
            pad_constant_values=255,
        )
        return np.ascontiguousarray(out[..., :3])

    def read_scaled(
        self, x0: float, y0: float, x1: float, y1: float, out_w: int, out_h: int
    ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Read level-0 box [x0, x1) x [y0, y1) resampled to (out_h, out_w), exactly.

        Reads the best pyramid level (plus a pixel of context) and resamples it with one affine
        warp, so output pixel edge u lies at level-0 ``x0 + u * (x1 - x0) / out_w`` with no
        rounding: neighbouring tiles agree on where every pixel is, which the border ownership of
        nuclei relies on.

        Returns:
            The RGB image and its mapping to level 0, ``(ox, oy, sx, sy)``: output pixel edge u maps
            to level-0 edge ``ox + u * sx`` (and likewise for y).
        """
        sx, sy = (x1 - x0) / out_w, (y1 - y0) / out_h
        level = self.best_level(min(sx, sy))
        d = self.info.level_downsamples[level]
        lx0, ly0 = int(np.floor(x0)) - int(np.ceil(d)), int(np.floor(y0)) - int(np.ceil(d))
        lw = int(np.ceil((x1 - lx0) / d)) + 2
        lh = int(np.ceil((y1 - ly0) / d)) + 2
        image = self.read_level(lx0, ly0, lw, lh, level)
        fx, fy = sx / d, sy / d  # level pixels per output pixel
        if max(fx, fy) > 1.25:  # shrinking: low-pass first so the warp does not alias
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5 * fx, sigmaY=0.5 * fy)
        # output pixel centre u -> level-0 x0 + (u + 0.5) sx -> level pixel (X - lx0) / d - 0.5
        m = np.array(
            [
                [fx, 0.0, (x0 - lx0) / d + 0.5 * fx - 0.5],
                [0.0, fy, (y0 - ly0) / d + 0.5 * fy - 0.5],
            ]
        )
        out = cv2.warpAffine(
            image,
            m,
            (out_w, out_h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return out, (float(x0), float(y0), float(sx), float(sy))

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """Whole-slide RGB image at about ``mpp`` µm/px, read block by block (bounded memory).

        Returns:
            The image and its downsample (level-0 pixels per thumbnail pixel).
        """
        w0, h0 = self.dimensions
        downsample = max(1.0, mpp / self.mpp)
        tw, th = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
        sx, sy = w0 / tw, h0 / th
        level = self.best_level(downsample)
        d = self.info.level_downsamples[level]
        step = max(1, int(_BLOCK * d / downsample))  # thumbnail pixels per block side
        thumb = np.full((th, tw, 3), 255, np.uint8)
        for ty in range(0, th, step):
            for tx in range(0, tw, step):
                bw, bh = min(step, tw - tx), min(step, th - ty)
                block, _ = self.read_scaled(
                    tx * sx, ty * sy, (tx + bw) * sx, (ty + bh) * sy, bw, bh
                )
                thumb[ty : ty + bh, tx : tx + bw] = block
        return thumb, (sx + sy) / 2


def _is_tiled_tiff(path: Path) -> bool:
    """Whether the TIFF stores tiles (a slide's pyramid), not strips (a plain image)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].is_tiled)
    except Exception:  # not a TIFF tifffile reads: TIAToolbox could not either
        return False


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None


# --------------------------------------------------------------------------- tissue
def tissue_mask(thumb: np.ndarray, max_gray: int = 220) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail: Otsu on grey levels, never lighter than ``max_gray``.

    The cap keeps a blank (all-glass) slide from being split into "tissue" by Otsu; a closing
    fills pale gaps inside tissue and an opening removes dust specks.
    """
    from skimage.filters import threshold_otsu

    gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY)
    if gray.min() == gray.max():
        return np.zeros(gray.shape, bool)
    thr = min(float(threshold_otsu(gray)), float(max_gray))
    mask = (gray < thr).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool)


# --------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class Tile:
    """One tile of the plan, in target-resolution pixels of the whole slide.

    ``core`` (x0, y0, x1, y1) is the part this tile owns; ``read`` the larger box it is read with
    (core + overlap + crop margin); ``seg`` the box given to the segmenter (core + overlap).
    """

    index: int
    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]
    seg: tuple[int, int, int, int]


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering the tissue of a region at ``target_mpp``; ``scale`` level-0 px per target px."""

    tiles: tuple[Tile, ...]
    scale: float
    tile_size: int
    overlap: int
    crop_margin: int
    target_mpp: float
    roi: tuple[int, int, int, int]  # level-0 x, y, w, h
    n_grid: int  # tiles before the tissue filter
    extent: tuple[float, float] = (float("inf"), float("inf"))  # the slide, target px (w, h)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def attrs(self) -> dict[str, Any]:
        return {
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "crop_margin": self.crop_margin,
            "target_mpp": self.target_mpp,
            "count": len(self.tiles),
            "grid": self.n_grid,
        }


def plan_tiles(
    dimensions: tuple[int, int],
    slide_mpp: float,
    target_mpp: float,
    tile_size: int,
    overlap: int,
    crop_margin: int = 0,
    roi: tuple[int, int, int, int] | None = None,
    mask: np.ndarray | None = None,
    mask_downsample: float = 1.0,
    min_tissue_fraction: float = 0.0,
) -> TilePlan:
    """Tiles whose cores partition the ROI on the target-resolution grid; tissue tiles only.

    Args:
        dimensions: level-0 (width, height).
        slide_mpp: µm per level-0 pixel.
        target_mpp: µm per pixel the segmenter works at.
        tile_size: side of the box given to the segmenter (core + 2 * overlap), target px.
        overlap: pixels per side around the core, wider than the largest nucleus.
        crop_margin: extra pixels per side read for the crops of nuclei near the core edge.
        roi: level-0 (x, y, w, h) to limit the work to; default the whole slide.
        mask: optional tissue mask (thumbnail), with ``mask_downsample`` level-0 px per pixel.
        min_tissue_fraction: tiles whose core has less tissue than this are dropped.
    """
    core = tile_size - 2 * overlap
    if core < 16:
        raise WsiCcrlError(
            f"tile_size {tile_size} leaves a core of {core} px with overlap {overlap}: "
            "use a larger tile or a smaller overlap"
        )
    w0, h0 = dimensions
    x, y, w, h = roi if roi is not None else (0, 0, w0, h0)
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(w0, int(x) + int(w)), min(h0, int(y) + int(h))
    if x1 <= x0 or y1 <= y0:
        raise WsiCcrlError(f"--roi {x},{y},{w},{h} lies outside the slide ({w0} x {h0} px)")
    scale = target_mpp / slide_mpp
    # ROI in target pixels: the cores tile [tx0, tx1) x [ty0, ty1)
    tx0, ty0 = int(np.floor(x0 / scale)), int(np.floor(y0 / scale))
    tx1, ty1 = int(np.ceil(x1 / scale)), int(np.ceil(y1 / scale))
    xs = np.arange(tx0, tx1, core)
    ys = np.arange(ty0, ty1, core)
    gx, gy = np.meshgrid(xs, ys)  # row-major: tiles ordered by rows, then columns
    cx0, cy0 = gx.ravel(), gy.ravel()
    cx1, cy1 = np.minimum(cx0 + core, tx1), np.minimum(cy0 + core, ty1)
    keep = np.ones(cx0.size, bool)
    if mask is not None:
        frac = _tissue_fraction(mask, mask_downsample / scale, cx0, cy0, cx1, cy1)
        keep = frac >= min_tissue_fraction if min_tissue_fraction > 0 else frac > 0
    tiles = []
    pad = overlap + crop_margin
    for i in np.flatnonzero(keep):
        c = (int(cx0[i]), int(cy0[i]), int(cx1[i]), int(cy1[i]))
        tiles.append(
            Tile(
                index=len(tiles),
                core=c,
                read=(c[0] - pad, c[1] - pad, c[0] + core + pad, c[1] + core + pad),
                seg=(c[0] - overlap, c[1] - overlap, c[0] + core + overlap, c[1] + core + overlap),
            )
        )
    return TilePlan(
        tiles=tuple(tiles),
        scale=scale,
        tile_size=tile_size,
        overlap=overlap,
        crop_margin=crop_margin,
        target_mpp=target_mpp,
        roi=(x0, y0, x1 - x0, y1 - y0),
        n_grid=int(cx0.size),
        extent=(w0 / scale, h0 / scale),
    )


def _tissue_fraction(
    mask: np.ndarray,
    ds: float,
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
) -> np.ndarray:
    """Mean of ``mask`` over boxes given in target px (``ds`` target px per mask px), vectorised
    with an integral image."""
    integral = cv2.integral(mask.astype(np.uint8)).astype(np.int64)  # (H+1, W+1)
    mh, mw = mask.shape
    mx0 = np.clip(np.floor(x0 / ds).astype(int), 0, mw)
    my0 = np.clip(np.floor(y0 / ds).astype(int), 0, mh)
    mx1 = np.clip(np.ceil(x1 / ds).astype(int), 0, mw)
    my1 = np.clip(np.ceil(y1 / ds).astype(int), 0, mh)
    area = np.maximum((mx1 - mx0) * (my1 - my0), 1)
    total = integral[my1, mx1] - integral[my0, mx1] - integral[my1, mx0] + integral[my0, mx0]
    return total / area


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"x,y,w,h"`` (level-0 pixels) to a tuple; one clear error for anything else."""
    if text is None or text == "":
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(float(p)) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise WsiCcrlError(f"--roi must be x,y,w,h in level-0 pixels with w, h > 0, got {text!r}")
    return values  # type: ignore[return-value]


def write_pyramidal_tiff(
    path: str | Path,
    image: np.ndarray,
    mpp: float,
    levels: int = 3,
    tile: int = 256,
    compression: str = "jpeg",
) -> Path:
    """Write an RGB image as a tiled, pyramidal TIFF (JPEG tiles, 2x sub-resolutions) that
    OpenSlide and TIAToolbox read, with ``mpp`` in the resolution tags (pixels per cm).
    ``compression="zlib"`` keeps every pixel (a lossless pyramid, for comparisons).

    For large synthetic slides pass a ``numpy.memmap`` or any array-like that slices lazily.
    """
    import tifffile

    path = Path(path)
    res = 1e4 / mpp  # pixels per centimetre
    with atomic_write(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        opts = dict(
            tile=(tile, tile),
            photometric="rgb",
            compression=compression,
            resolutionunit="CENTIMETER",
        )
        tif.write(image, resolution=(res, res), **opts)  # levels as pages: OpenSlide's layout
        level = image
        for k in range(1, levels):
            h, w = level.shape[0] // 2, level.shape[1] // 2
            level = _half(level, h, w)
            tif.write(level, subfiletype=1, resolution=(res / 2**k, res / 2**k), **opts)
    return path


def _half(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """2x area downsample, in row strips so a memory-mapped input is never loaded whole."""
    out = np.empty((h, w, 3), np.uint8)
    step = 2048
    for y in range(0, h, step):
        y1 = min(h, y + step)
        strip = np.asarray(image[2 * y : 2 * y1, : 2 * w])
        out[y:y1] = cv2.resize(strip, (w, y1 - y), interpolation=cv2.INTER_AREA)
    return out
