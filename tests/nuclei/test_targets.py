"""HoVer-Net targets against the paper's per-nucleus definition; the loss on perfect/wrong maps."""

from __future__ import annotations

import numpy as np
import torch

from wsi_ccrl.nuclei.targets import hovernet_loss, hv_targets


def _hv_reference(inst):
    """HoVer-Net's target, one nucleus at a time (the paper's definition)."""
    out = np.zeros((2,) + inst.shape, np.float32)
    for i in np.unique(inst)[1:]:
        ys, xs = np.nonzero(inst == i)
        for axis, c in enumerate((xs, ys)):
            d = c - c.mean()
            d = np.where(
                d < 0, d / -d.min() if d.min() < 0 else 0, d / d.max() if d.max() > 0 else 0
            )
            out[axis][ys, xs] = d
    return out


def test_hv_targets_match_the_per_nucleus_definition():
    rng = np.random.default_rng(0)
    inst = np.zeros((40, 40), np.int32)
    for i in range(1, 8):
        y, x = rng.integers(0, 32, 2)
        inst[y : y + rng.integers(2, 9), x : x + rng.integers(1, 9)] = i * 3  # gaps in the ids
    hv = hv_targets(inst)
    np.testing.assert_allclose(hv, _hv_reference(inst), atol=1e-5)
    assert hv.min() >= -1 and hv.max() <= 1
    assert (hv[:, inst == 0] == 0).all()


def test_loss_is_small_for_perfect_maps_and_large_for_wrong_ones():
    inst = np.zeros((32, 32), np.int32)
    inst[4:14, 6:16], inst[18:30, 10:24] = 1, 2
    fg = torch.from_numpy(inst > 0).float()[None, None]
    hv = torch.from_numpy(hv_targets(inst))[None]
    perfect = torch.cat([(fg * 2 - 1) * 20, hv], 1)
    good, parts = hovernet_loss(perfect, fg, hv)
    bad, _ = hovernet_loss(torch.cat([-perfect[:, :1], -hv], 1), fg, hv)
    assert parts["mse"] == 0 and parts["msge"] == 0
    assert good.item() < 0.01 < 1.0 < bad.item()
