"""CoNSeP reader: the real shared patches (merged4) and a tiny official-format set (original7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from conftest import CONSEP_PATCHES, SHARED_DATA, needs
from PIL import Image

from wsi_ccrl.bench.datasets import consep
from wsi_ccrl.bench.datasets.common import write_store
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.crops import CropSpec
from wsi_ccrl.io.store import CellStore

IMAGES = CONSEP_PATCHES / "Images"


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("train_1_000", [6, 0, 35, 0]),
        ("train_10_000", [0, 12, 38, 18]),
        ("train_2_005", [0, 3, 0, 25]),
        ("train_5_003", [0, 0, 0, 0]),  # a patch without nuclei
    ],
)
def test_real_patch_class_counts(name, counts):
    tile = consep.read_tile(IMAGES / f"{name}.png", "merged4")
    # counts per merged class: miscellaneous, inflammatory, epithelial, spindle-shaped
    assert np.bincount(tile.nuclei.gt_class, minlength=4).tolist() == counts
    assert tile.image.shape == (256, 256, 3)


def test_real_patch_geometry_matches_labels():
    name = "train_10_000"
    tile = consep.read_tile(IMAGES / f"{name}.png", "merged4")
    mat = sio.loadmat(CONSEP_PATCHES / "Labels" / f"{name}.mat")
    nuc = tile.nuclei
    # centroids agree with the release's inst_centroid (x, y) to within a pixel
    assert np.abs(nuc.centroid - mat["inst_centroid"]).max() < 1.0
    areas = np.bincount(mat["inst_map"].ravel())[1:]
    assert np.array_equal(nuc.area, areas)
    # every polygon lies inside its box
    xy = nuc.contour_xy
    owner = np.repeat(np.arange(len(nuc)), np.diff(nuc.contour_offsets))
    assert (xy[:, 0] >= nuc.bbox[owner, 0]).all() and (xy[:, 0] <= nuc.bbox[owner, 2]).all()


def test_tile_split_of_the_patches():
    files = consep.split_images(CONSEP_PATCHES.parent, "tiles", tuple(range(1, 21)), (21, 22))
    # the fixture holds patches of tiles 1, 2, 3, 5 and 10 (train) and 21, 24, 27 (held out)
    assert len(files["train"]) == 1 + 1 + 4 + 1 + 8 and len(files["test"]) == 6
    assert {consep.tile_id(p.name) for p in files["test"]} == {21}
    with pytest.raises(ConfigError, match="overlap"):
        consep.split_images(CONSEP_PATCHES.parent, "tiles", (1, 2), (2, 3))
    with pytest.raises(WsiCcrlError, match="Train/ and Test/"):
        consep.split_images(CONSEP_PATCHES.parent, "official")


def test_tile_id_from_names():
    assert consep.tile_id("train_12_003.png") == 12
    assert consep.tile_id("test_3.png") == 3


def test_missing_data_says_where_to_get_it(tmp_path):
    with pytest.raises(WsiCcrlError, match="warwick.ac.uk"):
        consep.split_images(tmp_path / "nope", "official")


def _write_original7(root: Path) -> None:
    """A 64x64 official-format tile: three nuclei of types 4 (malignant), 6 (muscle), 1 (other)."""
    for split in ("Train", "Test"):
        (root / split / "Images").mkdir(parents=True)
        (root / split / "Labels").mkdir(parents=True)
        inst = np.zeros((64, 64), np.int32)
        inst[10:20, 10:20] = 1  # 10x10 square
        inst[30:34, 20:50] = 2  # 4x30 bar: spindle-like
        inst[50:56, 50:56] = 3
        image = np.full((64, 64, 3), 230, np.uint8)
        image[inst > 0] = 40
        Image.fromarray(image).save(root / split / "Images" / f"{split.lower()}_1.png")
        sio.savemat(
            root / split / "Labels" / f"{split.lower()}_1.mat",
            {"inst_map": inst, "inst_type": np.array([[4], [6], [1]]), "type_map": inst * 0},
        )


def test_original7_is_merged_and_crops_are_centred(tmp_path):
    _write_original7(tmp_path / "consep")
    files = consep.split_images(tmp_path / "consep", "official")
    tile = consep.read_tile(files["train"][0], "original7")
    assert tile.nuclei.gt_class.tolist() == [2, 3, 0]  # epithelial, spindle, miscellaneous
    assert tile.nuclei.bbox.tolist() == [[10, 10, 20, 20], [20, 30, 50, 34], [50, 50, 56, 56]]
    assert np.allclose(tile.nuclei.centroid[0], [15, 15])
    assert tile.nuclei.area.tolist() == [100, 120, 36]
    # merged4 would read type 6 as out of range: the scheme is never guessed
    with pytest.raises(WsiCcrlError, match="outside the 'merged4' scheme"):
        consep.read_tile(files["train"][0], "merged4")
    with pytest.raises(ConfigError):
        consep.class_map("seven")

    store = write_store(
        tmp_path / "s.zarr", consep.iter_tiles(files["train"], "original7"), ["train_1.png"],
        {"dataset": "consep"}, CropSpec(16, 2.0, 4),
    )  # fmt: skip
    crops = CellStore.open(store.path)["crops"][:]
    assert CellStore.open(store.path)["gt_class"][:].tolist() == [2, 3, 0]
    # window_scale 2: the window is twice the cell, so the dark square fills the central half of its crop
    dark = crops[0].mean(axis=2) < 128
    ys, xs = np.nonzero(dark)
    assert abs(xs.mean() - 7.5) < 0.6 and abs(ys.mean() - 7.5) < 0.6
    assert 0.2 < dark.mean() < 0.3  # (1/2)^2 of the crop


@needs(SHARED_DATA / "consep-patches")
def test_tile_split_of_the_shared_patches():
    """All 432 patches of the shared set: 16 per source tile."""
    root = SHARED_DATA / "consep-patches"
    files = consep.split_images(root, "tiles", tuple(range(1, 21)), (21, 22))
    assert len(files["train"]) == 20 * 16 and len(files["test"]) == 2 * 16
