"""DCAE and InfoGAN baselines on real CoNSeP crops: they learn (reconstruction, recoverable codes),
give finite features of the right shape, and are deterministic from their seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wsi_ccrl.bench import baselines
from wsi_ccrl.bench.generative import DCAE, InfoGAN
from wsi_ccrl.errors import WsiCcrlError


@pytest.fixture
def cells(tile10_cells):
    return tile10_cells


def test_registered_as_baselines():
    assert {"dcae", "infogan"} <= set(baselines.baseline_names())
    dcae = baselines.make_baseline("dcae", seed=3, device="cpu")
    infogan = baselines.make_baseline("infogan", seed=4, device="cpu")
    assert isinstance(dcae, DCAE) and (dcae.name, dcae.seed) == ("dcae", 3)
    assert isinstance(infogan, InfoGAN) and (infogan.name, infogan.seed) == ("infogan", 4)


def test_dcae_learns_to_reconstruct(cells):
    model = DCAE(steps=150, batch_size=32).fit(cells)
    x = cells.crops.astype(np.float32) / 255
    rec = model.reconstruct(cells.crops).transpose(0, 2, 3, 1)
    mse = float(((rec - x) ** 2).mean())
    mean_crop_mse = float(((x - x.mean(0)) ** 2).mean())
    assert len(model.losses_) == 150
    assert mse < 0.25 * model.losses_[0]  # far below the untrained network's error
    assert mse < 0.9 * mean_crop_mse  # the code carries more than the average crop


def test_dcae_features_deterministic(cells):
    f = DCAE(steps=3, seed=0).fit(cells).transform(cells)
    assert f.shape == (len(cells), 64) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.array_equal(f, DCAE(steps=3, seed=0).fit(cells).transform(cells))
    assert not np.allclose(f, DCAE(steps=3, seed=1).fit(cells).transform(cells))


def test_infogan_codes_are_recoverable(cells):
    model = InfoGAN(steps=40, batch_size=64).fit(cells)
    assert np.isfinite(model.history_).all()
    images, cat, cont = model.generate(500, seed=123)  # fresh samples, not the training draws
    assert images.shape == (500, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.05
    probs, means = model.predict_codes(images)
    assert probs.shape == (500, 10) and means.shape == (500, 2)
    accuracy = (probs.argmax(1) == cat).float().mean().item()
    assert accuracy > 0.3  # chance is 0.1: the mutual-information term works
    f = model.transform(cells)
    assert f.shape == (len(cells), 128) and f.dtype == np.float32 and np.isfinite(f).all()


def test_infogan_features_deterministic(cells):
    f = InfoGAN(steps=3, seed=0).fit(cells).transform(cells)
    assert f.shape == (len(cells), 128) and np.isfinite(f).all()
    assert np.array_equal(f, InfoGAN(steps=3, seed=0).fit(cells).transform(cells))
    assert not np.allclose(f, InfoGAN(steps=3, seed=1).fit(cells).transform(cells))


def test_crop_sizes(cells):
    small = dataclasses.replace(cells, crops=np.ascontiguousarray(cells.crops[:, ::2, ::2]))
    assert DCAE(steps=2).fit(small).transform(small).shape == (len(cells), 64)
    gan = InfoGAN(steps=2).fit(small)
    assert gan.generate(4)[0].shape == (4, 3, 16, 16)
    assert gan.transform(small).shape == (len(cells), 128)
    odd = dataclasses.replace(cells, crops=np.ascontiguousarray(cells.crops[:, :20, :20]))
    with pytest.raises(WsiCcrlError, match="multiple of 8"):
        DCAE(steps=2).fit(odd)
