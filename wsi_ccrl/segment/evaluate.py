"""Detection quality of a segmenter: one-to-one centroid matching within a radius (HoVer-Net's
detection F1: a prediction is a true positive when it is paired with a distinct true nucleus whose
centroid lies within 6 px, at 0.25 µm/px)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class DetectionScore:
    """Counts and scores of one or many images (counts add up across images)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def match_centroids(
    pred: np.ndarray, true: np.ndarray, radius: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pair predicted and true centroids one-to-one, minimising total distance, within ``radius``.

    Args:
        pred: (P, 2) x, y.
        true: (T, 2) x, y.
        radius: largest distance of a match, pixels.

    Returns:
        (pred_idx, true_idx), equal-length int arrays of the matched pairs.
    """
    pred = np.asarray(pred, np.float64).reshape(-1, 2)
    true = np.asarray(true, np.float64).reshape(-1, 2)
    empty = np.zeros(0, np.int64)
    if len(pred) == 0 or len(true) == 0:
        return empty, empty
    # only pairs within the radius can match: a sparse cost matrix from a KD-tree
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius, output_type="coo_matrix")
    if pairs.nnz == 0:
        return empty, empty
    rows, cols = pairs.row, pairs.col
    # sparse assignment maximising the number of matches, then the closeness: cost < 1 for every
    # edge, and an unmatched vertex costs nothing; add a dummy partner so every vertex can match
    cost = 1.0 + pairs.data / (radius + 1e-9)  # in [1, 2): prefer many matches, then short ones
    p, t = len(pred), len(true)
    # bipartite graph (pred + dummy_true) x (true + dummy_pred), each real vertex can go to its dummy
    dummy_cost = 2.0
    r = np.concatenate([rows, np.arange(p), p + np.arange(t), p + cols])
    c = np.concatenate([cols, t + np.arange(p), np.arange(t), t + rows])
    w = np.concatenate(
        [cost, np.full(p, dummy_cost), np.full(t, dummy_cost), np.full(rows.size, 1e-9)]
    )
    graph = coo_matrix((w, (r, c)), shape=(p + t, p + t)).tocsr()
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < p) & (col_ind < t)
    return row_ind[real].astype(np.int64), col_ind[real].astype(np.int64)


def detection_score(pred: np.ndarray, true: np.ndarray, radius: float = 6.0) -> DetectionScore:
    """TP/FP/FN of one image's predicted vs true centroids (see ``match_centroids``)."""
    pi, _ = match_centroids(pred, true, radius)
    n_pred, n_true = len(np.asarray(pred).reshape(-1, 2)), len(np.asarray(true).reshape(-1, 2))
    return DetectionScore(tp=len(pi), fp=n_pred - len(pi), fn=n_true - len(pi))


__all__ = ["DetectionScore", "detection_score", "match_centroids"]
