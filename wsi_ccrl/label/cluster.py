"""K-means that scales: fit on a seeded sample of cells drawn across stores, predict every cell.

One model for all the stores of a run (so cluster 3 means the same thing on every slide), saved to
an ``.npz`` file with its provenance, so that slides labelled later get the same clusters without
refitting. faiss is used when importable; otherwise scikit-learn's ``KMeans`` for samples up to
``minibatch_above`` rows and ``MiniBatchKMeans`` beyond.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.label.features import FeatureSpace
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)
BACKENDS = ("auto", "sklearn", "faiss")
KMEANS_FORMAT = "wsi-ccrl-kmeans"


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class KMeansModel:
    """Nearest-centroid clustering of embeddings.

    Args:
        k: number of clusters.
        seed: random state of the initialisation (and of mini-batches).
        backend: ``auto`` (faiss when importable, else scikit-learn), ``sklearn`` or ``faiss``.
        minibatch_above: samples larger than this are fitted with ``MiniBatchKMeans``.
        n_init: initialisations for the full ``KMeans`` (best inertia is kept).
        features: how embeddings become K-means features (``features``); the fitted map is part
            of the model, applied in ``predict`` and saved with the centroids.

    Defaults are ``LabelConfig``'s, the one place they are set.

    Learned attributes: ``cluster_centers_`` (k, D) float32, ``n_features_in_``, ``inertia_``,
    ``n_fit_`` (rows fitted on), ``backend_``; ``info_`` holds provenance saved with the model.
    """

    def __init__(
        self,
        k: int,
        seed: int = LabelConfig.seed,
        backend: str = LabelConfig.kmeans_backend,
        minibatch_above: int = LabelConfig.kmeans_minibatch_above,
        n_init: int = LabelConfig.kmeans_n_init,
        features: str = LabelConfig.features,
    ):
        if k < 1:
            raise WsiCcrlError(f"k must be at least 1, got {k}")
        if backend not in BACKENDS:
            raise WsiCcrlError(f"K-means backend must be one of {BACKENDS}, got {backend!r}")
        self.k = k
        self.seed = seed
        self.backend = backend
        self.minibatch_above = minibatch_above
        self.n_init = n_init
        self.space_ = FeatureSpace(features)
        self.info_: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, x: np.ndarray) -> KMeansModel:
        """Fit on embeddings ``x`` (n, D); ``n >= k``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < self.k:
            raise WsiCcrlError(f"K-means needs at least k={self.k} rows, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise WsiCcrlError("embeddings contain NaN or infinity; the model may be broken")
        self.n_features_in_ = int(x.shape[1])
        x = np.ascontiguousarray(self.space_.fit(x).transform(x), dtype=np.float32)
        backend = self.backend
        if backend == "auto":
            backend = "faiss" if faiss_available() else "sklearn"
        if backend == "faiss":
            centers, inertia = self._fit_faiss(x)
        else:
            centers, inertia, backend = self._fit_sklearn(x)
        self.cluster_centers_ = centers.astype(np.float32)
        self.inertia_ = float(inertia)
        self.n_fit_ = int(x.shape[0])
        self.backend_ = backend
        log.info("K-means (%s): k=%d fitted on %d cells", backend, self.k, x.shape[0])
        return self

    def _fit_sklearn(self, x: np.ndarray) -> tuple[np.ndarray, float, str]:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if x.shape[0] > self.minibatch_above:
            km = MiniBatchKMeans(
                n_clusters=self.k,
                random_state=self.seed,
                batch_size=4096,
                n_init=self.n_init,
                max_no_improvement=20,
            ).fit(x)
            return km.cluster_centers_, km.inertia_, "sklearn-minibatch"
        km = KMeans(n_clusters=self.k, random_state=self.seed, n_init=self.n_init).fit(x)
        return km.cluster_centers_, km.inertia_, "sklearn"

    def _fit_faiss(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        import faiss

        km = faiss.Kmeans(
            x.shape[1], self.k, niter=50, nredo=self.n_init, seed=self.seed, verbose=False
        )
        km.train(x)
        return np.asarray(km.centroids), float(km.obj[-1]) if len(km.obj) else 0.0

    # ------------------------------------------------------------------ prediction
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each row of ``x`` (n, D).

        Returns:
            (labels (n,) int16, Euclidean distance to that centroid (n,) float32). Computed in
            float64 so that a row's result does not depend on the rows batched with it.
        """
        self._check_fitted()
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise WsiCcrlError(
                f"embeddings of dimension {x.shape[-1]} for a K-means model of dimension "
                f"{self.n_features_in_}"
            )
        x64 = self.space_.transform(x).astype(np.float64)
        c = self.cluster_centers_.astype(np.float64)
        d2 = (x64 * x64).sum(1)[:, None] - 2.0 * (x64 @ c.T) + (c * c).sum(1)[None, :]
        labels = d2.argmin(1)
        dist = np.sqrt(np.maximum(d2[np.arange(x.shape[0]), labels], 0.0))
        return labels.astype(np.int16), dist.astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, **info: Any) -> Path:
        """Write centroids and provenance (``info``: encoder, model, ...) atomically to ``.npz``."""
        self._check_fitted()
        path = Path(path)
        meta = {
            "format": KMEANS_FORMAT,
            "k": self.k,
            "dim": self.n_features_in_,
            "seed": self.seed,
            "backend": self.backend_,
            "n_fit": self.n_fit_,
            "inertia": self.inertia_,
            "features": self.space_.how,
            **self.info_,
            **info,
        }
        arrays = {f"features_{k}": v for k, v in self.space_.arrays().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, suffix=".npz") as tmp:
            np.savez(tmp, centers=self.cluster_centers_, meta=np.array(json.dumps(meta)), **arrays)
        self.info_ = {k: v for k, v in meta.items() if k != "format"}
        return path

    @classmethod
    def load(cls, path: str | Path) -> KMeansModel:
        """A fitted model from a file written by ``save``; one clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise WsiCcrlError(f"K-means file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                centers = np.asarray(data["centers"], np.float32)
                meta = json.loads(str(data["meta"]))
                arrays = {k[9:]: data[k] for k in data.files if k.startswith("features_")}
        except Exception:
            raise WsiCcrlError(
                f"{path} is not a K-means file (write one with `wsi-ccrl label --save-kmeans`)"
            ) from None
        if meta.get("format") != KMEANS_FORMAT or centers.ndim != 2:
            raise WsiCcrlError(f"{path} is not a wsi-ccrl K-means file")
        try:
            model = cls(
                int(meta["k"]), int(meta.get("seed", 0)), features=meta.get("features", "raw")
            )
            model.space_.load_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise WsiCcrlError(f"{path}: a damaged K-means file ({exc})") from None
        space_dim = model.space_.output_dim(int(meta.get("dim", -1)))
        if centers.shape != (model.k, space_dim):
            raise WsiCcrlError(f"{path}: centroids {centers.shape} do not match k/dim in the file")
        model.cluster_centers_ = centers
        model.n_features_in_ = int(meta["dim"])
        model.inertia_ = float(meta.get("inertia", 0.0))
        model.n_fit_ = int(meta.get("n_fit", 0))
        model.backend_ = str(meta.get("backend", "unknown"))
        model.info_ = {k: v for k, v in meta.items() if k != "format"}
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("KMeansModel is not fitted")


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks (model and K-means provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sample_indices(sizes: list[int], n: int, seed: int) -> list[np.ndarray]:
    """A seeded sample of at most ``n`` rows across stores, proportional to their sizes.

    Returns one sorted index array per store (rows of that store).
    """
    total = int(sum(sizes))
    n = min(n, total)
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(total, size=n, replace=False)) if n < total else np.arange(total)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [
        flat[(flat >= a) & (flat < b)] - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of a zarr array, reading only the chunks that hold them."""
    if rows.size == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    return np.asarray(array.oindex[(rows,) + (slice(None),) * (array.ndim - 1)])


def input_columns(model: KMeansModel) -> tuple[str, ...]:
    """The store columns a K-means model's input rows are made of, side by side."""
    return ("embedding", "descriptors") if model.space_.needs_descriptors else ("embedding",)


def fit_stores(model: KMeansModel, stores: list, fit_sample: int, seed: int) -> KMeansModel:
    """Fit ``model`` on a seeded sample of rows drawn across ``stores`` (CellStores)."""
    picks = sample_indices([s.n_cells for s in stores], fit_sample, seed)
    columns = input_columns(model)
    x = np.concatenate(
        [
            np.hstack([read_rows(s[c], rows) for c in columns])
            for s, rows in zip(stores, picks, strict=True)
        ]
    )
    model.fit(x.astype(np.float32))
    model.info_.update(fit_sample=int(x.shape[0]), sample_seed=seed)
    return model


def predict_store(model: KMeansModel, store, rows: int | None = None) -> np.ndarray:
    """Write ``cluster`` (int16) and ``cluster_distance`` (float32) for every cell, chunk-wise.

    Returns the cluster of every cell (N,) int16 (2 bytes a cell: small enough to keep).
    """
    inputs = [store[c] for c in input_columns(model)]
    clusters = store.create_column("cluster", np.int16, fill_value=-1)
    distance = store.create_column("cluster_distance", np.float32)
    out = np.empty(store.n_cells, np.int16)
    for start, stop in store.iter_ranges(rows):
        labels, dist = model.predict(np.hstack([np.asarray(a[start:stop]) for a in inputs]))
        clusters[start:stop] = labels
        distance[start:stop] = dist
        out[start:stop] = labels
    return out
