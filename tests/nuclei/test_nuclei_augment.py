"""Training views: geometry shared by image and labels, colour changes, normalisation, batches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONSEP_PATCHES, needs

from wsi_ccrl.io.stain import CONSEP_REFERENCE, lab_stats, lab_to_rgb, rgb_to_lab
from wsi_ccrl.nuclei.augment import (
    AugmentConfig,
    jpeg_roundtrip,
    make_batch,
    residual_jitter,
    sample_view,
    stain_augment,
)
from wsi_ccrl.nuclei.data import LabelledImage, load_source


@pytest.fixture(scope="module")
def tile21():
    if not CONSEP_PATCHES.exists():
        pytest.skip(f"{CONSEP_PATCHES} not available (real CoNSeP patches, ../shared/data)")
    return load_source(CONSEP_PATCHES, "consep", names={"tile21"})


def _id_coloured(item: LabelledImage) -> LabelledImage:
    """The same labels, with an image whose colour encodes the instance id."""
    palette = np.random.default_rng(0).integers(0, 256, (item.inst.max() + 1, 3)).astype(np.uint8)
    return LabelledImage(item.name, item.source, item.group, palette[item.inst], item.inst)


@needs(CONSEP_PATCHES)
def test_views_move_image_and_labels_together(tile21):
    item = _id_coloured(tile21[0])
    palette = {int(i): item.image[item.inst == i][0] for i in np.unique(item.inst)}
    rng = np.random.default_rng(1)
    for _ in range(6):
        image, inst = sample_view(item, 96, rng, AugmentConfig())
        assert image.shape == (96, 96, 3) and inst.shape == (96, 96)
        # inside regions of one label (away from borders, where colours interpolate) the colour
        # is that label's: the same warp moved both
        same = np.ones_like(inst, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                same &= np.roll(inst, (dy, dx), (0, 1)) == inst
        same[[0, -1], :] = same[:, [0, -1]] = False
        expected = np.array([palette[int(i)] for i in inst[same]])
        assert np.abs(image[same].astype(int) - expected).max() <= 2
        assert set(np.unique(inst)) <= set(palette)


@needs(CONSEP_PATCHES)
def test_zoom_changes_nucleus_size(tile21):
    item = tile21[0]
    rng = np.random.default_rng(0)
    big = sample_view(item, 128, rng, AugmentConfig(scale=0.0))[1]
    small_cfg = AugmentConfig(scale=1.0)
    areas = []
    for _ in range(20):
        inst = sample_view(item, 128, rng, small_cfg)[1]
        areas.append((inst > 0).sum() / max(len(np.unique(inst)) - 1, 1))
    base = (big > 0).sum() / (len(np.unique(big)) - 1)
    assert max(areas) > 1.3 * base or min(areas) < base / 1.3


@needs(CONSEP_PATCHES)
def test_stain_augment_changes_colour_not_geometry_and_follows_the_seed(tile21):
    image = tile21[0].image
    a = stain_augment(image, 0.3, np.random.default_rng(5))
    b = stain_augment(image, 0.3, np.random.default_rng(5))
    c = stain_augment(image, 0.3, np.random.default_rng(6))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1 and np.abs(a.astype(int) - image).mean() > 1
    # the nuclei stay where they were: dark pixels of the original are still darker than average
    dark = image.mean(2) < np.percentile(image.mean(2), 20)
    assert a.mean(2)[dark].mean() < a.mean(2).mean() - 20
    j = jpeg_roundtrip(image, np.random.default_rng(0))
    assert j.shape == image.shape and 0.2 < np.abs(j.astype(int) - image).mean() < 8


def test_residual_jitter_moves_lab_statistics_within_bounds():
    rng = np.random.default_rng(0)
    lab = np.stack(
        np.broadcast_arrays(
            rng.normal(CONSEP_REFERENCE.mean[0], 12, (64, 64)),
            rng.normal(CONSEP_REFERENCE.mean[1], 6, (64, 64)),
            rng.normal(CONSEP_REFERENCE.mean[2], 7, (64, 64)),
        ),
        -1,
    ).astype(np.float32)
    image = lab_to_rgb(lab)
    before = lab_stats(rgb_to_lab(image))[0]
    shifts = np.array(
        [
            lab_stats(rgb_to_lab(residual_jitter(image, CONSEP_REFERENCE, 0.3, rng)))[0] - before
            for _ in range(6)
        ]
    )
    assert np.abs(shifts).max() > 1  # it moves
    assert np.abs(shifts[:, 0]).max() < 12 and np.abs(shifts[:, 1:]).max() < 8  # within bounds


@needs(CONSEP_PATCHES)
def test_make_batch_targets_and_normalisation(tile21):
    rng = np.random.default_rng(0)
    plain = AugmentConfig(stain=0.0, jpeg=0.0, residual=0.0)
    x, fg, hv = make_batch(tile21[:4], 128, rng, plain, CONSEP_REFERENCE)
    assert x.shape == (4, 3, 128, 128) and fg.shape == (4, 1, 128, 128) and hv.shape[1] == 2
    assert x.min() >= 0 and x.max() <= 1 and 0.02 < fg.mean() < 0.8
    # targets are computed after the geometry: zero outside nuclei, full range inside
    assert (hv * (1 - fg)).abs().max() == 0 and hv.max() == 1
    for img in (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8):
        mean, _, _ = lab_stats(rgb_to_lab(np.ascontiguousarray(img)))
        np.testing.assert_allclose(mean, CONSEP_REFERENCE.mean, atol=4)
    # with augmentation the residual jitter leaves crops around the reference, not on it
    x, _, _ = make_batch(tile21 * 2, 128, rng, AugmentConfig(), CONSEP_REFERENCE)
    means = [
        lab_stats(rgb_to_lab(np.ascontiguousarray(i)))[0]
        for i in (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    ]
    off = np.abs(np.array(means) - CONSEP_REFERENCE.mean)
    assert off.max() > 2 and off[:, 0].max() < 16
