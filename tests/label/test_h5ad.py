"""``label --export anndata``: one .h5ad of every cell, read back with anndata and used by scanpy."""

import dataclasses
import json

import anndata
import h5py
import numpy as np
import pytest

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.contours import legacy_shift
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.label.h5ad import write_h5ad
from wsi_ccrl.label.palette import cluster_styles
from wsi_ccrl.label.pipeline import label_stores

CFG = LabelConfig(
    k=3, batch_size=8, device="cpu", export=("geojson", "anndata"), gallery_per_cluster=2,
    overview_max_side=256,
)  # fmt: skip


@pytest.fixture
def labelled(small_store_factory, random_model_file, tmp_path):
    a = small_store_factory("slide_a", max_cells=20)
    b = small_store_factory(
        "slide_b", patches=("train_10_002",), max_cells=30, slide=None, mpp=None
    )
    summary = label_stores(random_model_file, [a, b], tmp_path / "out", CFG)
    return summary, [CellStore.open(a), CellStore.open(b)]


def test_the_h5ad_holds_every_cell_and_scanpy_reads_it(labelled, tmp_path):
    summary, stores = labelled
    assert summary.h5ad == tmp_path / "out" / "cells.h5ad"
    adata = anndata.read_h5ad(summary.h5ad)
    n = sum(s.n_cells for s in stores)
    assert adata.shape == (n, 0)
    obs = adata.obs
    # object IDs: the GeoJSON's, slide by slide, in store order
    ids = []
    for name in ("slide_a", "slide_b"):
        feats = json.loads((tmp_path / "out" / f"{name}.geojson").read_text())["features"]
        ids += [f["id"] for f in feats]
    assert list(obs.index) == list(obs["object_id"]) == ids and obs.index.is_unique
    assert list(obs["slide"].cat.categories) == ["slide_a", "slide_b"]
    sizes = [s.n_cells for s in stores]
    assert (obs["slide"] == "slide_a").sum() == sizes[0]
    np.testing.assert_array_equal(obs["cell"], np.concatenate([np.arange(k) for k in sizes]))
    clusters = np.concatenate([s["cluster"][:] for s in stores])
    assert list(obs["cluster"].cat.categories) == ["0", "1", "2"]
    np.testing.assert_array_equal(obs["cluster"].cat.codes, clusters)
    assert list(obs["cluster_name"].astype(str)) == [f"Cluster {c}" for c in clusters]
    np.testing.assert_array_equal(
        obs["cluster_distance"], np.concatenate([s["cluster_distance"][:] for s in stores])
    )
    area = obs["area_um2"].to_numpy()
    np.testing.assert_allclose(area[: sizes[0]], stores[0]["area"][:] * 0.499**2, rtol=1e-6)
    assert np.isnan(area[sizes[0] :]).all()  # slide b has no µm/px
    np.testing.assert_array_equal(
        obs["seg_type"], np.concatenate([s["seg_type"][:] for s in stores])
    )
    assert "seg_prob" in obs and "seg_type_name" in obs
    # embeddings and centroids, as in the stores
    emb = np.concatenate([s["embedding"][:] for s in stores]).astype(np.float32)
    assert adata.obsm["X_ccrl"].dtype == np.float32
    np.testing.assert_array_equal(adata.obsm["X_ccrl"], emb)
    assert legacy_shift(stores[0].attrs) == 0.5  # these stores predate QuPath's frame: moved
    np.testing.assert_array_equal(
        adata.obsm["spatial"], np.concatenate([s["centroid"][:] + 0.5 for s in stores])
    )
    # uns: colours as scanpy expects, mpp per slide, the model
    styles = summary.styles
    assert list(adata.uns["cluster_colors"]) == [
        "#{:02x}{:02x}{:02x}".format(*c) for c in styles.colours
    ]
    assert adata.uns["mpp"]["slide_a"] == pytest.approx(0.499) and np.isnan(
        adata.uns["mpp"]["slide_b"]
    )
    assert adata.uns["ccrl"]["model_sha256"] == stores[0].attrs["label"]["model_sha256"]
    assert adata.uns["ccrl"]["k"] == 3
    with h5py.File(summary.h5ad) as f:  # chunked, in anndata's array encoding
        assert f["obsm/X_ccrl"].chunks is not None
        assert f["obsm/X_ccrl"].attrs["encoding-type"] == "array"
    assert not list((tmp_path / "out").glob("*.tmp*"))

    # scanpy: neighbours and UMAP on the embedding, a plot coloured by cluster with our colours
    import scanpy as sc

    sc.pp.neighbors(adata, n_neighbors=10, use_rep="X_ccrl", random_state=0)
    sc.tl.umap(adata, random_state=0)
    assert adata.obsm["X_umap"].shape == (n, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    assert adata.obsp["connectivities"].shape == (n, n)
    sc.pl.umap(adata, color="cluster", show=False)
    assert list(adata.uns["cluster_colors"]) == list(
        anndata.read_h5ad(summary.h5ad).uns["cluster_colors"]
    )


def test_stores_without_embeddings_say_run_label_first(small_store_factory, tmp_path):
    store = CellStore.open(small_store_factory("raw", max_cells=5))
    with pytest.raises(WsiCcrlError, match="run label first") as err:
        write_h5ad([store], ["raw"], cluster_styles(3), tmp_path / "x.h5ad")
    assert "\n" not in str(err.value) and not list(tmp_path.glob("x.h5ad*"))


def test_sharded_runs_name_their_file(labelled, random_model_file, tmp_path):
    _, stores = labelled
    km = tmp_path / "km.npz"
    cfg = dataclasses.replace(CFG, export=("anndata",))
    label_stores(random_model_file, [s.path for s in stores], tmp_path / "fit", cfg, save_kmeans=km)
    shard = label_stores(
        random_model_file, [s.path for s in stores], tmp_path / "s", cfg, kmeans_path=km,
        shard=(1, 2),
    )  # fmt: skip
    assert (
        shard.h5ad.name == "cells-shard1of2.h5ad" and shard.report.name == "report-shard1of2.html"
    )
    assert anndata.read_h5ad(shard.h5ad).n_obs == stores[1].n_cells
