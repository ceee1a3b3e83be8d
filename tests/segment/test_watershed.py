import json

import numpy as np
import pytest
import scipy.io as sio
from conftest import CONSEP_PATCHES
from PIL import Image

from wsi_ccrl.config import WatershedConfig
from wsi_ccrl.segment.evaluate import DetectionScore, detection_score
from wsi_ccrl.segment.watershed import WatershedSegmenter

GLASS = (235, 215, 230)  # pale pink background
HEMATOXYLIN = (70, 40, 130)  # dark purple nuclei


def _discs(centres, radius, shape=(96, 96)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.empty((*shape, 3), np.uint8)
    img[:] = GLASS
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = HEMATOXYLIN
    return img


def test_touching_nuclei_are_split_and_measured():
    # two discs of radius 10 px (2.5 µm at 0.25 µm/px) touching at the middle, one apart
    img = _discs([(30, 40), (49, 40), (70, 75)], radius=10)
    nuc = WatershedSegmenter().segment([img])[0]
    assert len(nuc) == 3
    order = np.argsort(nuc.centroid[:, 0])
    np.testing.assert_allclose(nuc.centroid[order], [[30, 40], [49, 40], [70, 75]], atol=1.5)
    assert np.all((nuc.area > 200) & (nuc.area < 400))  # pi * 10² = 314
    assert np.all(nuc.seg_type == 0) and np.all((nuc.seg_prob > 0) & (nuc.seg_prob <= 1))


def test_blank_tile_and_size_filter():
    seg = WatershedSegmenter()
    assert len(seg.segment([np.full((64, 64, 3), 240, np.uint8)])[0]) == 0
    specks = _discs([(20, 20), (60, 60)], radius=2)  # 12 px² = 0.8 µm², below min_area
    assert len(seg.segment([specks])[0]) == 0
    # the same tile at 1 µm/px: 10 px radius is now 314 µm², still a plausible nucleus
    big = WatershedSegmenter(WatershedConfig(max_area_um2=200), mpp=1.0)
    assert len(big.segment([_discs([(48, 48)], radius=10)])[0]) == 0
    json.dumps(seg.describe())


def test_detection_f1_on_consep_patches():
    """A regression floor on real H&E (the benchmark reports the full number)."""
    images = sorted((CONSEP_PATCHES / "Images").glob("*.png"))[::3]  # 9 patches of 8 tiles
    seg = WatershedSegmenter()
    total = DetectionScore(0, 0, 0)
    for path in images:
        truth = sio.loadmat(CONSEP_PATCHES / "Labels" / f"{path.stem}.mat")["inst_centroid"]
        nuc = seg.segment([np.asarray(Image.open(path).convert("RGB"))])[0]
        total = total + detection_score(nuc.centroid, truth)
    assert total.f1 > 0.4, total
    assert total.precision > 0.4 and total.recall > 0.3


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8)])
def test_rejects_non_rgb(bad):
    with pytest.raises((ValueError, IndexError)):
        WatershedSegmenter().segment([bad])
