import csv
import gzip
import json
import uuid

import geojson
import numpy as np
import pytest
import shapely

from wsi_ccrl.export import (
    cell_uuids,
    clean_polygons,
    format_features,
    measurement_names,
    write_csv,
    write_geojson,
)
from wsi_ccrl.palette import cluster_styles
from wsi_ccrl.store import CellStore

K = 3


@pytest.fixture
def clustered_store(small_store_factory):
    """A real store with cluster columns (as ``label`` writes them), chunks of 64 cells."""
    store = CellStore.open(small_store_factory("slide", max_cells=50), mode="r+")
    n = store.n_cells
    store.write_column("cluster", (np.arange(n) % K).astype(np.int16))
    store.write_column("cluster_distance", np.linspace(0, 2, n).astype(np.float32))
    return store


def test_clean_polygons_keeps_valid_rounds_and_repairs():
    square = [[0.004, 0], [10, 0], [10, 10], [0, 10.126]]
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]  # self-intersecting
    sliver = [[5, 5], [6, 6]]  # fewer than 3 points
    xy = np.array(square + bowtie + sliver, np.float32)
    offsets = np.array([0, 4, 8, 10])
    bbox = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 7, 7]])
    off, out, repaired = clean_polygons(offsets, xy, bbox)
    assert repaired == 2
    np.testing.assert_allclose(out[off[0] : off[1]], np.round(np.array(square, np.float32), 2))
    polys = [shapely.Polygon(out[off[i] : off[i + 1]]) for i in range(3)]
    assert all(p.is_valid and p.area > 0 for p in polys)
    assert polys[1].area == pytest.approx(25.0)  # one triangle of the bow-tie, the largest part
    assert polys[2].bounds == (5.0, 5.0, 7.0, 7.0)  # the sliver becomes its bounding box
    assert np.array_equal(np.round(out, 2), out)


def test_cell_uuids_are_deterministic_unique_v4_and_chunk_independent():
    ids = cell_uuids("slide.svs", 0, 1000)
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids[:50])
    np.testing.assert_array_equal(ids, cell_uuids("slide.svs", 0, 1000))
    np.testing.assert_array_equal(ids[300:700], cell_uuids("slide.svs", 300, 700))
    assert not set(cell_uuids("other.svs", 0, 1000)) & set(ids)


def test_format_features_is_json_with_percent_and_quotes_in_names():
    styles = cluster_styles(2)
    styles = type(styles)(('50% "odd", name', "b"), styles.colours)
    xy = np.array([[0, 0], [4, 0], [4, 4], [0, 0], [2, 0], [2, 2]], np.float64)
    text = format_features(
        np.array(["id-a", "id-b"], object),
        np.array([0, 3, 6]),
        xy,
        np.array([0, 1]),
        np.array([[1.234, 0.5, 3, np.nan], [2, 1, 1, 0.25]]),
        styles,
        measurement_names(None),
        first=True,
    )
    feats = json.loads("[" + text + "]")
    assert feats[0]["properties"]["classification"]["name"] == '50% "odd", name'
    assert feats[0]["geometry"]["coordinates"] == [[[0, 0], [4, 0], [4, 4], [0, 0]]]
    assert feats[1]["properties"]["measurements"] == {
        "Area px^2": 2.0,
        "Cluster distance": 1.0,
        "Segmenter type": 1,
        "Segmenter probability": 0.25,
    }
    assert feats[0]["properties"]["measurements"]["Segmenter probability"] == 0.0  # NaN → 0


def _load(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return geojson.load(f)


@pytest.mark.parametrize("compress", [False, True])
def test_geojson_is_valid_qupath_and_matches_the_store(clustered_store, tmp_path, compress):
    store = clustered_store
    styles = cluster_styles(K)
    out = tmp_path / "out"
    out.mkdir()
    path = out / ("slide.geojson.gz" if compress else "slide.geojson")
    counts = write_geojson(store, styles, path, compress=compress, chunk_cells=37)
    assert counts["cells"] == store.n_cells
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temp left
    data = _load(path)
    assert isinstance(data, geojson.FeatureCollection) and data.is_valid
    feats = data["features"]
    assert len(feats) == store.n_cells
    assert len({f["id"] for f in feats}) == store.n_cells  # every cell exactly once
    offsets, xy = store.contours()
    centroid = store["centroid"][:]
    clusters = store["cluster"][:]
    area = store["area"][:] * store.mpp**2
    exact = 0
    for i, f in enumerate(feats):
        assert set(f) == {"type", "id", "geometry", "properties"}
        assert f["type"] == "Feature" and uuid.UUID(f["id"]).version == 4
        assert f["geometry"]["type"] == "Polygon"
        props = f["properties"]
        assert set(props) == {"objectType", "classification", "measurements"}
        assert props["objectType"] == "detection"
        name, colour = styles.styles()[clusters[i]]
        assert props["classification"] == {"name": name, "color": list(colour)}
        m = props["measurements"]
        assert set(m) == {
            "Area µm^2",
            "Cluster distance",
            "Segmenter type",
            "Segmenter probability",
        }
        assert all(isinstance(v, (int, float)) for v in m.values())
        assert m["Area µm^2"] == pytest.approx(area[i], abs=0.006)
        ring = np.array(f["geometry"]["coordinates"][0])
        assert len(f["geometry"]["coordinates"]) == 1 and np.array_equal(ring[0], ring[-1])
        poly = shapely.Polygon(ring)
        assert poly.is_valid
        contour = np.round(xy[offsets[i] : offsets[i + 1]].astype(np.float64), 2)
        if len(ring) - 1 == len(contour) and np.allclose(ring[:-1], contour, atol=1e-9):
            exact += 1
        else:  # a repaired contour: the largest part of the same nucleus
            assert poly.area <= shapely.Polygon(contour).buffer(0.5).area
        # centroid in level-0 pixels: inside the nucleus (or on its pixel-centre outline)
        assert poly.buffer(1.0).contains(shapely.Point(centroid[i]))
    assert exact >= store.n_cells - 3  # CoNSeP contours are nearly all valid as they are


def test_geojson_reruns_are_identical(clustered_store, tmp_path):
    a = write_geojson(clustered_store, cluster_styles(K), tmp_path / "a.geojson", chunk_cells=64)
    b = write_geojson(clustered_store, cluster_styles(K), tmp_path / "b.geojson", chunk_cells=13)
    assert a == b
    assert (tmp_path / "a.geojson").read_bytes() == (tmp_path / "b.geojson").read_bytes()


def test_area_in_pixels_without_mpp(small_store_factory, tmp_path):
    store = CellStore.open(small_store_factory("nompp", slide=None, mpp=None, max_cells=5), "r+")
    store.write_column("cluster", np.zeros(store.n_cells, np.int16))
    store.write_column("cluster_distance", np.zeros(store.n_cells, np.float32))
    write_geojson(store, cluster_styles(2), tmp_path / "x.geojson")
    feats = _load(tmp_path / "x.geojson")["features"]
    assert feats[0]["properties"]["measurements"]["Area px^2"] == store["area"][0]
    write_csv(store, cluster_styles(2), tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text().splitlines()[0].split(",")[3] == "area_px2"


def test_csv_one_row_per_cell(clustered_store, tmp_path):
    store = clustered_store
    styles = cluster_styles(K)
    write_csv(store, styles, tmp_path / "slide.csv", chunk_cells=40)
    with open(tmp_path / "slide.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == store.n_cells
    assert [int(r["cell"]) for r in rows] == list(range(store.n_cells))
    np.testing.assert_allclose(
        [[float(r["centroid_x"]), float(r["centroid_y"])] for r in rows],
        store["centroid"][:],
        atol=0.006,
    )
    assert [int(r["cluster"]) for r in rows] == store["cluster"][:].tolist()
    assert rows[1]["cluster_name"] == styles.names[store["cluster"][1]]
    assert [int(r["seg_type"]) for r in rows] == store["seg_type"][:].tolist()
    np.testing.assert_allclose(
        [float(r["area_um2"]) for r in rows], store["area"][:] * store.mpp**2, atol=1e-3
    )


def test_failed_export_leaves_nothing(small_store_factory, tmp_path):
    store = CellStore.open(small_store_factory("nocluster", max_cells=5), mode="r+")
    with pytest.raises(Exception, match="cluster"):  # no cluster column yet
        write_geojson(store, cluster_styles(2), tmp_path / "x.geojson")
    assert list(tmp_path.glob("x.geojson*")) == []
