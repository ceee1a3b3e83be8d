"""BRCA-M2C reader: a folder in its layout, built from real CoNSeP patches at 20x."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import BRCA_PATCHES as PATCHES
from conftest import CONSEP_PATCHES, SHARED_DATA, TO_BRCA, make_brca_folder, needs

from wsi_ccrl.bench.datasets import brca_m2c, consep
from wsi_ccrl.errors import WsiCcrlError


def test_reads_images_dots_and_resolution(tmp_path):
    root = make_brca_folder(tmp_path)
    images = brca_m2c.read_split(root, "val")
    assert [im.slide for im in images] == [f"TCGA-T{i}-0000-01Z-00-DX1" for i in range(4)]
    assert {im.mpp for im in images} == {0.5} and {im.split for im in images} == {"val"}
    first = images[0]
    tile = consep.read_tile(CONSEP_PATCHES / "Images" / "train_10_000.png", "merged4")
    to_brca = np.array(TO_BRCA)
    kept = to_brca[tile.nuclei.gt_class] >= 0
    assert len(first.points) == kept.sum()
    np.testing.assert_allclose(first.points, tile.nuclei.centroid[kept] / 2, atol=0.06)
    assert np.array_equal(first.classes, to_brca[tile.nuclei.gt_class[kept]])


def test_resolution_is_read_from_the_name():
    assert brca_m2c.image_mpp(Path("TCGA-A7-A0DB-01Z-00-DX1_168501_13501_1000_1000_0.986.png")) == (
        pytest.approx(0.493)
    )
    with pytest.raises(WsiCcrlError, match="no resolution"):
        brca_m2c.image_mpp(Path("tile_without_resolution.png"))


def test_bad_folders_are_one_clear_error(tmp_path):
    with pytest.raises(WsiCcrlError, match="brca_ds_val.txt not found; get BRCA-M2C"):
        brca_m2c.read_split(tmp_path, "val")
    root = make_brca_folder(tmp_path / "d", PATCHES[:1])
    label = next((root / "labels").glob("*.txt"))
    label.write_text("10 12 4\n")
    with pytest.raises(WsiCcrlError, match="classes must be 1..3"):
        brca_m2c.read_split(root, "val")


@pytest.mark.shared
@needs(SHARED_DATA / "brca-m2c")
def test_the_shared_release_reads_whole():
    """The data set's own counts (its README): 80 + 10 tiles, 21,780 typed nuclei."""
    train = brca_m2c.read_split(SHARED_DATA / "brca-m2c", "train")
    val = brca_m2c.read_split(SHARED_DATA / "brca-m2c", "val")
    assert (len(train), len(val)) == (80, 10)
    counts = np.bincount(np.concatenate([im.classes for im in val]), minlength=3)
    assert counts.tolist() == [1358, 733, 1042]
    assert all(0.45 < im.mpp < 0.55 for im in train + val)
