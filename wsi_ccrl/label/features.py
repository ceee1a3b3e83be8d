"""From backbone embeddings to the features K-means clusters: one rule for `label` and `benchmark`.

Contrastive embeddings live on (or near) a sphere: their length carries little meaning and a few
directions carry most of the variance, so how they are scaled before K-means matters as much as
the training. The choices, measured on the validation split (BENCHMARKS.md, CCRL ablation):

- ``raw``: the 512-d pooled backbone features as they are;
- ``l2``: L2-normalised (cosine geometry, as InfoNCE trained them);
- ``whiten``: centred, PCA-whitened to ``dims`` components with statistics of the fitting cells,
  then L2-normalised, so no single dominant direction (often stain intensity) decides the clusters.
- ``joint``: the L2-normalised embedding beside the cell's seven ``descriptors`` (size in µm,
  elongation, the nucleus's colour), each block scaled to unit total variance on the fitting
  cells, so both weigh alike. Its input rows are ``[embedding, descriptors]``. The embedding
  cannot see absolute size (the crop window follows the nucleus); end to end on CoNSeP's and
  BRCA-M2C's validation images it beat ``l2`` on both (BENCHMARKS.md, "Label quality end to end").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_ccrl.config import FEATURES, LabelConfig

N_DESCRIPTORS = 7  # trailing columns of a ``joint`` input row (``label.descriptors``)


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
    scale: np.ndarray | None = None  # joint: per input column, what centred values divide by

    def __post_init__(self):
        if self.how not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.how!r}")

    def fit(self, x: np.ndarray) -> FeatureSpace:
        """Learn the whitening / block scaling from the fitting cells (no-op for raw / l2)."""
        if self.how == "joint":
            emb, desc = self._split(x)
            emb = l2_normalize(emb).astype(np.float64)
            std = desc.astype(np.float64).std(0)
            std[std < 1e-8] = 1.0
            emb_total = np.sqrt(max(float(emb.var(0).sum()), 1e-12))
            self.mean = np.concatenate([emb.mean(0), desc.astype(np.float64).mean(0)])
            self.mean = self.mean.astype(np.float32)
            desc_scale = std * np.sqrt(desc.shape[1])  # z-scores, then the block to unit variance
            self.scale = np.concatenate([np.full(emb.shape[1], emb_total), desc_scale])
            self.scale = self.scale.astype(np.float32)
            return self
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
        if self.how == "joint":
            if self.scale is None:
                raise ValueError("FeatureSpace('joint') must be fit first")
            emb, desc = self._split(x)
            return (np.hstack([l2_normalize(emb), desc]) - self.mean) / self.scale
        if self.projection is None:
            raise ValueError("FeatureSpace('whiten') must be fit first")
        return l2_normalize((l2_normalize(x) - self.mean) @ self.projection)

    @staticmethod
    def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] <= N_DESCRIPTORS:
            raise ValueError(f"joint features need [embedding, {N_DESCRIPTORS} descriptors] rows")
        return x[:, :-N_DESCRIPTORS], x[:, -N_DESCRIPTORS:]

    def output_dim(self, input_dim: int) -> int:
        """Dimension of the features for ``input_dim``-d embeddings (once fitted)."""
        return int(self.projection.shape[1]) if self.projection is not None else input_dim

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted map's arrays, saved with a K-means model so later slides get the same map."""
        if self.how == "joint" and self.scale is not None:
            return {"mean": self.mean, "scale": self.scale}
        if self.projection is None:
            return {}
        return {"mean": self.mean, "projection": self.projection}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> FeatureSpace:
        if self.how == "whiten":
            self.mean = np.asarray(arrays["mean"], np.float32)
            self.projection = np.asarray(arrays["projection"], np.float32)
        if self.how == "joint":
            self.mean = np.asarray(arrays["mean"], np.float32)
            self.scale = np.asarray(arrays["scale"], np.float32)
        return self

    @property
    def needs_descriptors(self) -> bool:
        """Whether input rows carry the cell's descriptors after the embedding."""
        return self.how == "joint"
