import numpy as np
import pytest
from conftest import SAMPLE_SLIDE

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.slide import Slide
from wsi_ccrl.io.tiles import parse_roi, plan_tiles, tissue_mask


def test_tissue_mask_finds_tissue_and_not_glass():
    with Slide.open(SAMPLE_SLIDE) as s:
        thumb, ds = s.thumbnail(8.0)
    assert ds == pytest.approx(8.0 / 0.499, rel=0.01)
    mask = tissue_mask(thumb)
    assert 0.15 < mask.mean() < 0.6
    assert not tissue_mask(np.full((50, 50, 3), 242, np.uint8)).any()


def test_tile_cores_partition_the_roi():
    plan = plan_tiles((1000, 800), 0.5, 0.25, tile_size=128, overlap=16, roi=(100, 50, 301, 203))
    cores = np.array([t.core for t in plan])
    # every target pixel of the ROI's box is in exactly one core
    x0, y0 = cores[:, 0].min(), cores[:, 1].min()
    cover = np.zeros((cores[:, 3].max() - y0, cores[:, 2].max() - x0), int)
    for a, b, c, d in cores:
        cover[b - y0 : d - y0, a - x0 : c - x0] += 1
    assert (cover == 1).all()
    assert (x0, y0) == (200, 100) and cover.shape == (406, 602)
    t = plan.tiles[0]
    assert t.seg == (t.core[0] - 16, t.core[1] - 16, t.core[0] + 112, t.core[1] + 112)
    assert plan.attrs()["count"] == len(plan) == plan.n_grid


def test_tiles_without_tissue_are_dropped():
    mask = np.zeros((100, 100), bool)
    mask[:50, :50] = True  # tissue in the top-left quarter; 10 level-0 px per mask px
    plan = plan_tiles(
        (1000, 1000), 0.5, 0.5, 276, 10, mask=mask, mask_downsample=10.0, min_tissue_fraction=0.5
    )
    assert plan.n_grid == 16 and len(plan) == 4
    assert all(t.core[2] <= 512 and t.core[3] <= 512 for t in plan)


def test_tile_boxes_are_trimmed_to_the_tissue_they_hold():
    mask = np.zeros((64, 64), bool)  # 16 target px per mask px (level 0 = target)
    mask[20:24, 10:12] = True  # tissue at target x 160-192, y 320-384
    plan = plan_tiles((1024, 1024), 0.25, 0.25, 1024, 64, crop_margin=8, mask=mask,
                      mask_downsample=16.0)  # fmt: skip
    (t,) = plan.tiles  # one core 0-896; its box, -64-960, trimmed in 128 px steps
    assert t.core == (0, 0, 896, 896)
    assert t.seg == (64, 192, 320, 448)  # holds the tissue grown by the 64 px overlap
    assert t.read == (56, 184, 328, 456)  # the box + the crop margin
    full = plan_tiles((1024, 1024), 0.25, 0.25, 1024, 64, mask=np.ones((64, 64), bool),
                      mask_downsample=16.0)  # fmt: skip
    assert full.tiles[0].seg == (-64, -64, 960, 960)  # tissue everywhere: nothing trimmed


def test_roi_errors():
    assert parse_roi("1,2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "0,0,-5,5"):
        with pytest.raises(WsiCcrlError, match="--roi"):
            parse_roi(bad)
    with pytest.raises(WsiCcrlError, match="outside"):
        plan_tiles((100, 100), 0.5, 0.25, 128, 16, roi=(200, 200, 10, 10))


def test_tiles_on_scattered_tissue_are_split_in_quarters():
    """Tissue in two far corners of one 1024 tile: two trimmed quarter tiles instead of one box
    spanning the glass between them; the cores of the kept tiles still own every tissue pixel."""
    mask = np.zeros((64, 64), bool)  # 16 target px per mask px (level 0 = target)
    mask[2:6, 2:6] = True  # tissue at target 32-96
    mask[50:54, 50:54] = True  # and at 800-864
    plan = plan_tiles((1024, 1024), 0.25, 0.25, 1024, 64, mask=mask, mask_downsample=16.0)
    assert [t.core for t in plan] == [(0, 0, 448, 448), (448, 448, 896, 896)]
    assert [t.seg for t in plan] == [(-64, -64, 256, 256), (640, 640, 960, 960)]
    assert [t.index for t in plan] == [0, 1]
    compact = np.zeros((64, 64), bool)
    compact[10:46, 10:46] = True  # one block across the middle: the whole tile stays one box
    (t,) = plan_tiles((1024, 1024), 0.25, 0.25, 1024, 64, mask=compact, mask_downsample=16.0)
    assert t.core == (0, 0, 896, 896)
