import numpy as np
import pytest
import scipy.io
import shapely
from conftest import CONSEP_PATCHES, needs

from wsi_ccrl.io.contours import edge_contours
from wsi_ccrl.label.overlay import MAX_AREA_CHANGE, cell_shapes, cut_corners, ring_areas
from wsi_ccrl.segment.base import nuclei_from_labels


def _geoms(s):
    """One shapely geometry per cell, rebuilt from the flat arrays (as a reader would)."""
    out = []
    for i in range(s.n_cells):
        polys = []
        for p in range(s.cell_offsets[i], s.cell_offsets[i + 1]):
            rings = [
                s.xy[s.ring_offsets[r] : s.ring_offsets[r + 1]]
                for r in range(s.polygon_offsets[p], s.polygon_offsets[p + 1])
            ]
            polys.append(shapely.Polygon(rings[0], rings[1:]))
        out.append(polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys))
    return out


def _mask_iou(geom, inst, label, scale=1.0):
    """IoU of the pixels whose centre the geometry holds with the instance's pixels."""
    ys, xs = np.nonzero(inst == label)
    y0, y1, x0, x1 = ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3
    gy, gx = np.mgrid[y0:y1, x0:x1]
    inside = shapely.contains_xy(geom, (gx + 0.5) * scale, (gy + 0.5) * scale)
    pad = np.pad(inst, 3)[y0 + 3 : y1 + 3, x0 + 3 : x1 + 3] == label
    return (inside & pad).sum() / (inside | pad).sum()


@pytest.fixture(scope="module")
def real_nuclei():
    """Exact pixel-edge outlines of the ground-truth nuclei of 4 CoNSeP patches (0.25 µm/px)."""
    if not CONSEP_PATCHES.exists():
        pytest.skip(f"{CONSEP_PATCHES} not available")
    out = []
    for stem in ("train_10_000", "train_21_000", "train_24_005", "train_3_002"):
        inst = scipy.io.loadmat(CONSEP_PATCHES / "Labels" / f"{stem}.mat")["inst_map"]
        inst = inst.astype(np.int32)
        nuc = nuclei_from_labels(inst)
        offsets, xy = edge_contours(nuc.contour_offsets, nuc.contour_xy)
        out.append((inst, nuc, offsets, xy + 0.5))  # pixel (i, j) covers [j, j + 1)
    return out


@needs(CONSEP_PATCHES)
def test_exact_outlines_are_the_pixels(real_nuclei):
    for inst, nuc, offsets, xy in real_nuclei:
        s = cell_shapes(offsets, xy, nuc.bbox, simplify=0)
        single = np.array([_is_one_blob(inst == i) for i in np.unique(inst)[1:]])
        np.testing.assert_array_equal(s.area[single], nuc.area[single])  # area = pixel count
        geoms = _geoms(s)
        for label, g in zip(
            np.unique(inst)[1:][single][:40], np.array(geoms)[single][:40], strict=True
        ):
            assert _mask_iou(g, inst, label) == 1.0


@needs(CONSEP_PATCHES)
def test_default_simplification_keeps_area_pixels_and_validity(real_nuclei):
    vertices = exact_vertices = 0
    ious = []
    for inst, nuc, offsets, xy in real_nuclei:
        exact = cell_shapes(offsets, xy, nuc.bbox, simplify=0)
        s = cell_shapes(offsets, xy, nuc.bbox)
        change = np.abs(s.area - exact.area) / exact.area
        assert change.max() <= MAX_AREA_CHANGE + 1e-9  # every cell, by construction
        geoms = _geoms(s)
        assert all(g.is_valid for g in geoms)
        assert np.array_equal(np.round(s.xy, 2), s.xy)  # on QuPath's grid
        ious += [_mask_iou(g, inst, i) for i, g in zip(np.unique(inst)[1:], geoms, strict=True)]
        vertices += s.vertices()
        exact_vertices += exact.vertices()
    assert vertices < 0.5 * exact_vertices  # what the tolerance buys
    assert np.median(ious) >= 0.98 and np.percentile(ious, 5) >= 0.9


def _is_one_blob(mask):
    from scipy import ndimage as ndi

    filled = ndi.binary_fill_holes(mask)
    return ndi.label(mask, np.ones((3, 3)))[1] == 1 and filled.sum() == mask.sum()


def test_corner_joined_pixels_keep_every_part():
    # two 6x6 blocks touching at one corner: one outline through the shared corner (invalid)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:8, 2:8] = mask[8:14, 8:14] = 1
    nuc = nuclei_from_labels(mask.astype(np.int32))
    offsets, xy = edge_contours(nuc.contour_offsets, nuc.contour_xy)
    assert not shapely.Polygon(xy).is_valid
    for simplify in (0, 0.5):
        s = cell_shapes(offsets, xy + 0.5, nuc.bbox, simplify=simplify)
        assert s.area[0] == pytest.approx(72, rel=MAX_AREA_CHANGE)  # not 36: no part dropped
        assert _geoms(s)[0].is_valid
    exact = cell_shapes(offsets, xy + 0.5, nuc.bbox, simplify=0)
    assert exact.repaired == 1 and _geoms(exact)[0].geom_type == "MultiPolygon"


def test_bowtie_degenerate_and_legacy_outlines():
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]  # self-crossing: both triangles kept
    sliver = [[5, 5], [6, 6]]  # fewer than 3 points: the cell's box
    line = [[0, 20], [4, 20], [8, 20]]  # no area: the box
    xy = np.array(bowtie + sliver + line, np.float64) + 0.25
    offsets = np.array([0, 4, 6, 9])
    bbox = np.array([[0, 0, 10, 10], [5, 5, 7, 7], [0, 20, 9, 21]])
    s = cell_shapes(offsets, xy, bbox, simplify=0)
    geoms = _geoms(s)
    assert geoms[0].geom_type == "MultiPolygon" and geoms[0].area == pytest.approx(50)
    assert geoms[1].bounds == (5, 5, 7, 7) and geoms[2].bounds == (0, 20, 9, 21)
    assert s.repaired == 3
    # a store from before the pixel-edge frame: integer pixel-centre contours are re-traced
    square = np.array([[1, 1], [1, 3], [3, 3], [3, 1]], np.float64)  # OpenCV's 3x3 block
    legacy = cell_shapes(np.array([0, 4]), square, np.array([[1, 1, 4, 4]]), 0, legacy_shift=0.5)
    assert _geoms(legacy)[0].equals(shapely.box(1, 1, 4, 4)) and legacy.area[0] == 9
    moved = cell_shapes(np.array([0, 4]), square + 0.3, np.array([[1, 1, 4, 4]]), 0, 1, 0.5)
    assert _geoms(moved)[0].equals(shapely.box(1.8, 1.8, 3.8, 3.8))  # not a chain: shifted


def test_cut_corners_and_grid_at_a_fractional_pitch():
    # a 45-degree staircase of 1-pixel steps becomes one edge; area -0.5 pixel², pitch scaled
    pitch = 0.501  # a 0.499 µm/px slide segmented at 0.25 µm/px
    stairs = np.array([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [3, 2], [3, 3], [0, 3]], float)
    offsets, cut = cut_corners(np.array([0, 8]), stairs * pitch + 100, pitch)
    assert len(cut) < len(stairs)
    area = abs(ring_areas(offsets, cut)[0])
    assert area == pytest.approx((abs(ring_areas(np.array([0, 8]), stairs)[0]) - 0.5) * pitch**2)
    s = cell_shapes(np.array([0, 8]), stairs * pitch + 100.003, np.array([[100, 100, 102, 102]]),
                    pitch=pitch)  # fmt: skip
    assert np.array_equal(np.round(s.xy, 2), s.xy) and _geoms(s)[0].is_valid
