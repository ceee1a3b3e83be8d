import numpy as np
import pytest

from wsi_ccrl.io.contours import gather_polygons


def test_gather_matches_a_per_polygon_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, 20)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    xy = rng.random((int(offsets[-1]), 2), dtype=np.float32)
    rows = np.array([7, 0, 19, 7])  # any order, repeats allowed
    new_offsets, new_xy = gather_polygons(offsets, xy, rows)
    want = [xy[offsets[r] : offsets[r + 1]] for r in rows]
    np.testing.assert_array_equal(
        new_offsets, np.concatenate([[0], np.cumsum([len(w) for w in want])])
    )
    np.testing.assert_array_equal(new_xy, np.concatenate(want))
    empty_offsets, empty_xy = gather_polygons(offsets, xy, np.array([], int))
    assert empty_offsets.tolist() == [0] and empty_xy.shape == (0, 2)


def _outer_contours(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """OpenCV's outer contours of ``mask`` (CSR) and each one's filled 8-connected component."""
    import cv2
    from scipy import ndimage as ndi

    lab, k = ndi.label(mask, structure=np.ones((3, 3)))
    rings, regions = [], []
    for comp in range(1, k + 1):
        region = (lab == comp).astype(np.uint8)
        found, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rings.append(found[0].reshape(-1, 2))
        regions.append(ndi.binary_fill_holes(region))
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    return offsets, np.concatenate(rings).astype(np.float32), regions


def _fill(ring: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centre (x = j, y = i) is inside ``ring`` (even-odd)."""
    from skimage.draw import polygon2mask

    return polygon2mask(shape, ring[:, ::-1])


def test_edge_contours_outline_exactly_the_traced_pixels():
    from wsi_ccrl.io.contours import edge_contours

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):  # random blobs: spurs, one-pixel lines, corner-only joins, holes
        mask = (rng.random((12, 12)) < rng.uniform(0.2, 0.9)).astype(np.uint8)
        mask[[0, -1]] = 0
        mask[:, [0, -1]] = 0
        if not mask.any():
            continue
        offsets, xy, regions = _outer_contours(mask)
        e_off, e_xy = edge_contours(offsets, xy)
        for i, region in enumerate(regions):
            ring = e_xy[e_off[i] : e_off[i + 1]]
            assert (ring - 0.5 == np.round(ring - 0.5)).all()  # on pixel corners
            np.testing.assert_array_equal(_fill(ring, mask.shape), region)
            shoelace = 0.5 * np.sum(
                ring[:, 0] * np.roll(ring[:, 1], -1) - np.roll(ring[:, 0], -1) * ring[:, 1]
            )
            assert abs(shoelace) == region.sum()  # the area is the pixel count
            checked += 1
    assert checked > 1000


def test_edge_contours_of_simple_shapes():
    from wsi_ccrl.io.contours import edge_contours

    square = np.array([[1, 1], [1, 3], [3, 3], [3, 1]], np.float32)  # OpenCV's 3x3 block
    pixel = np.array([[5, 5]], np.float32)
    line = np.array([[1, 7], [4, 7]], np.float32)  # a 1-pixel-high run of 4 pixels
    offsets = np.array([0, 4, 5, 7, 7])  # and an empty contour
    e_off, e_xy = edge_contours(offsets, np.concatenate([square, pixel, line]))
    rings = [e_xy[e_off[i] : e_off[i + 1]] for i in range(4)]
    assert {tuple(p) for p in rings[0]} == {(0.5, 0.5), (0.5, 3.5), (3.5, 3.5), (3.5, 0.5)}
    assert {tuple(p) for p in rings[1]} == {(4.5, 4.5), (5.5, 4.5), (5.5, 5.5), (4.5, 5.5)}
    assert {tuple(p) for p in rings[2]} == {(0.5, 6.5), (4.5, 6.5), (4.5, 7.5), (0.5, 7.5)}
    assert len(rings[0]) == len(rings[1]) == len(rings[2]) == 4 and len(rings[3]) == 0
    with pytest.raises(ValueError, match="chain"):
        edge_contours(np.array([0, 3]), np.array([[0, 0], [5, 2], [0, 4]], np.float32))


def test_polygon_edges_area_and_centroid_by_hand():
    """A 2x2 square (anticlockwise), an empty polygon, a clockwise right triangle."""
    from wsi_ccrl.io.contours import polygon_area_centroid, polygon_edges

    offsets = np.array([0, 4, 4, 7])
    xy = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [0, 0], [0, 3], [3, 0]], np.float32)
    owner, start, end = polygon_edges(offsets, xy)
    assert owner.tolist() == [0, 0, 0, 0, 2, 2, 2]
    assert end.tolist() == [[2, 0], [2, 2], [0, 2], [0, 0], [0, 3], [3, 0], [0, 0]]
    assert np.array_equal(start, xy)
    area, centroid = polygon_area_centroid(offsets, xy)
    assert area.tolist() == [4.0, 0.0, 4.5]
    assert np.allclose(centroid, [[1, 1], [0, 0], [1, 1]])
