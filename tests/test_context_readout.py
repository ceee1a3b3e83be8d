"""The neighbourhood of benchmarks/context_readout.py: a cell's k nearest others, in its own
patch only, and their mean."""

import numpy as np
from conftest import load_benchmark_script


def test_neighbours_are_the_nearest_others_of_the_same_patch():
    probe = load_benchmark_script("context_readout")
    # patch 0: cells on a line at x = 0, 1, 3, 10; patch 1: two cells at the same place as two
    # of patch 0's, which must never be anyone's neighbour across the patch
    centroid = np.array([[0, 0], [1, 0], [3, 0], [10, 0], [0, 0], [1, 0]], np.float32)
    patch = np.array([0, 0, 0, 0, 1, 1])
    nb = probe.neighbour_index(centroid, patch, 2)
    assert nb[0].tolist() == [1, 2]
    assert nb[3].tolist() == [2, 1]
    assert nb[4].tolist() == [5, -1]  # a patch of two: one neighbour, the rest marked missing
    assert nb[5].tolist() == [4, -1]


def test_context_is_the_neighbours_mean_or_the_cell_itself():
    probe = load_benchmark_script("context_readout")
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 5.0]], np.float32)
    nb = np.array([[1, 2], [0, -1], [-1, -1], [0, 1]])
    out = probe.with_context(x, nb)
    np.testing.assert_allclose(out, [[1.0, 1.5], [1.0, 0.0], [2.0, 2.0], [0.5, 0.5]])
