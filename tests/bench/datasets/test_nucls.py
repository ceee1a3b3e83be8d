"""NuCLS reader, on small tiles written here in the published format (no NuCLS data offline)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsi_ccrl.bench.datasets import nucls
from wsi_ccrl.bench.datasets.common import write_store
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.crops import CropSpec
from wsi_ccrl.io.store import CellStore

ROWS = [
    # raw, main, super, type, xmin, ymin, xmax, ymax, coords_x, coords_y
    ("tumor", "tumor_nonMitotic", "tumor_any", "polyline", 10, 10, 20, 20,
     "10,20,20,10", "10,10,20,20"),
    ("lymphocyte", "lymphocyte", "sTIL", "rectangle", 30, 10, 36, 16, "", ""),
    ("unlabeled", "unlabeled", "AMBIGUOUS", "rectangle", 40, 40, 44, 44, "", ""),
    ("mitotic_figure", "tumor_mitotic", "tumor_any", "rectangle", 5, 40, 15, 48, "", ""),
    ("eosinophil", "other_nucleus", "other_nucleus", "rectangle", 50, 5, 58, 13, "", ""),
    ("macrophage", "macrophage", "nonTIL_stromal", "polyline", 30, 30, 40, 36,
     "30,40,40,30", "30,30,36,36"),
    ("apoptotic_body", "other_nucleus", "other_nucleus", "rectangle", 20, 50, 24, 54, "", ""),
    ("ambiguous", "AMBIGUOUS", "AMBIGUOUS", "rectangle", 2, 2, 4, 4, "", ""),
    ("blob", "other_nucleus", "other_nucleus", "rectangle", 44, 20, 48, 24, "", ""),
]  # fmt: skip
COLUMNS = [
    "raw_classification", "main_classification", "super_classification", "type",
    "xmin", "ymin", "xmax", "ymax", "coords_x", "coords_y",
]  # fmt: skip


def _write_split(root: Path, name: str) -> Path:
    (root / "rgb").mkdir(parents=True)
    (root / "csv").mkdir(parents=True)
    image = np.full((64, 64, 3), 235, np.uint8)
    image[10:20, 10:20] = 30  # the tumour nucleus, dark
    Image.fromarray(image).save(root / "rgb" / f"{name}.png")
    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(root / "csv" / f"{name}.csv")
    return root


@pytest.fixture
def nucls_dir(tmp_path) -> Path:
    _write_split(tmp_path / "nucls" / "train", "TCGA-A1_id-1_left-0_top-0")
    _write_split(tmp_path / "nucls" / "test", "TCGA-B2_id-2_left-0_top-0")
    return tmp_path / "nucls"


def test_groups_of_raw_classes():
    assert nucls.group_of("mitotic_figure") == nucls.group_of("tumor") == 0
    assert nucls.group_of("Vascular endothelium") == 1
    assert nucls.group_of("plasma_cell") == 2
    assert nucls.group_of("apoptotic_body") == 3
    assert nucls.group_of("myoepithelium") == 4
    assert nucls.group_of("unlabeled") is None and nucls.group_of("ambiguous") is None


def test_reader_skips_unlabelled_and_reads_shapes(nucls_dir, caplog):
    files = nucls.split_tiles(nucls_dir)
    assert len(files["train"]) == len(files["test"]) == 1
    with caplog.at_level(logging.WARNING, logger="wsi_ccrl"):
        tile = nucls.read_tile(*files["train"][0])
    nuc = tile.nuclei
    # tumor, lymphocyte, mitotic, eosinophil, macrophage, apoptotic kept; 3 rows skipped
    assert nuc.gt_class.tolist() == [0, 2, 0, 4, 1, 3]
    assert tile.meta["skipped"] == {"unlabeled": 1, "ambiguous": 1, "blob": 1}
    assert "blob" in caplog.text  # an unknown raw class is reported, not guessed
    assert nuc.area.tolist() == [100, 36, 80, 64, 60, 16]
    assert np.allclose(nuc.centroid[0], [15, 15]) and np.allclose(nuc.centroid[1], [33, 13])
    assert nuc.bbox[0].tolist() == [10, 10, 20, 20]
    assert np.diff(nuc.contour_offsets).tolist() == [4] * 6  # polygons, or the box


def test_store_with_box_windows(nucls_dir, tmp_path):
    files = nucls.split_tiles(nucls_dir)
    store = write_store(
        tmp_path / "n.zarr", nucls.iter_tiles(files["train"]), ["t"], {"dataset": "nucls"},
        CropSpec(8, 1.0, 2),
    )  # fmt: skip
    s = CellStore.open(store.path)
    assert s["gt_class"][:].tolist() == [0, 2, 0, 4, 1, 3]
    assert s["crops"][0, 1:-1, 1:-1].max() < 60  # scale 0: the crop is the dark box itself


def test_missing_folders(tmp_path):
    with pytest.raises(WsiCcrlError, match="sites.google.com/view/nucls"):
        nucls.split_tiles(tmp_path / "absent")
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(WsiCcrlError, match="rgb/ and csv/"):
        nucls.split_tiles(tmp_path / "d")
    with pytest.raises(ConfigError):
        nucls.split_tiles(tmp_path / "d", "tiles")
