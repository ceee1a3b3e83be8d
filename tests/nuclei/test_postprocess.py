"""Maps -> instances: touching nuclei split by the HV maps, empty maps, probabilities."""

from __future__ import annotations

import numpy as np

from wsi_ccrl.nuclei.postprocess import PostprocessConfig, instance_probs, maps_to_instances
from wsi_ccrl.nuclei.targets import hv_targets


def _discs(centres, radius, size=96):
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.int32)
    for i, (cx, cy) in enumerate(centres, start=1):
        inst[((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2) & (inst == 0)] = i
    return inst


def _centroids(labels):
    ids = np.arange(1, labels.max() + 1)
    ys, xs = np.nonzero(labels)
    n = np.bincount(labels[ys, xs], minlength=ids.size + 1)[1:]
    cx = np.bincount(labels[ys, xs], weights=xs, minlength=ids.size + 1)[1:] / n
    cy = np.bincount(labels[ys, xs], weights=ys, minlength=ids.size + 1)[1:] / n
    return np.stack([cx, cy], 1)


def test_touching_nuclei_are_split_by_the_hv_maps():
    # two overlapping discs form ONE foreground blob; only the HV maps can split them
    inst = _discs([(35, 48), (55, 48), (70, 20)], radius=11)
    fg = (inst > 0).astype(np.float32)
    labels = maps_to_instances(fg, hv_targets(inst))
    assert labels.dtype == np.int32
    assert labels.max() == 3
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # consecutive ids
    found = _centroids(labels)
    true = _centroids(inst)
    dist = np.linalg.norm(found[:, None] - true[None], axis=2).min(axis=0)
    assert (dist < 3).all()
    # every foreground pixel is assigned: the watershed grows markers back to the blob
    assert ((labels > 0) == (inst > 0)).mean() > 0.99


def test_a_small_nucleus_whose_interior_is_all_border_still_counts():
    inst = _discs([(20, 20)], radius=3)  # ~29 px: the HV border band covers all of it
    fg = (inst > 0).astype(np.float32)
    labels = maps_to_instances(fg, hv_targets(inst), PostprocessConfig(marker_open=5))
    assert labels.max() == 1 and (labels > 0).sum() == (inst > 0).sum()


def test_empty_and_tiny_foreground_give_no_instances():
    hv = np.zeros((2, 32, 32), np.float32)
    assert maps_to_instances(np.zeros((32, 32), np.float32), hv).max() == 0
    speck = np.zeros((32, 32), np.float32)
    speck[5:7, 5:7] = 1.0  # 4 px < min_area
    assert maps_to_instances(speck, hv, PostprocessConfig(min_area=10)).max() == 0


def test_instance_probs_are_mean_foreground_probability():
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    prob = np.array([[0.1, 0.8, 0.6], [0.9, 0.5, 0.0]], np.float32)
    np.testing.assert_allclose(instance_probs(labels, prob), [0.05, 0.7, 0.7], atol=1e-6)


def test_fill_holes_equals_scipy():
    from scipy import ndimage as ndi

    from wsi_ccrl.nuclei.postprocess import fill_holes

    rng = np.random.default_rng(0)
    for p in (0.3, 0.5, 0.7, 0.9):
        mask = ndi.binary_opening(rng.random((120, 97)) < p)
        assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
