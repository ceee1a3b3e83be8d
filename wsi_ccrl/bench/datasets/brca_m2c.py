"""BRCA-M2C (Abousamra et al., ICCV 2021): breast-cancer tiles at 20x with typed nuclei as dots.

Layout: ``images/*.png``, ``labels/<image stem>_gt_class_coords.txt`` (one nucleus per line,
``Y X class``: 1 lymphocyte, 2 tumour / epithelial, 3 stromal) and ``brca_ds_<split>.txt`` lists
of the images of each split (``train``, ``val``, ``test``). Each tile was cut from a TCGA slide
at 40x and downsampled by 2; the last number of its name is 4 x the slide's 40x µm/px, so the
tile's own resolution is that number / 2. The slide is the name's first field: each tile is one
slide, so the data set shows the stain differences between slides and sites.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_ccrl.bench.datasets import BenchmarkDataset, register_dataset
from wsi_ccrl.bench.datasets.common import TypedImage
from wsi_ccrl.errors import WsiCcrlError

CLASSES = ("lymphocyte", "tumour", "stromal")
SPLITS = ("train", "val", "test")
HOW_TO_GET = (
    "get BRCA-M2C from github.com/TopoXLab/Dataset-BRCA-M2C so that DIR/images/*.png, "
    "DIR/labels/*_gt_class_coords.txt and DIR/brca_ds_<split>.txt exist"
)


def image_mpp(path: Path) -> float:
    """The tile's µm/px from its name (``..._0.9824.png`` → 0.4912)."""
    try:
        return float(path.stem.rsplit("_", 1)[1]) / 2.0
    except (IndexError, ValueError):
        raise WsiCcrlError(
            f"{path.name}: no resolution at the end of the name ({HOW_TO_GET})"
        ) from None


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2) x y in the pixel-edge frame, classes (n,) 0-based) of one labels file."""
    try:
        rows = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise WsiCcrlError(f"cannot read {path}: {exc}") from None
    if rows.size == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    if rows.shape[1] != 3:
        raise WsiCcrlError(f"{path}: expected 'Y X class' per line, got {rows.shape[1]} fields")
    classes = rows[:, 2].astype(np.int64) - 1
    if classes.min() < 0 or classes.max() >= len(CLASSES):
        raise WsiCcrlError(f"{path}: classes must be 1..{len(CLASSES)}")
    # a dot marks a pixel; its centre is at +0.5 in the pixel-edge frame of the store
    return np.stack([rows[:, 1] + 0.5, rows[:, 0] + 0.5], axis=1), classes


def read_split(data_dir: str | Path, split: str) -> list[TypedImage]:
    """The images of one of the data set's splits, with their typed dots."""
    data_dir = Path(data_dir)
    listing = data_dir / f"brca_ds_{split}.txt"
    if not listing.is_file():
        raise WsiCcrlError(f"{listing} not found; {HOW_TO_GET}")
    out = []
    for line in listing.read_text().split():
        path = data_dir / "images" / Path(line).name
        if not path.is_file():
            raise WsiCcrlError(f"{path} (listed in {listing.name}) not found; {HOW_TO_GET}")
        points, classes = read_points(data_dir / "labels" / f"{path.stem}_gt_class_coords.txt")
        slide = path.stem.split("_", 1)[0]
        out.append(TypedImage(path, image_mpp(path), points, classes, split, slide))
    if not out:
        raise WsiCcrlError(f"{listing} lists no images")
    return out


@register_dataset("brca-m2c")
class BrcaM2C(BenchmarkDataset):
    """Typed dots only: scored end to end on the detections, its val split by default."""

    classes = CLASSES
    cells = "detected"
    cohort = ("train", "val")

    def typed_images(self, data_dir, cfg, splits):
        return [im for split in splits for im in read_split(data_dir, split)]
