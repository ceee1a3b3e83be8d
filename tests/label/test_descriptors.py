"""The seven numbers: polygon maths checked against exact shapes, sizes converted to µm."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_ccrl.label.descriptors import DESCRIPTORS, cell_descriptors, elongation


def _rect(x0, y0, w, h):
    return np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], np.float64)


def test_elongation_of_exact_shapes():
    square, bar = _rect(0, 0, 10, 10), _rect(5, 5, 20, 5)
    offsets = np.array([0, 4, 8])
    e = elongation(offsets, np.vstack([square, bar]))
    assert e[0] == pytest.approx(1.0)
    assert e[1] == pytest.approx(0.25)  # a 4:1 rectangle: axes in the ratio of its sides


def test_sizes_in_micrometres_and_the_nucleus_colour():
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    crops[:, 12:20, 12:20] = [200, 100, 50]  # the central 8 x 8 pixels
    crops[1, 12:20, 12:20] = [10, 20, 30]
    bbox = np.array([[0, 0, 10, 10], [5, 5, 25, 10]])
    d = cell_descriptors(
        np.array([100.0, 100.0]),
        bbox,
        np.array([0, 4, 8]),
        np.vstack([_rect(0, 0, 10, 10), _rect(5, 5, 20, 5)]),
        crops,
        mpp=0.5,
    )
    assert d.shape == (2, len(DESCRIPTORS)) and d.dtype == np.float32
    np.testing.assert_allclose(d[:, :3], [[25, 5, 5], [25, 10, 2.5]])
    np.testing.assert_allclose(d[:, 4:], [[200, 100, 50], [10, 20, 30]])


def test_no_cells_no_rows():
    d = cell_descriptors(
        np.zeros(0), np.zeros((0, 4)), np.zeros(1, np.int64), np.zeros((0, 2)),
        np.zeros((0, 32, 32, 3), np.uint8), mpp=0.25,
    )  # fmt: skip
    assert d.shape == (0, len(DESCRIPTORS))


def test_a_sample_of_rows_reads_as_the_whole_store(small_store_factory):
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.descriptors import row_descriptors, store_descriptors

    store = CellStore.open(small_store_factory("s", chunk_cells=16))
    rows = np.array([0, 3, 17, 40, store.n_cells - 1])
    whole = store_descriptors(store)
    np.testing.assert_array_equal(row_descriptors(store, rows), whole[rows])
    assert whole[:, 0].min() > 0  # µm² at the store's 0.499 µm/px
