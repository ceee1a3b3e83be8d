"""The per-step cosine schedule with linear warm-up."""

from __future__ import annotations

import numpy as np

from wsi_ccrl.schedule import cosine_schedule


def test_shape_warmup_and_decay():
    s = cosine_schedule(1e-3, 0.0, epochs=10, steps_per_epoch=5, warmup_epochs=2)
    assert s.shape == (50,)
    assert s[0] == 0.0
    assert np.all(np.diff(s[:10]) > 0)  # linear warm-up
    assert np.allclose(np.diff(s[:10]), 1e-4)
    assert s[10] == 1e-3  # the peak right after warm-up
    assert np.all(np.diff(s[10:]) < 0)  # cosine decay
    assert 0.0 < s[-1] < 1e-5
    assert abs(s[10 + 20] - 0.5e-3) < 1e-12  # half-way through the cosine


def test_no_warmup_and_warmup_longer_than_training():
    s = cosine_schedule(0.5, 0.1, epochs=3, steps_per_epoch=4, warmup_epochs=0)
    assert s[0] == 0.5 and s.shape == (12,)
    s = cosine_schedule(0.5, 0.1, epochs=2, steps_per_epoch=3, warmup_epochs=5)
    assert s.shape == (6,)
    assert np.all(np.diff(s) > 0) and s[-1] < 0.5


def test_a_fraction_of_an_epoch_of_warmup():
    s = cosine_schedule(1e-3, 0.0, epochs=2, steps_per_epoch=8, warmup_epochs=0.25)
    assert np.allclose(s[:2], [0.0, 0.5e-3])  # two steps of warm-up
    assert s[2] == 1e-3 and np.all(np.diff(s[2:]) < 0)
