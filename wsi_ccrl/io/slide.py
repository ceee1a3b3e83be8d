"""Open a whole-slide image: one ``Slide`` whatever the format, its resolution and its pixels at
any level; and the pyramidal TIFF writer for slides made from arrays. Its tissue and tile plan
are ``tiles``'.

One file of ~340 lines on purpose: the three readers behind one ``Slide`` share its geometry
(levels, downsamples, resolution checks).

``Slide`` reads through OpenSlide, TIAToolbox's reader for the tiled TIFFs OpenSlide refuses, or
``plain_image`` for PNG, JPEG, BMP and untiled TIFF (an image is a one-slide cohort of its own).
"""

from __future__ import annotations

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
