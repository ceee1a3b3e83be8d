import cv2
import numpy as np
import pytest
from conftest import SAMPLE_SLIDE

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.slide import Slide, write_pyramidal_tiff


def test_open_sample_slide_metadata():
    with Slide.open(SAMPLE_SLIDE) as s:
        assert s.backend == "openslide"
        assert s.dimensions == (2220, 2967)
        assert s.mpp == pytest.approx(0.499)
        assert s.info.objective_power == 20 and s.info.vendor == "aperio"
        assert s.info.attrs()["dimensions"] == [2220, 2967]


def test_slide_without_mpp_needs_the_option(no_mpp_slide):
    with pytest.raises(WsiCcrlError, match="--mpp"):
        Slide.open(no_mpp_slide)
    with Slide.open(no_mpp_slide, mpp=0.5) as s:
        assert s.mpp == 0.5 and len(s.info.level_downsamples) == 2


def test_bad_files_give_one_clear_error(tmp_path):
    with pytest.raises(WsiCcrlError, match="not found"):
        Slide.open(tmp_path / "missing.svs")
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    with pytest.raises(WsiCcrlError, match="cannot read slide"):
        Slide.open(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("not a slide")
    with pytest.raises(WsiCcrlError, match="unsupported"):
        Slide.open(text)
    with pytest.raises(WsiCcrlError, match="not a slide file"):
        Slide.open(tmp_path)


def test_pyramidal_tiff_round_trip(tmp_path):
    with Slide.open(SAMPLE_SLIDE) as s:
        region = s.read_level(600, 900, 512, 512, 0)
    path = write_pyramidal_tiff(tmp_path / "p.tif", region, mpp=0.25, levels=3, tile=128)
    with Slide.open(path) as t:
        assert t.dimensions == (512, 512) and t.mpp == pytest.approx(0.25)
        assert t.info.level_downsamples == (1.0, 2.0, 4.0)
        back = t.read_level(0, 0, 512, 512, 0)
        assert np.abs(back.astype(int) - region).mean() < 4  # JPEG tiles
        # a 4x smaller read comes from level 2, resampled, and maps back to level 0 exactly
        img, (ox, oy, sx, sy) = t.read_scaled(64, 32, 320, 288, 64, 64)
        assert img.shape == (64, 64, 3) and (ox, oy) == (64, 32) and sx == sy == 4.0
        ref = cv2.resize(back[32:288, 64:320], (64, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(img.astype(int) - ref).mean() < 8


def test_ome_tiff_resolution_comes_through_tiatoolbox(tmp_path):
    """OpenSlide opens an OME-TIFF as generic TIFF without its µm/px; TIAToolbox reads the OME-XML."""
    import tifffile

    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        meta = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tif.write(image, photometric="rgb", tile=(128, 128), subifds=1, metadata=meta)
        tif.write(image[::2, ::2].copy(), photometric="rgb", tile=(128, 128), subfiletype=1)
    with Slide.open(path) as s:
        assert s.backend == "tiatoolbox" and s.mpp == 0.5 and s.dimensions == (400, 300)
        np.testing.assert_array_equal(s.read_level(10, 20, 30, 40, 0), image[20:60, 10:40])
        img, _ = s.read_scaled(-8, -8, 92, 92, 50, 50)
        assert (img[0, 0] == 255).all() and img.shape == (50, 50, 3)


def test_read_scaled_matches_a_resized_level0_read():
    with Slide.open(SAMPLE_SLIDE) as s:
        img, (ox, oy, sx, sy) = s.read_scaled(1000.0, 1200.0, 1100.0, 1300.0, 200, 200)
        ref = cv2.resize(s.read_level(1000, 1200, 100, 100, 0), (200, 200))
        assert (ox, oy, sx, sy) == (1000.0, 1200.0, 0.5, 0.5)
        # same sampling grid as cv2.resize (pixel centres), apart from rounding at the edges
        assert np.abs(img[2:-2, 2:-2].astype(int) - ref[2:-2, 2:-2]).max() <= 1
        # a fractional origin shifts the samples, it is not rounded away
        shifted, mapping = s.read_scaled(1000.5, 1200.0, 1100.5, 1300.0, 200, 200)
        assert mapping[0] == 1000.5
        np.testing.assert_allclose(shifted[:, :-2].astype(int), img[:, 1:-1], atol=1)
        outside = s.read_level(-50, -50, 40, 40, 0)
        assert (outside == 255).all()  # white beyond the slide
