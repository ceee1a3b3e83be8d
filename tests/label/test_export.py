import csv
import gzip
import json
import logging
import uuid

import numpy as np
import pytest
import scipy.io
import shapely
import shapely.affinity
from conftest import CONSEP_PATCHES, build_label_store, needs
from PIL import Image
from qupath_exports import write_synthetic_exports
from qupath_geojson import check_qupath_geojson
from shapely.geometry import shape

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.contours import SEGMENT_CONTOURS
from wsi_ccrl.io.store import CellBatch, CellStore, CellStoreWriter
from wsi_ccrl.io.tiles import plan_tiles
from wsi_ccrl.label.export import cell_uuids, export_store
from wsi_ccrl.label.palette import cluster_styles
from wsi_ccrl.segment.base import nuclei_from_labels
from wsi_ccrl.segment.pipeline import tile_cells

K = 3
PATCHES = ("train_10_000", "train_21_000", "train_24_005")
TYPES = {"1": "other", "2": "inflammatory", "3": "epithelial", "4": "spindle-shaped"}
OVERLAP = 8


def _patch(stem):
    image = np.asarray(Image.open(CONSEP_PATCHES / "Images" / f"{stem}.png").convert("RGB"))
    mat = scipy.io.loadmat(CONSEP_PATCHES / "Labels" / f"{stem}.mat")
    return image, mat["inst_map"].astype(np.int32), mat["inst_type"].ravel().astype(np.int64)


def pipeline_store(path, slide_mpp: float):
    """A store as ``segment`` writes it: the ground-truth nuclei of real CoNSeP patches, as a
    segmenter at 0.25 µm/px returns them, mapped to level 0 by the pipeline's ``tile_cells`` on
    a slide of ``slide_mpp`` µm/px (0.25: 40x, one level-0 px per pixel; 0.5: 20x, two per
    level-0 px). Patch j covers target pixels [256 j, 256 j + 256) x [0, 256)."""
    scale = 0.25 / slide_mpp
    size = 256 * len(PATCHES)
    plan = plan_tiles((int(size * scale), int(256 * scale)), slide_mpp, 0.25, 256 + 2 * OVERLAP,
                      OVERLAP)  # fmt: skip
    attrs = {
        "slide": {"path": f"consep-{slide_mpp}.svs", "mpp": slide_mpp},
        "segmenter": {"name": "ground-truth", "types": TYPES},
        "tiles": plan.attrs(),
        "contour": SEGMENT_CONTOURS,
    }
    writer = CellStoreWriter(path, 16, attrs, chunk_cells=64, overwrite=True)
    for tile, stem in zip(plan.tiles, PATCHES, strict=True):
        image, inst, types = _patch(stem)
        padded = np.pad(inst, OVERLAP)
        nuc = nuclei_from_labels(padded, types=np.concatenate([[0], types]))
        read = np.pad(image, ((OVERLAP, OVERLAP), (OVERLAP, OVERLAP), (0, 0)), mode="reflect")
        mapping = (tile.read[0] * scale, tile.read[1] * scale, scale, scale)
        cells = tile_cells(tile, read, mapping, nuc, plan, SegmentConfig(crop_size=16))
        assert len(cells) == len(np.unique(inst)) - 1  # every nucleus, once
        writer.add(cells)
    store = CellStore.open(writer.finalize().path, mode="r+")
    _label(store)
    return store


def _label(store):
    n = store.n_cells
    distance = np.linspace(0, 2, n).astype(np.float32)
    distance[3] = np.nan  # a missing value: left out, not written as 0
    store.write_column("cluster", (np.arange(n) % K).astype(np.int16))
    store.write_column("cluster_distance", distance)
    prob = store["seg_prob"][:]
    prob[5] = np.nan
    store["seg_prob"][:] = prob


def _truth():
    """(patch index, instance label, whole single blob?) of every stored cell, in store order."""
    from scipy import ndimage as ndi

    out = []
    for j, stem in enumerate(PATCHES):
        _, inst, _ = _patch(stem)
        for label in np.unique(inst)[1:]:
            mask = inst == label
            one = (
                ndi.label(mask, np.ones((3, 3)))[1] == 1
                and ndi.binary_fill_holes(mask).sum() == mask.sum()
            )
            out.append((j, inst, label, one))
    return out


def _iou(geom, inst, label, x0, scale):
    """IoU of the target pixels whose centre the exported geometry holds with the nucleus."""
    ys, xs = np.nonzero(inst == label)
    r0, r1, c0, c1 = ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3
    gy, gx = np.mgrid[r0:r1, c0:c1]
    inside = shapely.contains_xy(geom, (x0 + gx + 0.5) * scale, (gy + 0.5) * scale)
    truth = np.pad(inst, 3)[r0 + 3 : r1 + 3, c0 + 3 : c1 + 3] == label
    return (inside & truth).sum() / (inside | truth).sum()


def _load(path):
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="ascii") as f:
        return json.load(f)


@needs(CONSEP_PATCHES)
@pytest.mark.parametrize("slide_mpp", [0.25, 0.5])
def test_exported_polygons_are_the_nuclei_and_the_tables_join(tmp_path, slide_mpp):
    store = pipeline_store(tmp_path / "slide.zarr", slide_mpp)
    styles = cluster_styles(K)
    gj, table = tmp_path / "slide.geojson", tmp_path / "slide.csv"
    counts = export_store(store, styles, {"geojson": gj, "csv": table}, chunk_cells=50)
    summary = check_qupath_geojson(gj)  # QuPath's reader rules
    n = store.n_cells
    assert counts["cells"] == summary["features"] == n
    assert summary["measurements"] == [
        "CCRL: Cluster distance", "Nucleus: Area \u00b5m^2", "Segmenter: Probability",
    ]  # fmt: skip
    feats = _load(gj)["features"]
    scale = 0.25 / slide_mpp
    ious = []
    for feat, (j, inst, label, one_blob) in zip(feats, _truth(), strict=True):
        iou = _iou(shape(feat["geometry"]), inst, label, 256 * j, scale)
        if one_blob:  # the outline is traced around one piece of the nucleus, holes filled
            ious.append(iou)
    assert min(ious) >= 0.9 and np.median(ious) >= 0.98, (min(ious), np.median(ious))
    # the CSV: one row per Feature, same object id, the polygon's own area and centroid
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Object ID"] for r in rows] == [f["id"] for f in feats]
    seg_type = store["seg_type"][:]
    for i, (row, feat) in enumerate(zip(rows, feats, strict=True)):
        geom, props = shape(feat["geometry"]), feat["properties"]
        meas = props["measurements"]
        area = geom.area * slide_mpp**2
        assert meas["Nucleus: Area \u00b5m^2"] == pytest.approx(area, abs=0.006)
        assert float(row["area_um2"]) == meas["Nucleus: Area \u00b5m^2"]
        assert float(row["centroid_x"]) == pytest.approx(geom.centroid.x, abs=0.006)
        assert float(row["centroid_y"]) == pytest.approx(geom.centroid.y, abs=0.006)
        assert int(row["cell"]) == i and int(row["cluster"]) == i % K
        assert props["classification"]["name"] == row["cluster_name"] == styles.names[i % K]
        assert props["name"] == row["seg_type_name"] == TYPES[str(seg_type[i])]
        assert ("CCRL: Cluster distance" in meas) == (row["cluster_distance"] != "") == (i != 3)
        assert ("Segmenter: Probability" in meas) == (row["seg_prob"] != "") == (i != 5)


@needs(CONSEP_PATCHES)
def test_a_store_from_before_the_pixel_edge_frame(small_store_factory, tmp_path, caplog):
    path = small_store_factory("old", patches=PATCHES[:1])  # pixel-centre outlines, no attr
    store = CellStore.open(path, mode="r+")
    assert "contour" not in store.attrs
    _label(store)
    logger = logging.getLogger("wsi_ccrl")
    logger.addHandler(caplog.handler)
    try:
        export_store(store, cluster_styles(K), {"geojson": tmp_path / "old.geojson"})
    finally:
        logger.removeHandler(caplog.handler)
    assert "segment it again" in caplog.text
    check_qupath_geojson(tmp_path / "old.geojson")
    feats = _load(tmp_path / "old.geojson")["features"]
    _, inst, _ = _patch(PATCHES[0])
    truth = [t for t in _truth() if t[0] == 0]
    # re-traced along the pixel edges: the same pixels as the nucleus (the fixture sits at
    # level-0 origin (1200, 1400), skips 1-2 pixel slivers)
    ious = []
    for feat in feats:
        geom = shapely.affinity.translate(shape(feat["geometry"]), -1200, -1400)
        c = geom.representative_point()
        label = inst[int(c.y), int(c.x)]
        one = next(t[3] for t in truth if t[2] == label)
        if one:
            ious.append(_iou(geom, inst, label, 0, 1.0))
    assert len(ious) > 20 and min(ious) >= 0.9


@needs(CONSEP_PATCHES)
def test_reruns_chunks_and_gzip_give_the_same_bytes(tmp_path):
    store = pipeline_store(tmp_path / "slide.zarr", 0.5)
    styles = cluster_styles(K)
    a = export_store(
        store,
        styles,
        {"geojson": tmp_path / "a.geojson", "csv": tmp_path / "a.csv"},
        chunk_cells=64,
    )
    b = export_store(
        store,
        styles,
        {"geojson": tmp_path / "b.geojson", "csv": tmp_path / "b.csv"},
        chunk_cells=13,
    )
    c = export_store(
        store, styles, {"geojson": tmp_path / "c.geojson.gz"}, compress=True, chunk_cells=40
    )
    assert a == b and a["bytes"] == c["bytes"] > 0
    data = (tmp_path / "a.geojson").read_bytes()
    assert (tmp_path / "b.geojson").read_bytes() == data
    assert gzip.decompress((tmp_path / "c.geojson.gz").read_bytes()) == data
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".zarr") == [
        "a.csv",
        "a.geojson",
        "b.csv",
        "b.geojson",
        "c.geojson.gz",
    ]  # fmt: skip  (no temporary file left)
    exact = export_store(store, styles, {"geojson": tmp_path / "x.geojson"}, simplify=0)
    assert exact["vertices"] > 1.8 * a["vertices"]  # the default tolerance roughly halves them


def test_cell_uuids_are_deterministic_unique_v4_and_chunk_independent():
    ids = cell_uuids("slide.svs", 0, 1000)
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids[:50])
    np.testing.assert_array_equal(ids, cell_uuids("slide.svs", 0, 1000))
    np.testing.assert_array_equal(ids[300:700], cell_uuids("slide.svs", 300, 700))
    assert not set(cell_uuids("other.svs", 0, 1000)) & set(ids)


def test_area_in_pixels_without_mpp_and_no_types(tmp_path):
    writer = CellStoreWriter(tmp_path / "nompp.zarr", 8, {"contour": SEGMENT_CONTOURS})
    square = np.array([[10, 10], [14, 10], [14, 13], [10, 13]], np.float32)
    writer.add(
        CellBatch(
            crops=np.zeros((2, 8, 8, 3), np.uint8),
            centroid=np.array([[12, 11.5], [22, 11.5]], np.float32),
            bbox=np.array([[10, 10, 14, 13], [20, 10, 24, 13]], np.int32),
            area=np.full(2, 12, np.float32),
            seg_type=np.zeros(2, np.int16),
            seg_prob=np.ones(2, np.float32),
            contour_offsets=np.array([0, 4, 8]),
            contour_xy=np.concatenate([square, square + [10, 0]]),
        )
    )
    store = CellStore.open(writer.finalize().path, mode="r+")
    store.write_column("cluster", np.zeros(2, np.int16))
    store.write_column("cluster_distance", np.zeros(2, np.float32))
    export_store(
        store, cluster_styles(2), {"geojson": tmp_path / "x.geojson", "csv": tmp_path / "x.csv"}
    )
    props = _load(tmp_path / "x.geojson")["features"][0]["properties"]
    assert props["measurements"]["Nucleus: Area px^2"] == 12 and "name" not in props
    header = (tmp_path / "x.csv").read_text().splitlines()[0].split(",")
    assert header[4] == "area_px2"


def test_failed_export_leaves_nothing(tmp_path):
    path = build_label_store(tmp_path / "nocluster.zarr", patches=PATCHES[:1], max_cells=5)
    store = CellStore.open(path, mode="r+")
    with pytest.raises(WsiCcrlError, match="no 'cluster' column: run label first"):
        export_store(
            store, cluster_styles(2), {"geojson": tmp_path / "x.geojson", "csv": tmp_path / "x.csv"}
        )
    assert list(tmp_path.glob("x.*")) == []


def test_repaired_multipolygons_and_holes_at_20x(tmp_path):
    files, counts = write_synthetic_exports(tmp_path)
    assert counts["cells"] == 18 and counts["repaired"] == 9  # bow-ties, holed rings, slivers
    kinds = {}
    for path in files:
        check_qupath_geojson(path)  # QuPath's reader rules (the real reader: test_qupath_reader)
        for feat in _load(path)["features"]:
            geom = feat["geometry"]
            kind = (geom["type"], len(geom["coordinates"]))
            kinds[kind] = kinds.get(kind, 0) + 1
            assert shape(geom).is_valid
    assert kinds[("MultiPolygon", 2)] == 3 * 3 + 3  # bow-ties; corner-joined pixels when exact
    assert kinds[("Polygon", 2)] == 3 * 3  # a shell and its hole
    assert _load(files[0]) == _load(files[1])
    first = _load(files[0])["features"][0]["geometry"]["coordinates"][0][0]
    assert first[0] > 61_000 and first[1] > 38_000  # level 0 of a 20x slide
