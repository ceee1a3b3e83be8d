import numpy as np

from wsi_ccrl.contours import gather_polygons


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
