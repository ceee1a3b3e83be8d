import dataclasses

import geojson
import numpy as np
import pytest
import torch
from PIL import Image

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.model_io import save_model
from wsi_ccrl.config import LabelConfig, load_section
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.io.store import CellStore, CellStoreWriter
from wsi_ccrl.label.cluster import KMeansModel, file_sha256
from wsi_ccrl.label.pipeline import label_stores
from wsi_ccrl.label.visualize import gallery_size, overview_size

CFG = LabelConfig(
    k=3,
    batch_size=8,
    device="cpu",
    export=("geojson", "csv"),
    gallery_per_cluster=4,
    overview_max_side=512,
)
SHARED = "train_10_001"  # a patch in both stores: identical cells on two "slides"


@pytest.fixture
def two_stores(small_store_factory):
    a = small_store_factory("slide_a", patches=("train_10_000", SHARED), max_cells=5)
    b = small_store_factory("slide_b", patches=(SHARED, "train_10_002"), max_cells=5, slide=None)
    return a, b


def test_label_saved_kmeans_and_reproducibility(two_stores, random_model_file, tmp_path):
    a, b = two_stores
    km_path = tmp_path / "km.npz"
    s1 = label_stores(random_model_file, [a], tmp_path / "run1", CFG, save_kmeans=km_path)
    # outputs of slide a
    out = tmp_path / "run1"
    assert sorted(p.name for p in out.iterdir()) == [
        "gallery.png",
        "label_config.yaml",
        "report.html",
        "slide_a.csv",
        "slide_a.geojson",
        "slide_a.overview.png",
    ]
    assert s1.fitted and s1.k == 3 and s1.n_cells == 10 and sum(s1.slides[0].counts) == 10
    assert load_section("label", out / "label_config.yaml") == CFG
    data = geojson.loads((out / "slide_a.geojson").read_text())
    assert data.is_valid and len(data["features"]) == 10
    (w, h), _ = overview_size((2220, 2967), CFG.overview_max_side, 3)
    assert Image.open(out / "slide_a.overview.png").size == (w, h)
    assert Image.open(out / "gallery.png").size == gallery_size(3, 4, CFG.gallery_tile)
    # the store records what labelled it
    store = CellStore.open(a)
    assert store["embedding"].shape == (10, 512) and store["embedding"].dtype == np.float16
    assert store["cluster"].dtype == np.int16 and store["cluster_distance"].dtype == np.float32
    label = store.attrs["label"]
    assert label["model"] == str(random_model_file) and label["encoder"] == "momentum"
    assert label["k"] == 3 and label["kmeans"]["fitted_on"] == 10
    assert len(label["model_sha256"]) == 64
    assert store.attrs["embedding"] == {
        "model_sha256": label["model_sha256"],
        "encoder": "momentum",
        "dim": 512,
    }
    km = KMeansModel.load(km_path)
    assert km.info_["encoder"] == "momentum" and km.info_["model_sha256"] == label["model_sha256"]

    # slide b, later, with the saved centroids: identical cells get identical clusters
    s2 = label_stores(random_model_file, [b], tmp_path / "run2", CFG, kmeans_path=km_path)
    assert not s2.fitted
    ca, cb = CellStore.open(a)["cluster"][:], CellStore.open(b)["cluster"][:]
    np.testing.assert_array_equal(ca[5:], cb[:5])
    assert CellStore.open(b).attrs["label"]["kmeans"]["file"] == str(km_path)

    # a seeded rerun reproduces the clusters and the exports byte for byte
    fresh = dataclasses.replace(CFG, reuse_embeddings=False)  # embed again, from scratch
    s3 = label_stores(
        random_model_file, [a], tmp_path / "run3", fresh, save_kmeans=tmp_path / "k3.npz"
    )
    assert s3.slides[0].embedded
    np.testing.assert_array_equal(CellStore.open(a)["cluster"][:], ca)
    np.testing.assert_array_equal(
        KMeansModel.load(tmp_path / "k3.npz").cluster_centers_, km.cluster_centers_
    )
    for name in ("slide_a.geojson", "slide_a.csv", "gallery.png"):
        assert (tmp_path / "run3" / name).read_bytes() == (out / name).read_bytes()


def _empty_store(path):
    return CellStoreWriter(path, 32, {"slide": {"mpp": 0.5}}).finalize().path


@pytest.mark.parametrize(
    "case, message",
    [
        ("crop", "24 px crops but the model was trained on 32 px"),
        ("empty", "all 1 cell store"),
        ("k", "k=50 clusters but only 10 cells"),
        ("names", "not valid YAML"),
        ("kmeans_k", "has k=4 but k=3 was asked"),
        ("kmeans_dim", "16-d centroids but the model gives 512-d"),
        ("kmeans_model", "another model's embeddings"),
        ("kmeans_encoder", "fitted on query-encoder embeddings"),
        ("same_stem", "two stores are named"),
        ("no_model", "model file not found"),
    ],
)
def test_bad_input_one_line_nothing_written(
    case, message, small_store_factory, random_model_file, tmp_path
):
    store = small_store_factory("ok", patches=("train_10_000",), max_cells=10)
    stores, cfg, kw, model = [store], CFG, {}, random_model_file
    rng = np.random.default_rng(0)
    if case == "crop":
        stores = [small_store_factory("c24", patches=("train_10_000",), max_cells=3, crop_size=24)]
    elif case == "empty":
        stores = [_empty_store(tmp_path / "empty.zarr")]
    elif case == "k":
        cfg = LabelConfig(k=50)
    elif case == "names":
        (tmp_path / "names.yaml").write_text("0: [unclosed\n")
        kw = {"names": tmp_path / "names.yaml"}
    elif case == "no_model":
        model = tmp_path / "missing.pt"
    elif case == "same_stem":
        (tmp_path / "other").mkdir()
        stores = [store, small_store_factory("../other/ok", max_cells=2)]
    else:
        k, dim = (4, 512) if case == "kmeans_k" else (3, 16 if case == "kmeans_dim" else 512)
        km = KMeansModel(k, backend="sklearn", features="l2")
        km.fit(rng.normal(size=(20, dim)).astype(np.float32))
        info = {"encoder": "query"} if case == "kmeans_encoder" else {}
        if case == "kmeans_model":
            torch.manual_seed(1)
            other = save_model(
                tmp_path / "other.pt",
                PreActResNet18(),
                PreActResNet18(),
                {"crop_size": 32, "stem": "small"},
            )
            info = {"model_sha256": file_sha256(other), "model": str(other)}
        kw = {"kmeans_path": km.save(tmp_path / "km.npz", **info)}
    with pytest.raises(WsiCcrlError, match=message) as err:
        label_stores(model, stores, tmp_path / "out", cfg, **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert "embedding" not in CellStore.open(stores[0])


def test_embeddings_are_reused_only_from_the_same_model(
    small_store_factory, random_model_file, tmp_path
):
    store = small_store_factory("r", patches=("train_10_000",), max_cells=4)
    cfg = dataclasses.replace(CFG, k=2, export=())
    first = label_stores(random_model_file, [store], tmp_path / "one", cfg)
    emb = CellStore.open(store)["embedding"][:]
    again = label_stores(random_model_file, [store], tmp_path / "two", cfg)
    assert first.slides[0].embedded and not again.slides[0].embedded
    np.testing.assert_array_equal(CellStore.open(store)["embedding"][:], emb)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "gallery.png",
        "label_config.yaml",
        "r.overview.png",
        "report.html",
    ]
    # embeddings of another model (or an interrupted embedding) are recomputed
    CellStore.open(store, mode="r+").update_attrs(embedding={"model_sha256": "0" * 64})
    third = label_stores(random_model_file, [store], tmp_path / "three", cfg)
    assert third.slides[0].embedded


def test_an_empty_store_in_a_cohort_is_skipped_with_a_warning(
    small_store_factory, random_model_file, tmp_path, caplog
):
    store = small_store_factory("cells", patches=("train_10_000",), max_cells=6)
    empty = _empty_store(tmp_path / "blank.zarr")
    cfg = dataclasses.replace(CFG, k=2, export=("csv",))
    summary = label_stores(random_model_file, [store, empty], tmp_path / "out", cfg)
    assert [r.stem for r in summary.slides] == ["cells"]
    assert "blank.zarr has no cells" in caplog.text
    assert (tmp_path / "out" / "cells.csv").is_file()
    assert not (tmp_path / "out" / "blank.csv").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"k": 1}, "k must be in 2..32767"),
        ({"encoder": "key"}, "encoder must be momentum or query"),
        ({"export": "geojson,../x"}, "export formats by name"),
        ({"device": "tpu"}, "label.device: .tpu. is not auto, cpu, cuda or cuda:N"),
        ({"kmeans_backend": "cuml"}, "kmeans_backend"),
        ({"fit_sample": 0}, "fit_sample must be positive"),
        ({"features": "pca"}, "features must be raw, l2, whiten or joint"),
    ],
)
def test_label_config_is_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_section("label", None, overrides)


def test_geojson_is_gzipped_by_default_above_the_threshold(
    small_store_factory, random_model_file, tmp_path, monkeypatch
):
    import wsi_ccrl.label.export

    store = small_store_factory("big", max_cells=4)  # 8 cells
    out = tmp_path / "out"
    cfg = dataclasses.replace(CFG, k=2)
    assert cfg.compress is None  # the default: decided by the number of cells
    label_stores(random_model_file, [store], out, cfg)
    assert (out / "big.geojson").is_file()
    monkeypatch.setattr(wsi_ccrl.label.export, "GZIP_ABOVE_CELLS", 7)
    summary = label_stores(random_model_file, [store], out, cfg)
    assert (out / "big.geojson.gz").is_file() and not (out / "big.geojson").exists()
    assert out / "big.geojson.gz" in summary.slides[0].files
    assert summary.slides[0].vertices > 8 * 4
    label_stores(random_model_file, [store], out, dataclasses.replace(cfg, compress=False))
    assert (out / "big.geojson").is_file() and not (out / "big.geojson.gz").exists()


def test_a_new_export_format_is_one_class_and_one_decorator(
    small_store_factory, random_model_file, tmp_path
):
    """A per-slide format registered in a test is written by ``label`` in the same pass as the
    GeoJSON; an unknown one is refused before any work, listing the registered ones."""
    from wsi_ccrl.label.export import EXPORT_FORMATS, SlideFormat, register_export

    @register_export("centroids")
    class Centroids(SlideFormat):
        suffix = ".centroids.txt"

        def header(self):
            return b"x y cluster\n"

        def chunk(self, c, first):
            rows = np.column_stack([c.shapes.centroid, c.cluster])
            return "".join(f"{x:.1f} {y:.1f} {int(k)}\n" for x, y, k in rows).encode()

    store = small_store_factory("slide")
    try:
        cfg = dataclasses.replace(CFG, k=2, export=("geojson", "centroids"))
        summary = label_stores(random_model_file, [store], tmp_path / "out", cfg)
        lines = (tmp_path / "out" / "slide.centroids.txt").read_text().splitlines()
        assert lines[0] == "x y cluster" and len(lines) == 1 + summary.n_cells
        clusters = CellStore.open(store)["cluster"][:]
        assert [int(line.split()[2]) for line in lines[1:]] == clusters.tolist()
        assert (tmp_path / "out" / "slide.geojson").is_file()
    finally:
        EXPORT_FORMATS.pop("centroids")
    with pytest.raises(
        ConfigError, match=r"unknown export format 'centroids' \(valid: geojson, csv, anndata\)"
    ):
        label_stores(random_model_file, [store], tmp_path / "again", cfg)
    assert not (tmp_path / "again").exists()
