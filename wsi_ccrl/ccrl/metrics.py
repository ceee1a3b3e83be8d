"""Clustering quality against ground-truth classes: AMI, ARI (scikit-learn) and Purity.

The paper's scores, kept in ``ccrl`` because the training monitor scores with them as the
benchmark does (``bench`` sits above and imports them)."""

from __future__ import annotations

import numpy as np


def purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Σ over clusters of the count of its most frequent class, divided by the number of cells."""
    labels_true = np.asarray(labels_true).ravel()
    labels_pred = np.asarray(labels_pred).ravel()
    if labels_true.shape != labels_pred.shape:
        raise ValueError(
            f"{labels_true.shape[0]} true labels for {labels_pred.shape[0]} predictions"
        )
    if labels_true.size == 0:
        raise ValueError("purity of an empty labelling is undefined")
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (p, t), 1)  # contingency: clusters x classes
    return float(table.max(axis=1).sum() / labels_true.size)


def cluster_metrics(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """AMI, ARI and Purity, each in [0, 1] (AMI/ARI can dip below 0 for worse than chance)."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    return {
        "ami": float(adjusted_mutual_info_score(labels_true, labels_pred)),
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "purity": purity(labels_true, labels_pred),
    }
