"""NuCLS (Amgad et al. 2022; breast cancer, https://sites.google.com/view/nucls).

Each tile is ``rgb/<name>.png`` with ``csv/<name>.csv``, one row per nucleus: ``raw_classification``,
``main_classification``, ``super_classification``, ``xmin, ymin, xmax, ymax`` and, for polygons,
``coords_x``/``coords_y`` (comma-separated vertices; otherwise the box is the outline).

Classes are the paper's 5 groups of the *raw* classes; unlabelled and ambiguous nuclei are skipped,
and a raw class outside the table is skipped with a warning (never guessed into a group).

Split ``official``: ``DIR/train/{rgb,csv}`` and ``DIR/test/{rgb,csv}`` — put the tiles of the
slides listed in NuCLS's ``train_test_splits`` (fold 1 by default in the paper's code) there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wsi_ccrl.bench.datasets import BenchmarkDataset, register_dataset
from wsi_ccrl.bench.datasets.common import GroundTruthNuclei, GroundTruthTile
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.contours import polygon_area_centroid
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

CLASSES = ("tumor", "stromal", "sTILs", "apoptotic body", "other")
GROUPS = {
    "tumor": 0,
    "mitotic_figure": 0,
    "fibroblast": 1,
    "vascular_endothelium": 1,
    "macrophage": 1,
    "lymphocyte": 2,
    "plasma_cell": 2,
    "apoptotic_body": 3,
    "neutrophil": 4,
    "ductal_epithelium": 4,
    "eosinophil": 4,
    "myoepithelium": 4,
}
SKIPPED = {"unlabeled", "unlabelled", "ambiguous", "", "nan"}
MPP = 0.2  # NuCLS tiles are at 0.2 µm/px
HOW_TO_GET = (
    "download NuCLS from https://sites.google.com/view/nucls (the corrected single-rater dataset) "
    "and put the training slides' tiles in DIR/train/rgb/*.png + DIR/train/csv/*.csv and the test "
    "slides' in DIR/test/rgb + DIR/test/csv (NuCLS's train_test_splits fold lists the slides)"
)
_REQUIRED = ("raw_classification", "xmin", "ymin", "xmax", "ymax")


def group_of(raw: str) -> int | None:
    """The paper's group index of a raw class name; None for unlabelled/ambiguous/unknown."""
    key = str(raw).strip().lower().replace(" ", "_").replace("-", "_")
    return GROUPS.get(key)


def _parse_coords(value) -> np.ndarray | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().strip("[]")
    if not text:
        return None
    try:
        return np.array([float(v) for v in text.replace(";", ",").split(",") if v.strip()])
    except ValueError:
        return None


def read_annotations(csv_path: Path) -> tuple[GroundTruthNuclei, Counter]:
    """The labelled nuclei of one CSV, and a count of the raw classes that were skipped."""
    import pandas as pd

    try:
        table = pd.read_csv(csv_path)
    except Exception as exc:
        raise WsiCcrlError(f"cannot read {csv_path}: {exc}") from None
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise WsiCcrlError(f"{csv_path}: missing column(s) {missing} (NuCLS format)")
    raw = table["raw_classification"].astype(str).str.strip()
    groups = np.array([-1 if (g := group_of(r)) is None else g for r in raw], np.int16)
    skipped = Counter(r for r, g in zip(raw, groups, strict=True) if g < 0)
    table = table[groups >= 0]
    groups = groups[groups >= 0]
    boxes = table[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64)
    polygons = []
    has_xy = "coords_x" in table.columns and "coords_y" in table.columns
    cx_col = table["coords_x"].tolist() if has_xy else [None] * len(table)
    cy_col = table["coords_y"].tolist() if has_xy else [None] * len(table)
    for box, cx, cy in zip(boxes, cx_col, cy_col, strict=True):
        xs, ys = _parse_coords(cx), _parse_coords(cy)
        if xs is None or ys is None or xs.size != ys.size or xs.size < 3:
            x0, y0, x1, y1 = box
            xs, ys = np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])
        polygons.append(np.stack([xs, ys], 1))
    lengths = np.array([len(p) for p in polygons], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    xy = np.concatenate(polygons) if polygons else np.zeros((0, 2))
    area, centroid = polygon_area_centroid(offsets, xy)
    bbox = np.round(boxes).astype(np.int32).reshape(-1, 4)
    bbox[:, 2:] = np.maximum(bbox[:, 2:], bbox[:, :2] + 1)
    nuclei = GroundTruthNuclei(
        centroid=centroid.astype(np.float32).reshape(-1, 2),
        bbox=bbox,
        area=area.astype(np.float32),
        contour_offsets=offsets,
        contour_xy=xy.astype(np.float32).reshape(-1, 2),
        gt_class=groups,
    )
    return nuclei, skipped


def _sub(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    return next(
        (c for c in sorted(folder.iterdir()) if c.is_dir() and c.name.lower() == name), None
    )


def list_tiles(split_dir: Path) -> list[tuple[Path, Path]]:
    """(rgb png, csv) pairs of a split folder, matched by file stem."""
    rgb, csv = _sub(split_dir, "rgb"), _sub(split_dir, "csv")
    if rgb is None or csv is None:
        raise WsiCcrlError(f"{split_dir}: expected rgb/ and csv/ folders; {HOW_TO_GET}")
    pairs = [(p, csv / f"{p.stem}.csv") for p in sorted(rgb.glob("*.png"))]
    pairs = [(p, c) for p, c in pairs if c.is_file()]
    if not pairs:
        raise WsiCcrlError(f"{split_dir}: no rgb/*.png with a matching csv/*.csv; {HOW_TO_GET}")
    return pairs


def split_tiles(
    data_dir: str | Path, split: str = "official"
) -> dict[str, list[tuple[Path, Path]]]:
    """The (image, csv) pairs of the train and test splits."""
    data_dir = Path(data_dir)
    if split != "official":
        raise ConfigError(f"NuCLS supports split=official only (train/ and test/), got {split!r}")
    if not data_dir.is_dir():
        raise WsiCcrlError(f"NuCLS data folder not found: {data_dir}; {HOW_TO_GET}")
    out = {}
    for name in ("train", "test"):
        sub = _sub(data_dir, name)
        if sub is None:
            raise WsiCcrlError(f"{data_dir}: no {name}/ folder; {HOW_TO_GET}")
        out[name] = list_tiles(sub)
    return out


def read_tile(image_path: Path, csv_path: Path) -> GroundTruthTile:
    from PIL import Image

    nuclei, skipped = read_annotations(csv_path)
    unknown = {k: v for k, v in skipped.items() if k.lower() not in SKIPPED}
    if unknown:
        log.warning("%s: skipped nuclei of unknown raw classes %s", csv_path.name, dict(unknown))
    image = np.asarray(Image.open(image_path).convert("RGB"))
    return GroundTruthTile(image_path.name, image, nuclei, {"skipped": dict(skipped)})


def iter_tiles(pairs: list[tuple[Path, Path]]) -> Iterator[GroundTruthTile]:
    for image_path, csv_path in pairs:
        yield read_tile(image_path, csv_path)


@register_dataset("nucls")
class NuCLS(BenchmarkDataset):
    """Outlines and types of the official train / test split (the paper's protocol)."""

    classes = CLASSES

    def ground_truth_files(self, data_dir, cfg):
        return split_tiles(data_dir, self.resolve_split(data_dir, cfg.split))

    def ground_truth_tiles(self, files, cfg):
        return [p.name for p, _ in files], iter_tiles(files), MPP, "nucls-5"
