"""The K-means feature maps: the joint read-out."""

from __future__ import annotations

import numpy as np
import pytest


def test_joint_weighs_the_embedding_and_the_descriptors_alike(tmp_path):
    """Each block gets unit total variance on the fitting cells, the map is saved with the
    centroids, and a loaded model assigns as the fitted one."""
    from wsi_ccrl.label.cluster import KMeansModel
    from wsi_ccrl.label.features import N_DESCRIPTORS, FeatureSpace

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 32)).astype(np.float32)
    desc = (rng.normal(size=(300, N_DESCRIPTORS)) * [500, 9, 9, 0.2, 40, 40, 40] + 100).astype(
        np.float32
    )
    x = np.hstack([emb, desc])
    out = FeatureSpace("joint").fit(x).transform(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    assert out[:, :32].var(0).sum() == pytest.approx(1.0, rel=1e-3)
    assert out[:, 32:].var(0).sum() == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(out[:, 32:].std(0), 1 / np.sqrt(N_DESCRIPTORS), rtol=1e-3)
    km = KMeansModel(3, seed=0, backend="sklearn", features="joint").fit(x)
    loaded = KMeansModel.load(km.save(tmp_path / "km.npz"))
    assert np.array_equal(km.predict(x)[0], loaded.predict(x)[0])
    with pytest.raises(ValueError, match="descriptors"):
        FeatureSpace("joint").fit(emb[:, :5])
