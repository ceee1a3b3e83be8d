"""Plain images read as slides: PNG, JPEG, BMP and untiled TIFF (tiles, TMA cores, dataset patches).

The image is decoded once into memory (such files are small next to a pyramid) and given a few
downsampled levels, so ``Slide`` reads it as it reads a pyramid: the same tile plan, crops and
level-0 coordinates. Its resolution is taken from the file (TIFF resolution tags or OME-XML, PNG
pHYs, JPEG/BMP density) only when it is a microscope's: a screen's 72 or 96 dpi says nothing about
the tissue, and ``--mpp`` must give it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = PIL_SUFFIXES + TIFF_SUFFIXES
MPP_RANGE = (0.05, 20.0)  # µm/px a microscope image can have (100x oil to a 0.5x overview)
_MIN_LEVEL_SIDE = 256  # stop adding levels below this many pixels


@dataclass
class PlainImage:
    """An RGB image in memory with 4x downsampled levels, read like a slide's pyramid."""

    levels: list[np.ndarray]  # (h, w, 3) uint8, level 0 first
    mpp: float | None  # from the file, if it holds a microscope's resolution
    format: str  # "png", "jpeg", "bmp", "tiff"

    @property
    def dimensions(self) -> list[tuple[int, int]]:
        return [(a.shape[1], a.shape[0]) for a in self.levels]

    @property
    def downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, as OpenSlide reports them (mean of x and y)."""
        w0, h0 = self.dimensions[0]
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.dimensions)

    def read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        """RGB (h, w, 3) at ``level``, top-left at level-0 (x, y); white outside the image."""
        image = self.levels[level]
        d = self.downsamples[level]
        lx, ly = int(np.floor(x / d)), int(np.floor(y / d))
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, image.shape[1]), min(ly + h, image.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = image[y0:y1, x0:x1]
        return out


def open_image(path: Path) -> PlainImage | None:
    """The image at ``path``, or None when it is no image this reader decodes.

    Raises:
        WsiCcrlError: an image it recognises but cannot use (16-bit or float samples, no pixels).
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        decoded = _read_tiff(path)
    elif suffix in PIL_SUFFIXES:
        decoded = _read_pil(path)
    else:
        return None
    if decoded is None:
        return None
    rgb, mpp, fmt = decoded
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise WsiCcrlError(f"{path}: the image has no pixels")
    return PlainImage(_levels(rgb), mpp, fmt)


def _levels(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 and 4x area-averaged levels down to a few hundred pixels (fast thumbnails)."""
    levels = [np.ascontiguousarray(rgb)]
    while min(levels[-1].shape[:2]) // 4 >= _MIN_LEVEL_SIDE:
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 4, h // 4), interpolation=cv2.INTER_AREA))
    return levels


def _read_pil(path: Path) -> tuple[np.ndarray, float | None, str] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # a large image is the user's own file, not an attack
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as im:
                    im.load()
                    fmt = (im.format or path.suffix.lstrip(".")).lower()
                    dpi = im.info.get("dpi")
                    rgb = _pil_rgb(im, path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        log.debug("Pillow cannot read %s: %s", path, exc)
        return None
    mpp = _mpp_from_dpi(dpi, path)
    return rgb, mpp, fmt


def _pil_rgb(im, path: Path) -> np.ndarray:
    """8-bit RGB; transparent pixels become white, as outside a slide's scanned area."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise WsiCcrlError(f"{path}: {im.mode} samples (16-bit or float); convert it to 8-bit RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def _mpp_from_dpi(dpi, path: Path) -> float | None:
    try:
        values = [float(v) for v in dpi]
    except (TypeError, ValueError):
        return None
    if not values or min(values) <= 0:
        return None
    return _plausible(25400.0 / float(np.mean(values)), path)


def _plausible(mpp: float, path: Path) -> float | None:
    if MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        return mpp
    log.debug("%s: resolution %.4g µm/px is no microscope's; ignored", path, mpp)
    return None


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None, str] | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            data = page.asarray()
            mpp = _tiff_mpp(tif, page, path)
    except Exception as exc:  # tifffile raises many types for a file that is no TIFF
        log.debug("tifffile cannot read %s: %s", path, exc)
        return None
    if data.dtype != np.uint8:
        raise WsiCcrlError(f"{path}: {data.dtype} samples; convert it to 8-bit RGB")
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)  # planar (separate) samples
    if data.ndim == 2:
        rgb = np.repeat(data[..., None], 3, axis=2)
    elif data.ndim == 3 and data.shape[-1] == 4:  # RGBA: composite on white
        alpha = data[..., 3:].astype(np.float32) / 255
        rgb = np.rint(data[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    elif data.ndim == 3 and data.shape[-1] == 3:
        rgb = data
    else:
        raise WsiCcrlError(f"{path}: a TIFF of shape {data.shape}, not an RGB or grey image")
    return rgb, mpp, "tiff"


def _tiff_mpp(tif, page, path: Path) -> float | None:
    """µm/px from OME-XML (PhysicalSizeX, µm unless stated) or the resolution tags."""
    ome = tif.ome_metadata
    if ome:
        size = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
        if size and (unit is None or unit.group(1) in ("µm", "um", "\u03bcm")):
            return _plausible(float(size.group(1)), path)
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    per_unit = num / den if den else 0.0
    unit = int(tags["ResolutionUnit"].value)
    microns = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre; 1 = no unit
    if microns is None or per_unit <= 0:
        return None
    return _plausible(microns / per_unit, path)
