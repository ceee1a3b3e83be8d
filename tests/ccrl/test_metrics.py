import numpy as np
import pytest

from wsi_ccrl.ccrl.metrics import cluster_metrics, purity


def test_purity_hand_computed():
    # cluster 0 holds classes [a, a, b] -> 2; cluster 1 holds [b, b, c] -> 2; cluster 2 [c] -> 1
    true = np.array(["a", "a", "b", "b", "b", "c", "c"])
    pred = np.array([0, 0, 0, 1, 1, 1, 2])
    assert purity(true, pred) == pytest.approx(5 / 7)


def test_perfect_and_label_permutation():
    true = np.array([0, 0, 1, 1, 2, 2])
    m = cluster_metrics(true, np.array([5, 5, 3, 3, 9, 9]))
    assert m == {"ami": pytest.approx(1.0), "ari": pytest.approx(1.0), "purity": 1.0}


def test_one_cluster_has_majority_purity_and_zero_scores():
    true = np.array([0, 0, 0, 1])
    m = cluster_metrics(true, np.zeros(4, int))
    assert m["purity"] == 0.75 and m["ari"] == pytest.approx(0.0) and m["ami"] == pytest.approx(0.0)


def test_hand_computed_ari_and_purity():
    # contingency [[2, 1], [0, 3]]: same-cluster pairs 1 + 3 = 4; class pairs 3 + 3 = 6, cluster
    # pairs 1 + 6 = 7, of 15: expected 6 * 7 / 15 = 2.8, max (6 + 7) / 2 = 6.5 -> 1.2 / 3.7
    m = cluster_metrics(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 1]))
    assert m["ari"] == pytest.approx(12 / 37) and m["purity"] == pytest.approx(5 / 6)
    assert 0 < m["ami"] < 1


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        purity([0, 1], [0])
