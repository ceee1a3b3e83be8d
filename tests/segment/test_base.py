import json

import numpy as np
import pytest

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import ConfigError
from wsi_ccrl.segment import SEGMENTERS, build_segmenter, register, resolve_segmenter
from wsi_ccrl.segment.base import Nuclei, Segmenter, nuclei_from_labels


def _labels() -> np.ndarray:
    lab = np.zeros((40, 50), np.int32)
    lab[2:8, 3:13] = 1  # 6 x 10 rectangle
    lab[20:31, 30:35] = 4  # id gap: 2 and 3 absent
    return lab


def test_nuclei_from_labels_measures_each_instance():
    nuc = nuclei_from_labels(_labels())
    assert len(nuc) == 2
    np.testing.assert_allclose(nuc.centroid, [[7.5, 4.5], [32.0, 25.0]])
    np.testing.assert_array_equal(nuc.bbox, [[3, 2, 13, 8], [30, 20, 35, 31]])
    np.testing.assert_array_equal(nuc.area, [60, 55])
    assert nuc.contour_offsets[0] == 0 and nuc.contour_offsets[-1] == len(nuc.contour_xy)
    first = nuc.contour_xy[nuc.contour_offsets[0] : nuc.contour_offsets[1]]
    # the outline runs through the outer pixel centres of the rectangle
    assert {tuple(p) for p in first.astype(int)} == {(3, 2), (12, 2), (12, 7), (3, 7)}
    assert nuc.seg_type.dtype == np.int16 and nuc.seg_prob.dtype == np.float32


def test_types_from_type_map_use_the_majority_and_per_label_probs():
    lab = _labels()
    type_map = np.zeros_like(lab)
    type_map[2:8, 3:10] = 3  # majority of instance 1
    type_map[2:8, 10:13] = 1
    type_map[20:31, 30:35] = 2
    probs = np.array([0, 0.9, 0, 0, 0.4], np.float32)
    nuc = nuclei_from_labels(lab, types=type_map, probs=probs)
    np.testing.assert_array_equal(nuc.seg_type, [3, 2])
    np.testing.assert_allclose(nuc.seg_prob, [0.9, 0.4])
    per_label = nuclei_from_labels(lab, types=np.array([0, 5, 0, 0, 6]))
    np.testing.assert_array_equal(per_label.seg_type, [5, 6])


def test_empty_map_and_select():
    assert len(nuclei_from_labels(np.zeros((8, 8), np.int32))) == 0
    nuc = nuclei_from_labels(_labels())
    second = nuc.select(np.array([False, True]))
    assert len(second) == 1
    np.testing.assert_array_equal(
        second.contour_xy, nuc.contour_xy[nuc.contour_offsets[1] : nuc.contour_offsets[2]]
    )
    assert second.contour_offsets.tolist() == [0, len(second.contour_xy)]


def test_registry_builds_by_name_and_rejects_unknown_names():
    ws = build_segmenter(SegmentConfig(segmenter="watershed"))
    assert ws.name == "watershed" and ws.mpp == 0.25
    json.dumps(ws.describe())
    with pytest.raises(ConfigError, match="unknown 'nope'"):
        build_segmenter(SegmentConfig(segmenter="nope"))

    @register("test-constant")
    class Constant(Segmenter):
        name = "test-constant"

        def __init__(self, cfg):
            self.mpp = cfg.target_mpp

        def segment(self, tiles):
            return [Nuclei.empty() for _ in tiles]

    try:
        seg = SEGMENTERS["test-constant"](SegmentConfig())
        assert seg.segment([np.zeros((4, 4, 3), np.uint8)])[0].centroid.shape == (0, 2)
    finally:
        del SEGMENTERS["test-constant"]


def test_auto_prefers_given_weights_then_cache_then_embedded(tmp_path, monkeypatch):
    import tiatoolbox

    # an empty TIAToolbox cache where TIAToolbox itself is told to keep it
    monkeypatch.setitem(tiatoolbox.rcParam, "TIATOOLBOX_HOME", tmp_path / ".tiatoolbox")
    name, why = resolve_segmenter(SegmentConfig(segmenter="auto", weights="w.pth"))
    assert name == "hovernet" and "--weights" in why
    name, _ = resolve_segmenter(SegmentConfig(segmenter="auto"))
    assert name == ("embedded" if "embedded" in SEGMENTERS else "watershed")
    cache = tmp_path / ".tiatoolbox" / "models"
    cache.mkdir(parents=True)
    (cache / "hovernet_fast-pannuke.pth").write_bytes(b"x")
    name, why = resolve_segmenter(SegmentConfig(segmenter="auto"))
    assert name == "hovernet" and "cache" in why


def test_centroids_and_areas_equal_scipy_exactly():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    labels, _ = ndi.label(rng.random((130, 111)) < 0.45)
    ids = np.unique(labels)[1:]
    nuc = nuclei_from_labels(labels)
    cy, cx = np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, ids)).T
    area = ndi.sum_labels(np.ones(labels.shape), labels, ids)
    assert np.array_equal(nuc.centroid, np.stack([cx, cy], 1).astype(np.float32))
    assert np.array_equal(nuc.area, area.astype(np.float32))
