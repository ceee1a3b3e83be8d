"""Plain images as slides: PNG, JPEG, BMP and untiled TIFF of a real MoNuSeg crop (colon, 40x)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import scipy.io as sio
import tifffile
from conftest import CONSEP_PATCHES, MONUSEG
from PIL import Image

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.slide import Slide, write_pyramidal_tiff
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.segment.cohort import expand_slide_inputs, segment_slides
from wsi_ccrl.segment.evaluate import DetectionScore, detection_score
from wsi_ccrl.segment.pipeline import segment_slide

NAME = "TCGA-NH-A8F7-01A-01-TS1"
IMAGE = np.asarray(Image.open(MONUSEG / "Images" / f"{NAME}.png").convert("RGB"))  # 400 x 512


def test_every_format_reads_the_same_pixels(tmp_path):
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    Image.fromarray(IMAGE).save(tmp_path / "b.bmp")
    tifffile.imwrite(tmp_path / "c.tif", IMAGE, photometric="rgb")  # strips, not tiles
    Image.fromarray(IMAGE).save(tmp_path / "d.jpg", quality=95)
    for name in ("a.png", "b.bmp", "c.tif", "d.jpg"):
        with Slide.open(tmp_path / name, mpp=0.25) as s:
            assert s.backend == "image" and s.dimensions == (512, 400) and s.mpp == 0.25
            got = s.read_level(0, 0, 512, 400, 0)
            if name == "d.jpg":
                assert np.abs(got.astype(int) - IMAGE).mean() < 3
            else:
                np.testing.assert_array_equal(got, IMAGE)
            # a window past the image is white there, the image where it overlaps
            part = s.read_level(-10, 390, 30, 30, 0)
            assert (part[:, :10] == 255).all() and (part[10:] == 255).all()
            np.testing.assert_array_equal(part[:10, 10:], got[390:, :20])


def test_resolution_only_from_a_microscope_s_metadata(tmp_path):
    Image.fromarray(IMAGE).save(tmp_path / "none.png")
    Image.fromarray(IMAGE).save(tmp_path / "screen.png", dpi=(72, 72))
    Image.fromarray(IMAGE).save(tmp_path / "scope.png", dpi=(101600, 101600))  # 0.25 µm/px
    tifffile.imwrite(
        tmp_path / "scope.tif", IMAGE, photometric="rgb", resolution=(20000, 20000),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    for name in ("none.png", "screen.png"):
        with pytest.raises(WsiCcrlError) as err:
            Slide.open(tmp_path / name)
        assert str(err.value) == (
            f"{tmp_path / name}: the image's metadata has no resolution (µm/px); pass it with "
            "--mpp (e.g. --mpp 0.25 for 40x, 0.5 for 20x)"
        )
    with Slide.open(tmp_path / "scope.png") as s:
        assert s.mpp == pytest.approx(0.25) and s.info.vendor == "png"
    with Slide.open(tmp_path / "scope.tif") as s:
        assert s.mpp == pytest.approx(0.5) and s.info.vendor == "tiff"
    with Slide.open(tmp_path / "scope.tif", mpp=0.25) as s:
        assert s.mpp == 0.25  # --mpp overrides the file


def test_alpha_grey_and_unusable_samples(tmp_path):
    rgba = np.dstack([IMAGE, np.full(IMAGE.shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0  # transparent corner: outside the scanned area
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with Slide.open(tmp_path / "alpha.png", mpp=0.25) as s:
        got = s.read_level(0, 0, 512, 400, 0)
    assert (got[:50, :50] == 255).all()
    np.testing.assert_array_equal(got[50:], IMAGE[50:])
    grey = cv2.cvtColor(IMAGE, cv2.COLOR_RGB2GRAY)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    with Slide.open(tmp_path / "grey.tif", mpp=0.25) as s:
        np.testing.assert_array_equal(s.read_level(0, 0, 512, 400, 0)[..., 1], grey)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    with pytest.raises(WsiCcrlError, match="deep.png: I;16 samples .* convert it to 8-bit RGB"):
        Slide.open(tmp_path / "deep.png", mpp=0.25)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(200))
    with pytest.raises(WsiCcrlError, match="cannot read slide .*broken.jpg"):
        Slide.open(tmp_path / "broken.jpg", mpp=0.25)


def test_a_large_image_gets_levels_for_its_thumbnail(tmp_path):
    big = np.tile(IMAGE, (3, 3, 1))  # 1536 x 1200: one 4x level of 384 x 300
    Image.fromarray(big).save(tmp_path / "big.png")
    with Slide.open(tmp_path / "big.png", mpp=0.25) as s:
        assert s.level_dimensions == [(1536, 1200), (384, 300)]
        assert s.info.level_downsamples == (1.0, 4.0)
        level1 = s.read_level(0, 0, 384, 300, 1)
        np.testing.assert_array_equal(
            level1, cv2.resize(big, (384, 300), interpolation=cv2.INTER_AREA)
        )
        thumb, ds = s.thumbnail(8.0)
    assert thumb.shape == (38, 48, 3) and ds == pytest.approx(32, rel=0.02)


def test_an_image_gives_the_store_a_lossless_pyramid_of_it_gives(tmp_path):
    """Same cells, crops and level-0 coordinates from the PNG as from a tiled pyramid."""
    Image.fromarray(IMAGE).save(tmp_path / "tile.png")
    pyramid = write_pyramidal_tiff(tmp_path / "tile.tif", IMAGE, 0.25, 2, 128, compression="zlib")
    cfg = SegmentConfig(segmenter="watershed", mpp=0.25, tile_size=256, tile_overlap=32)
    a = segment_slide(tmp_path / "tile.png", tmp_path / "png", cfg)
    b = segment_slide(pyramid, tmp_path / "tif", cfg)
    assert a.attrs["tiles"] == b.attrs["tiles"] and a.attrs["tiles"]["count"] == 9
    assert a.attrs["slide"]["vendor"] == "png" and b.attrs["slide"]["vendor"] == "generic-tiff"
    assert a.n_cells == b.n_cells > 50
    for name in ("centroid", "bbox", "area", "crops", "contour_offsets", "contour_xy"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_a_folder_of_patches_becomes_stores_whose_nuclei_are_the_labelled_ones(tmp_path):
    """CoNSeP patches held back from the bundled segmenter's training, as a folder of PNGs at
    0.25 µm/px: one store per image, level-0 centroids in image pixels (measured F1 0.61 at 1.5 µm)."""
    names = ("train_21_000", "train_21_005", "train_21_010")
    (tmp_path / "tiles").mkdir()
    for name in names:
        shutil.copy(CONSEP_PATCHES / "Images" / f"{name}.png", tmp_path / "tiles")
    cfg = SegmentConfig(segmenter="embedded", mpp=0.25, tile_size=512, device="cpu")
    report = segment_slides([tmp_path / "tiles"], tmp_path / "stores", cfg)
    assert [p.name for p in report.done] == [f"{n}.zarr" for n in names] and report.ok
    total = DetectionScore(0, 0, 0)
    for name, path in zip(names, report.done, strict=True):
        truth = sio.loadmat(CONSEP_PATCHES / "Labels" / f"{name}.mat")["inst_centroid"]
        total = total + detection_score(CellStore.open(path)["centroid"][:], truth)
    assert total.f1 > 0.5, total


def test_a_folder_expands_to_its_slides_and_images(tmp_path):
    for name in ("b.png", "a.JPG", "c.svs", "d.tiff", ".hidden.png", "notes.txt", "x.zarr"):
        (tmp_path / name).touch()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").touch()  # not recursive
    listing = tmp_path / "more.txt"
    listing.write_text("sub/e.png\n")
    got = expand_slide_inputs([tmp_path, listing])
    assert [p.name for p in got] == ["a.JPG", "b.png", "c.svs", "d.tiff", "e.png"]
    with pytest.raises(WsiCcrlError, match=r"no slides or images in folder .*sub2 \(looked for"):
        (tmp_path / "sub2").mkdir()
        expand_slide_inputs([tmp_path / "sub2"])
