"""Labelled nucleus sources: reading, 20x resampling, split units and the held-back split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import CONSEP_PATCHES, SHARED_DATA, needs

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.nuclei.data import (
    HELD_BACK,
    MONUSEG_ORGAN,
    image_group,
    load_source,
    monuseg_organ,
    split,
)


@needs(CONSEP_PATCHES)
def test_consep_patches_are_grouped_by_source_tile_and_split_whole():
    images = load_source(CONSEP_PATCHES, "consep", names={"tile3", "tile21"})
    files = [p for p in (CONSEP_PATCHES / "Images").glob("train_*.png")]
    expected = sum(p.stem.split("_")[1] in ("3", "21") for p in files)
    assert len(images) == expected > 4 and {im.group for im in images} == {"tile3", "tile21"}
    assert images[0].image.shape == (256, 256, 3) and images[0].image.dtype == np.uint8
    assert images[0].inst.dtype == np.int32 and images[0].inst.max() > 5
    train, held = split(images)
    assert {im.group for im in train} == {"tile3"} and {im.group for im in held} == {"tile21"}


@needs(CONSEP_PATCHES)
def test_a_20x_image_is_resampled_to_0_25_um_per_px(tmp_path):
    for sub in ("Images", "Labels"):
        (tmp_path / sub).mkdir()
    for name in ("train_3_000", "train_3_001"):
        shutil.copy(CONSEP_PATCHES / "Images" / f"{name}.png", tmp_path / "Images")
        shutil.copy(CONSEP_PATCHES / "Labels" / f"{name}.mat", tmp_path / "Labels")
    (tmp_path / "magnification.json").write_text(json.dumps({"train_3_000": "20x"}))
    native = {im.name: im for im in load_source(CONSEP_PATCHES, "consep", names={"tile3"})}
    got = {im.name: im for im in load_source(tmp_path, "cpm15")}
    assert got["train_3_000"].inst.shape == (512, 512) and got["train_3_001"].inst.shape == (
        256,
        256,
    )
    # labels by nearest neighbour: every nucleus keeps its id and four times its area
    src, up = native["train_3_000"].inst, got["train_3_000"].inst
    np.testing.assert_array_equal(np.unique(up), np.unique(src))
    np.testing.assert_array_equal(np.bincount(up.ravel()), 4 * np.bincount(src.ravel()))
    (tmp_path / "magnification.json").write_text(json.dumps({"train_3_000": "10x"}))
    with pytest.raises(WsiCcrlError, match="10x"):
        load_source(tmp_path, "cpm15")


def test_split_units_and_organs():
    assert image_group("consep", "train_21_7") == "tile21"
    assert image_group("monuseg", "TCGA-E2-A1B5-01Z-00-DX1") == "E2-A1B5"
    assert image_group("cpm15", "image03") == "image03"
    assert monuseg_organ("TCGA-G2-A2EK-01A-02-TSB") == "bladder"
    # one held-back MoNuSeg image per organ
    held_organs = sorted(monuseg_organ(f"TCGA-{g}-01Z") for g in HELD_BACK["monuseg"])
    assert held_organs == sorted(MONUSEG_ORGAN)
    with pytest.raises(WsiCcrlError, match="_<tile>_<k>"):
        image_group("consep", "patch")


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(WsiCcrlError, match="no images"):
        load_source(tmp_path, "consep")
    with pytest.raises(WsiCcrlError, match="unknown nucleus source"):
        load_source(tmp_path, "pannuke")


@needs(SHARED_DATA / "monuseg-train")
def test_every_monuseg_image_has_a_listed_organ():
    names = [p.stem for p in (SHARED_DATA / "monuseg-train" / "Images").glob("*.png")]
    assert len(names) == 30
    assert all(monuseg_organ(n) != "unknown" for n in names)
