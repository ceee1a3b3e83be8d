import json

import numpy as np
import pytest

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.label.cluster import (
    KMeansModel,
    fit_stores,
    predict_store,
    read_rows,
    sample_indices,
)


def blobs(n_per=60, k=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, dim))
    x = np.concatenate([c + rng.normal(0, 0.5, (n_per, dim)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_fit_returns_self_and_finds_blobs():
    x, truth = blobs()
    km = KMeansModel(3, seed=0, backend="sklearn", features="raw")
    assert km.fit(x) is km
    assert km.cluster_centers_.shape == (3, 16) and km.cluster_centers_.dtype == np.float32
    assert (km.n_features_in_, km.n_fit_, km.backend_) == (16, 180, "sklearn")
    labels, dist = km.predict(x)
    assert labels.dtype == np.int16 and dist.dtype == np.float32
    # every blob is one cluster
    assert all(len(np.unique(labels[truth == t])) == 1 for t in range(3))
    assert len(np.unique(labels)) == 3


def test_predict_is_the_nearest_centroid():
    x, _ = blobs(seed=1)
    km = KMeansModel(4, seed=0, backend="sklearn", features="raw").fit(x)
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - km.cluster_centers_[None], axis=2)
    labels, dist = km.predict(x)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-5, atol=1e-4)
    # a row's result does not depend on its batch
    one = np.stack([km.predict(x[i : i + 1])[0][0] for i in range(0, len(x), 17)])
    np.testing.assert_array_equal(one, labels[::17])


def test_minibatch_for_large_samples_and_seeded():
    x, _ = blobs(n_per=200)
    a = KMeansModel(3, seed=5, backend="sklearn", minibatch_above=100, features="l2").fit(x)
    b = KMeansModel(3, seed=5, backend="sklearn", minibatch_above=100, features="l2").fit(x)
    assert a.backend_ == "sklearn-minibatch"
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_save_load_round_trip(tmp_path):
    x, _ = blobs()
    km = KMeansModel(3, seed=0, backend="sklearn", features="l2").fit(x)
    path = km.save(tmp_path / "km.npz", encoder="momentum", model="run/model.pt")
    assert not list(tmp_path.glob("*.tmp*"))
    loaded = KMeansModel.load(path)
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    assert (loaded.k, loaded.n_features_in_, loaded.n_fit_) == (3, 16, 180)
    assert loaded.info_["encoder"] == "momentum" and loaded.info_["model"] == "run/model.pt"
    np.testing.assert_array_equal(loaded.predict(x)[0], km.predict(x)[0])


def test_feature_map_is_fitted_saved_and_applied(tmp_path):
    """``whiten``: K-means runs in the whitened space, and a saved model applies the same map."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 32)) * 4
    x = (centres[rng.integers(0, 3, 300)] + rng.normal(size=(300, 32))).astype(np.float32)
    km = KMeansModel(3, seed=0, backend="sklearn", features="whiten").fit(x)
    assert km.cluster_centers_.shape == (3, 32)  # dims <= input: all 32 components kept
    np.testing.assert_allclose(np.linalg.norm(km.space_.transform(x), axis=1), 1, atol=1e-5)
    loaded = KMeansModel.load(km.save(tmp_path / "w.npz"))
    assert loaded.space_.how == "whiten"
    np.testing.assert_array_equal(loaded.predict(x)[0], km.predict(x)[0])
    np.testing.assert_allclose(loaded.predict(x)[1], km.predict(x)[1], rtol=1e-6)
    # whitened and L2-normalised: the three blobs stay three clusters
    labels = km.predict(x)[0]
    assert len(np.unique(labels)) == 3


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(WsiCcrlError, match="not found"):
        KMeansModel.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(WsiCcrlError, match="is not a K-means file"):
        KMeansModel.load(tmp_path / "junk.npz")
    meta = {"format": "wsi-ccrl-kmeans", "k": 4, "dim": 16}
    np.savez(tmp_path / "bad.npz", centers=np.zeros((3, 16)), meta=np.array(json.dumps(meta)))
    with pytest.raises(WsiCcrlError, match="do not match k/dim"):
        KMeansModel.load(tmp_path / "bad.npz")


def test_bad_inputs():
    with pytest.raises(WsiCcrlError, match="at least k=5"):
        KMeansModel(5, features="l2").fit(np.zeros((4, 2), np.float32))
    with pytest.raises(WsiCcrlError, match="NaN"):
        KMeansModel(2, features="l2").fit(np.full((4, 2), np.nan, np.float32))
    km = KMeansModel(2, backend="sklearn", features="l2").fit(np.eye(4, dtype=np.float32))
    with pytest.raises(WsiCcrlError, match="dimension 3"):
        km.predict(np.zeros((2, 3)))


def test_sample_indices_proportional_sorted_seeded():
    picks = sample_indices([1000, 3000, 0, 6000], 1000, seed=3)
    assert [len(p) for p in picks] == pytest.approx([100, 300, 0, 600], abs=45)
    assert sum(len(p) for p in picks) == 1000
    for p, size in zip(picks, [1000, 3000, 0, 6000], strict=True):
        assert np.all(np.diff(p) > 0) and (p.size == 0 or (p.min() >= 0 and p.max() < size))
    again = sample_indices([1000, 3000, 0, 6000], 1000, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(picks, again, strict=True))
    everything = sample_indices([5, 7], 100, seed=0)
    assert [p.tolist() for p in everything] == [list(range(5)), list(range(7))]


def test_fit_and_predict_on_stores(small_store_factory):
    """Sampled rows come from the right store rows; predictions land in the store chunk-wise."""
    stores = [
        CellStore.open(small_store_factory(n, patches=(p,), max_cells=30), mode="r+")
        for n, p in (("a", "train_10_000"), ("b", "train_10_001"))
    ]
    for s in stores:  # a 2-d "embedding": the centroid, so clusters are spatial
        s.write_column("embedding", np.asarray(s["centroid"][:], np.float16))
        rows = np.array([0, 5, s.n_cells - 1])
        np.testing.assert_array_equal(read_rows(s["embedding"], rows), s["embedding"][:][rows])
    km = fit_stores(
        KMeansModel(3, seed=0, backend="sklearn", features="l2"), stores, fit_sample=40, seed=1
    )
    assert km.n_fit_ == 40 and km.info_["fit_sample"] == 40
    for s in stores:
        clusters = predict_store(km, s, rows=7)  # spans not aligned to the store's chunks
        expected = km.predict(np.asarray(s["embedding"][:]))
        np.testing.assert_array_equal(clusters, expected[0])
        np.testing.assert_array_equal(s["cluster"][:], expected[0])
        np.testing.assert_array_equal(s["cluster_distance"][:], expected[1])
        assert s["cluster"].dtype == np.int16 and s["cluster_distance"].dtype == np.float32
