"""From backbone embeddings to the features K-means clusters: one rule for `label` and `benchmark`.

Contrastive embeddings live on (or near) a sphere: their length carries little meaning and a few
directions carry most of the variance, so how they are scaled before K-means matters as much as
the training. The choices, measured on the validation split (BENCHMARKS.md, CCRL ablation):

- ``raw``: the 512-d pooled backbone features as they are;
- ``l2``: L2-normalised (cosine geometry, as InfoNCE trained them);
- ``whiten``: centred, PCA-whitened to ``dims`` components with statistics of the fitting cells,
  then L2-normalised, so no single dominant direction (often stain intensity) decides the clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_ccrl.config import LabelConfig

FEATURES = ("raw", "l2", "whiten")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class FeatureSpace:
    """A fitted embedding → K-means feature map (see the module docstring for ``how``)."""

    how: str = LabelConfig.features
    dims: int = 64
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None  # (D, dims): PCA components / sqrt(eigenvalue)

    def __post_init__(self):
        if self.how not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.how!r}")

    def fit(self, x: np.ndarray) -> FeatureSpace:
        """Learn the whitening from the fitting cells' embeddings (no-op for raw / l2)."""
        if self.how != "whiten":
            return self
        x = l2_normalize(x).astype(np.float64)
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        k = min(self.dims, vt.shape[0])
        scale = s[:k] / np.sqrt(max(len(x) - 1, 1))
        self.projection = (vt[:k].T / np.maximum(scale, 1e-8)).astype(np.float32)
        self.mean = self.mean.astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.how == "raw":
            return x
        if self.how == "l2":
            return l2_normalize(x)
        if self.projection is None:
            raise ValueError("FeatureSpace('whiten') must be fit first")
        return l2_normalize((l2_normalize(x) - self.mean) @ self.projection)

    def output_dim(self, input_dim: int) -> int:
        """Dimension of the features for ``input_dim``-d embeddings (once fitted)."""
        return int(self.projection.shape[1]) if self.projection is not None else input_dim

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted map's arrays, saved with a K-means model so later slides get the same map."""
        if self.projection is None:
            return {}
        return {"mean": self.mean, "projection": self.projection}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> FeatureSpace:
        if self.how == "whiten":
            self.mean = np.asarray(arrays["mean"], np.float32)
            self.projection = np.asarray(arrays["projection"], np.float32)
        return self
