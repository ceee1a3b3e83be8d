"""A label run's cells as one AnnData file (``label --export anndata``), for scanpy and squidpy.

``obs``: one row per cell of every slide, indexed by the cell's object ID (the GeoJSON's and the
CSV's, so the tables join; also in ``object_id``), with ``slide``, ``cell`` (the store row), ``cluster`` (categorical:
every cluster id, so ``uns["cluster_colors"]`` lines up with its categories as scanpy expects),
``cluster_name``, ``cluster_distance``, ``area_um2`` (the nucleus' pixels, NaN without µm/px),
``seg_type``, ``seg_type_name``, ``seg_prob``. ``obsm["spatial"]``: centroids, level-0 px in
QuPath's frame; ``obsm["X_ccrl"]``: the embeddings (float32). ``uns``: ``cluster_colors``,
``cluster_name_colors``, ``mpp`` per slide, ``ccrl`` (the model's file and sha256, encoder, k).
``X`` is left empty: the embedding is a representation, not measured variables.

Memory: anndata writes the file without the embeddings (about 250 bytes a cell: obs and
centroids), then h5py adds ``obsm/X_ccrl`` in anndata's array encoding and fills it one span of
store rows at a time, so the embeddings are never whole in memory. Written under a temporary name
and renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.contours import legacy_shift
from wsi_ccrl.label.export import RunFormat, cell_uuids, register_export, type_names
from wsi_ccrl.label.palette import ClusterStyles
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)

EMBEDDING_KEY = "X_ccrl"
FILL_ROWS = 65_536  # store rows read and written at once: 128 MiB of float32 512-d embeddings


@register_export("anndata")
class AnnDataFormat(RunFormat):
    """``--export anndata``: one ``cells.h5ad`` of the run, for scanpy."""

    def write(self, stores: list, stems: list[str], styles: ClusterStyles, path: Path) -> Path:
        return write_h5ad(stores, stems, styles, path)

    @staticmethod
    def file_name(suffix: str) -> str:
        return f"cells{suffix}.h5ad"


def check_labelled(stores: list) -> None:
    """One line naming the first store without complete embeddings and clusters."""
    for store in stores:
        embedded = isinstance(store.attrs.get("embedding"), dict) and "embedding" in store
        if not (embedded and "cluster" in store and "cluster_distance" in store):
            raise WsiCcrlError(
                f"{store.path} has no embeddings and clusters to export as AnnData: run label first"
            )


def write_h5ad(stores: list, stems: list[str], styles: ClusterStyles, path: str | Path) -> Path:
    """Write every cell of the labelled ``stores`` (slides named ``stems``) to ``path``."""
    import anndata
    import h5py

    check_labelled(stores)
    path = Path(path)
    dims = {int(s["embedding"].shape[1]) for s in stores}
    if len(dims) != 1:
        raise WsiCcrlError(f"the stores hold embeddings of different sizes {sorted(dims)}")
    dim = dims.pop()
    n = sum(s.n_cells for s in stores)
    adata = anndata.AnnData(
        obs=_obs(stores, stems, styles),
        obsm={"spatial": np.concatenate([_centroids(s) for s in stores])},
        uns=_uns(stores, stems, styles),
    )
    with atomic_write(path, ".h5ad") as tmp:
        adata.write_h5ad(tmp)
        del adata
        with h5py.File(tmp, "r+") as f:
            rows = max(1, min(n, FILL_ROWS))
            emb = f["obsm"].create_dataset(
                EMBEDDING_KEY, shape=(n, dim), dtype=np.float32, chunks=(min(rows, 4096), dim)
            )
            emb.attrs["encoding-type"], emb.attrs["encoding-version"] = "array", "0.2.0"
            at = 0
            for store in stores:
                for start, stop in store.iter_ranges(rows):
                    emb[at + start : at + stop] = store["embedding"][start:stop]
                at += store.n_cells
    return path


def _obs(stores: list, stems: list[str], styles: ClusterStyles):
    """The per-cell table, built column by column from whole arrays."""
    import anndata
    import pandas as pd

    sizes = [s.n_cells for s in stores]
    cluster = np.concatenate([np.asarray(s["cluster"][:], np.int64) for s in stores])
    types = {}
    for s in stores:
        types.update(type_names(s))
    type_list = sorted(set(types.values()))
    seg_type = np.concatenate([np.asarray(s["seg_type"][:], np.int64) for s in stores])
    lookup = {code: type_list.index(name) for code, name in types.items()}
    type_code = np.full(seg_type.shape, -1, np.int64)  # -1: a type the segmenter did not name
    for code, idx in lookup.items():
        type_code[seg_type == code] = idx
    area = np.concatenate(
        [np.asarray(s["area"][:], np.float32) * np.float32((s.mpp or np.nan) ** 2) for s in stores]
    )
    ids = np.concatenate([cell_uuids(_key(s), 0, s.n_cells) for s in stores])
    obs = pd.DataFrame(
        {
            "slide": pd.Categorical.from_codes(np.repeat(np.arange(len(stores)), sizes), stems),
            "cell": np.concatenate([np.arange(k, dtype=np.int64) for k in sizes]),
            "cluster": pd.Categorical.from_codes(cluster, [str(i) for i in range(styles.k)]),
            "cluster_name": pd.Categorical.from_codes(cluster, list(styles.names)),  # unique
            "cluster_distance": np.concatenate(
                [np.asarray(s["cluster_distance"][:], np.float32) for s in stores]
            ),
            "area_um2": area,
            "seg_type": seg_type.astype(np.int16),
            "seg_type_name": pd.Categorical.from_codes(type_code, type_list),
            "seg_prob": np.concatenate([np.asarray(s["seg_prob"][:], np.float32) for s in stores]),
        },
        index=pd.Index(ids.astype(object), name="object_id"),
    )
    obs.insert(0, "object_id", obs.index.to_numpy())
    if not obs.index.is_unique:  # two stores of one slide file: their IDs are the same
        log.warning("cells of one slide in two stores share object IDs; obs_names made unique")
        obs.index = anndata.utils.make_index_unique(obs.index)
    return obs


def _key(store) -> str:
    """The key of the cells' object IDs: the one ``export_store`` uses."""
    return str(store.attrs.get("slide", {}).get("path") or store.path.name)


def _centroids(store) -> np.ndarray:
    """Level-0 centroids in QuPath's frame (stores from before it: moved as their outlines are)."""
    return np.asarray(store["centroid"][:], np.float32) + np.float32(legacy_shift(store.attrs))


def _uns(stores: list, stems: list[str], styles: ClusterStyles) -> dict:
    def hexed(rgb) -> str:
        return "#{:02x}{:02x}{:02x}".format(*rgb)

    colours = np.array([hexed(c) for _, c in styles.styles()], dtype=object)
    label = stores[0].attrs.get("label") or {}
    return {
        "cluster_colors": colours,
        "cluster_name_colors": colours,
        "mpp": {stem: float(s.mpp or np.nan) for s, stem in zip(stores, stems, strict=True)},
        "ccrl": {
            "model": str(label.get("model", "")),
            "model_sha256": str(label.get("model_sha256", "")),
            "encoder": str(label.get("encoder", "")),
            "k": int(styles.k),
        },
    }
