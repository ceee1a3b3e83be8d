"""Quality of a segmenter against true instance maps.

Detection: one-to-one centroid matching within a radius (HoVer-Net's detection F1: a prediction is
a true positive when it is paired with a distinct true nucleus whose centroid lies within 6 px at
0.25 µm/px; 12 px is HoVer-Net's other radius). Segmentation: panoptic quality (PQ = DQ x SQ,
matches at IoU > 0.5, which are unique; Kirillov et al. 2019) and the aggregated Jaccard index
(AJI; Kumar et al. 2017). Counts add up over images, so a set's score pools its nuclei.
"""

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


@dataclass(frozen=True)
class SegmentationScore:
    """PQ and AJI sums of one or many images (add them to pool a set)."""

    tp: int = 0  # instance pairs with IoU > 0.5
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0  # summed IoU of those pairs
    aji_inter: float = 0.0  # AJI numerator: intersections with each true nucleus' best match
    aji_union: float = 0.0  # AJI denominator, unmatched predictions included

    @property
    def dq(self) -> float:
        denom = self.tp + 0.5 * (self.fp + self.fn)
        return self.tp / denom if denom else 1.0

    @property
    def sq(self) -> float:
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def pq(self) -> float:
        return self.dq * self.sq

    @property
    def aji(self) -> float:
        return self.aji_inter / self.aji_union if self.aji_union else 1.0

    def __add__(self, other: SegmentationScore) -> SegmentationScore:
        return SegmentationScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.iou_sum + other.iou_sum,
            self.aji_inter + other.aji_inter,
            self.aji_union + other.aji_union,
        )


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive ids 1..n (0 stays background) and n."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        return inverse + 1, ids.size
    return inverse, ids.size - 1


def segmentation_score(pred: np.ndarray, true: np.ndarray) -> SegmentationScore:
    """PQ and AJI counts of one image's predicted vs true instance maps (vectorised).

    Args:
        pred: (H, W) int instance map, 0 = background.
        true: (H, W) int instance map of the same shape.
    """
    if pred.shape != true.shape:
        raise ValueError(f"instance maps differ in shape: {pred.shape} vs {true.shape}")
    p, n_p = _relabel(np.asarray(pred))
    t, n_t = _relabel(np.asarray(true))
    # one joint histogram: every (true, pred) overlap with its pixel count
    joint = np.bincount(
        (t.astype(np.int64) * (n_p + 1) + p).ravel(), minlength=(n_t + 1) * (n_p + 1)
    )
    joint = joint.reshape(n_t + 1, n_p + 1)
    area_t = joint.sum(axis=1)[1:]
    area_p = joint.sum(axis=0)[1:]
    inter = joint[1:, 1:].astype(np.float64)
    ti, pi = np.nonzero(inter)
    iou = np.zeros_like(inter)
    iou[ti, pi] = inter[ti, pi] / (area_t[ti] + area_p[pi] - inter[ti, pi])
    matched = iou > 0.5  # at most one per row and column
    tp = int(matched.sum())
    # AJI: each true nucleus with the prediction of largest IoU (if any overlaps)
    aji_inter = aji_union = 0.0
    used = np.zeros(n_p, bool)
    if n_t:
        best = iou.argmax(axis=1) if n_p else np.zeros(n_t, np.int64)
        has = iou[np.arange(n_t), best] > 0 if n_p else np.zeros(n_t, bool)
        b = best[has]
        aji_inter = float(inter[np.flatnonzero(has), b].sum())
        aji_union = float((area_t[has] + area_p[b] - inter[np.flatnonzero(has), b]).sum())
        aji_union += float(area_t[~has].sum())
        used[b] = True
    aji_union += float(area_p[~used].sum())
    return SegmentationScore(
        tp=tp,
        fp=n_p - tp,
        fn=n_t - tp,
        iou_sum=float(iou[matched].sum()),
        aji_inter=aji_inter,
        aji_union=aji_union,
    )


__all__ = [
    "DetectionScore",
    "SegmentationScore",
    "detection_score",
    "match_centroids",
    "segmentation_score",
]
