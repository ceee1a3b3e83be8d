"""``label``: embed every cell, cluster all slides with one K-means model, export overlays.

Every check that can fail on the user's input (model vs store crop size, empty stores, k against the
number of cells, the names file, a K-means file of another model) runs before any embedding starts,
so a bad input costs one line and leaves nothing half-written. Each output is written under a
temporary name and renamed. A store that fails its check (``io/verify``) is skipped in one warning
line, as an empty one is, and the summary names it. The new ``embedding``, ``cluster`` and
``cluster_distance`` replace a store's previous ones as one set (``io/labelset``), so a run stopped
at any point leaves the previous set or the new one, never a mix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_ccrl.config import LabelConfig, dump_yaml, to_dict
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io import labelset
from wsi_ccrl.io.store import CellStore, drop_empty, find_stores
from wsi_ccrl.io.store_lock import StoreLock
from wsi_ccrl.io.verify import Problem, usable_stores
from wsi_ccrl.label.cluster import (
    KMeansModel,
    file_sha256,
    fit_stores,
    predict_store,
    read_rows,
    sample_indices,
)
from wsi_ccrl.label.embed import embed_store
from wsi_ccrl.label.export import (
    SlideFormat,
    check_exports,
    default_compress,
    export_format,
    export_store,
)
from wsi_ccrl.label.features import N_DESCRIPTORS
from wsi_ccrl.label.palette import ClusterStyles, cluster_styles
from wsi_ccrl.label.report import write_report
from wsi_ccrl.label.visualize import draw_gallery, draw_overview
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import resolve_device
from wsi_ccrl.segment.cohort import select_shard

log = get_logger(__name__)
RESOLVED_CONFIG = "label_config.yaml"
GALLERY = "gallery.png"


@dataclass
class SlideResult:
    """What was written for one store."""

    store: Path
    stem: str
    n_cells: int
    counts: list[int]
    files: list[Path] = field(default_factory=list)
    repaired: int = 0
    vertices: int = 0
    embedded: bool = True  # False when the store's embeddings from this model were reused


@dataclass
class LabelSummary:
    """What a ``label`` run did, for the CLI to print."""

    k: int
    encoder: str
    fitted: bool  # False when the centroids came from a --kmeans file
    slides: list[SlideResult]
    gallery: Path
    config: Path
    kmeans: Path | None
    seconds: float
    styles: ClusterStyles
    run_files: dict[str, Path] = field(default_factory=dict)  # per-run exports, by format
    report: Path | None = None  # report.html
    skipped: list[list[Problem]] = field(default_factory=list)  # stores that failed to read
    n_stores: int = 0  # stores given (of the shard), skipped ones included

    @property
    def n_cells(self) -> int:
        return sum(s.n_cells for s in self.slides)

    @property
    def h5ad(self) -> Path | None:
        """``--export anndata``: the .h5ad of every cell of the run."""
        return self.run_files.get("anndata")


def store_stem(path: Path) -> str:
    """``slide`` for ``.../slide.zarr``: the name of the slide's outputs."""
    name = path.name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def label_stores(
    model_path: str | Path,
    stores: list[str | Path],
    out_dir: str | Path,
    cfg: LabelConfig,
    kmeans_path: str | Path | None = None,
    save_kmeans: str | Path | None = None,
    names: str | Path | None = None,
    shard: tuple[int, int] | None = None,
) -> LabelSummary:
    """Embed, cluster and export every cell of ``stores`` with one K-means model.

    Args:
        model_path: a ``model.pt`` written by ``train``.
        stores: cell stores, or folders holding them.
        out_dir: where the per-slide exports, the gallery and the resolved config go.
        cfg: the label config (k, encoder, exports, ...).
        kmeans_path: reuse the centroids of this file instead of fitting (its k wins).
        save_kmeans: write the fitted (or reused) centroids here.
        names: YAML file mapping cluster ids to names and colours.
        shard: (I, N): label only every N-th store from the I-th (a job array's element), with
            the centroids of ``kmeans_path`` (``fit_kmeans`` writes them from a sample).
    """
    from wsi_ccrl.ccrl.model_io import load_backbone

    t0 = time.perf_counter()
    cfg.validate()
    check_exports(cfg.export)  # the registered formats, before any work
    if shard is not None and kmeans_path is None:
        raise WsiCcrlError(
            "--shard labels a share of a cohort with saved centroids: fit them first "
            "(label --fit-only --save-kmeans km.npz), then pass --kmeans km.npz"
        )
    device = resolve_device(cfg.device)
    backbone, meta = load_backbone(model_path, cfg.encoder)
    model_hash = file_sha256(model_path)
    paths = _store_paths(stores, shard)
    # one writer per store, as `segment`: a second label run of the same store stops here
    locks = [StoreLock(p) for p in paths]
    try:
        for lock in locks:
            lock.acquire()
        opened, skipped = _open_stores(paths, int(meta["crop_size"]))
        for store in opened:
            labelset.recover(store)  # a stopped run's swap is finished, its staging dropped
        staged = {s.path: labelset.Staged(s) for s in opened}
        stems = [store_stem(s.path) for s in opened]
        dim = int(getattr(backbone, "feature_dim", 512))
        km = _kmeans_for(cfg, kmeans_path, sum(s.n_cells for s in opened), dim, model_hash)
        styles = cluster_styles(km.k, names)
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise WsiCcrlError(f"--out {out_dir} is a file, not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)

        embedded = {}
        source = {"model_sha256": model_hash, "encoder": cfg.encoder, "dim": dim}
        for store in opened:
            if cfg.reuse_embeddings and _has_embeddings(store, source):
                log.info("%s: reusing its embeddings from the same model", store.path.name)
                embedded[store.path] = False
                continue
            log.info(
                "embedding %s (%d cells, %s encoder)", store.path.name, store.n_cells, cfg.encoder
            )
            embed_store(
                staged[store.path], backbone, cfg.batch_size, device, engine=cfg.engine,
                gpus=cfg.gpus,
            )  # fmt: skip
            staged[store.path].seal("embedding")
            embedded[store.path] = True
        if km.space_.needs_descriptors:
            for store in opened:
                _write_descriptors(store)
        fitted = not hasattr(km, "cluster_centers_")
        if fitted:
            fit_stores(km, list(staged.values()), cfg.fit_sample, cfg.seed)
            km.info_.update(encoder=cfg.encoder, model=str(model_path), model_sha256=model_hash)
        if save_kmeans is not None:
            km.save(
                save_kmeans, encoder=cfg.encoder, model=str(model_path), model_sha256=model_hash
            )
        provenance = {
            "model": str(model_path),
            "model_sha256": model_hash,
            "encoder": cfg.encoder,
            "k": km.k,
            "kmeans": (
                {"file": str(kmeans_path), "sha256": file_sha256(kmeans_path)}
                if kmeans_path is not None
                else {"fitted_on": km.n_fit_, "seed": cfg.seed, "backend": km.backend_}
            ),
            "names": styles.as_dict(),
            "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

        results, all_clusters = [], []
        for store, stem in zip(opened, stems, strict=True):
            clusters = predict_store(km, staged[store.path])
            staged[store.path].seal("cluster", "cluster_distance")
            # the new set replaces the old one whole, or not at all (io/labelset)
            labelset.commit(staged[store.path], label=provenance, embedding=source)
            all_clusters.append(clusters)
            result = SlideResult(
                store.path,
                stem,
                store.n_cells,
                np.bincount(clusters, minlength=km.k).tolist(),
                embedded=embedded[store.path],
            )
            _export_slide(store, clusters, styles, out_dir, cfg, result)
            results.append(result)
            log.info("%s: %d cells labelled", stem, store.n_cells)

        suffix = "" if shard is None else f"-shard{shard[0]}of{shard[1]}"
        gallery_name = GALLERY if shard is None else f"gallery{suffix}.png"
        gallery = draw_gallery(
            opened,
            all_clusters,
            styles,
            out_dir / gallery_name,
            cfg.gallery_per_cluster,
            cfg.seed,
            cfg.gallery_tile,
        )
        config_path = out_dir / RESOLVED_CONFIG
        dump_yaml("label", cfg, config_path)
        run_files = {}
        for name in cfg.export:  # one file of every cell of the run (AnnData, ...)
            fmt = export_format(name)
            if not issubclass(fmt, SlideFormat):
                path = out_dir / fmt.file_name(suffix)
                run_files[name] = fmt().write(opened, stems, styles, path)
        report = write_report(
            out_dir / f"report{suffix}.html",
            results,
            styles,
            gallery,
            opened,
            all_clusters,
            [*run_files.values(), config_path],
            cfg.seed,
        )
        log.debug("resolved config: %s", to_dict(cfg))
        return LabelSummary(
            k=km.k,
            encoder=cfg.encoder,
            fitted=fitted,
            slides=results,
            gallery=gallery,
            config=config_path,
            kmeans=Path(save_kmeans) if save_kmeans is not None else None,
            seconds=time.perf_counter() - t0,
            styles=styles,
            run_files=run_files,
            report=report,
            skipped=skipped,
            n_stores=len(paths),
        )
    finally:
        for lock in locks:
            lock.release()


def fit_kmeans(
    model_path: str | Path, stores: list[str | Path], save_kmeans: str | Path, cfg: LabelConfig
) -> KMeansModel:
    """``label --fit-only``: the K-means of a cohort from a sample of its cells, embedding only
    the sample, saved for ``label --kmeans FILE --shard I/N`` jobs.

    The sample is the one a whole ``label`` run fits on (same stores, ``fit_sample``, ``seed``),
    embedded the same way (stored as float16 there, so cast here), so the centroids are the ones
    a one-process run finds; nothing is written into the stores.
    """
    import torch

    from wsi_ccrl.ccrl.embed import embed_crops
    from wsi_ccrl.ccrl.model_io import load_backbone
    from wsi_ccrl.engine import cpu_runner
    from wsi_ccrl.label.descriptors import row_descriptors
    from wsi_ccrl.label.embed import parallel_backbone

    cfg.validate()
    device = resolve_device(cfg.device)
    backbone, meta = load_backbone(model_path, cfg.encoder)
    model_hash = file_sha256(model_path)
    opened, skipped = _open_stores(_store_paths(stores), int(meta["crop_size"]), mode="r")
    dim = int(getattr(backbone, "feature_dim", 512))
    km = _kmeans_for(cfg, None, sum(s.n_cells for s in opened), dim, model_hash)
    net = parallel_backbone(backbone, device, cfg.gpus)
    side = int(meta["crop_size"])  # the engine label runs, so the sample embeds as label embeds it
    runner = cpu_runner(backbone, torch.zeros(1, 3, side, side), cfg.engine, device, "ccrl_encoder")
    picks = sample_indices([s.n_cells for s in opened], cfg.fit_sample, cfg.seed)
    rows_x = []
    for store, rows in zip(opened, picks, strict=True):
        crops = read_rows(store["crops"], rows)
        x = embed_crops(net, crops, cfg.batch_size, device, runner).astype(np.float16)
        x = x.astype(np.float32)
        if km.space_.needs_descriptors:
            x = np.hstack([x, row_descriptors(store, rows)])
        rows_x.append(x)
        log.info("%s: %d sampled cells embedded", store.path.name, len(rows))
    km.fit(np.concatenate(rows_x))
    km.info_.update(fit_sample=int(sum(len(r) for r in picks)), sample_seed=cfg.seed)
    km.info_["skipped"] = [str(problems[0]) for problems in skipped]  # stores that failed to read
    km.save(save_kmeans, encoder=cfg.encoder, model=str(model_path), model_sha256=model_hash)
    return km


def _store_paths(stores: list[str | Path], shard: tuple[int, int] | None = None) -> list[Path]:
    """The stores (of the shard); refuse clashing names and a shard that holds no store."""
    paths = find_stores(list(stores))
    if shard is not None:
        paths = select_shard(paths, shard)
        if not paths:
            raise WsiCcrlError(
                f"--shard {shard[0]}/{shard[1]} holds no store: the cohort has "
                f"{len(find_stores(list(stores)))}; use N <= the number of stores"
            )
    stems = [store_stem(p) for p in paths]
    dup = next((s for s in stems if stems.count(s) > 1), None)
    if dup is not None:
        raise WsiCcrlError(
            f"two stores are named {dup!r}; their exports would overwrite each other"
        )
    return paths


def _open_stores(
    paths: list[Path], crop_size: int, mode: str = "r+"
) -> tuple[list[CellStore], list[list[Problem]]]:
    """Open the stores that read (``io/verify``: a broken one is skipped in one warning line, as
    an empty one is), refuse foreign crop sizes; also the problems of the skipped stores."""
    usable, skipped = usable_stores(paths, labels=False)  # label replaces the label columns
    opened = drop_empty([CellStore.open(p, mode=mode) for p in usable])
    for store in opened:
        if store.crop_size != crop_size:
            raise WsiCcrlError(
                f"{store.path} has {store.crop_size} px crops but the model was trained on "
                f"{crop_size} px crops; segment with crop_size {crop_size} or use a matching model"
            )
    return opened, skipped


def _export_slide(
    store: CellStore,
    clusters: np.ndarray,
    styles: ClusterStyles,
    out_dir: Path,
    cfg: LabelConfig,
    result: SlideResult,
) -> None:
    """The per-slide files: GeoJSON (gzipped when asked, or by default above
    ``GZIP_ABOVE_CELLS`` cells), CSV, overview PNG; GeoJSON and CSV in one pass."""
    stem = result.stem
    compress = default_compress(store.n_cells) if cfg.compress is None else cfg.compress
    files = {}
    for name in cfg.export:
        fmt = export_format(name)
        if not issubclass(fmt, SlideFormat):
            continue  # written once for the run
        files[name] = out_dir / f"{stem}{fmt.suffix}{'.gz' * (compress and fmt.compressible)}"
        if fmt.compressible:  # never two overlays of one slide side by side
            other = out_dir / f"{stem}{fmt.suffix}{'' if compress else '.gz'}"
            other.unlink(missing_ok=True)
        result.files.append(files[name])
    if files:
        counts = export_store(store, styles, files, compress=compress, simplify=cfg.simplify)
        result.repaired, result.vertices = counts["repaired"], counts["vertices"]
    result.files.append(overview := out_dir / f"{stem}.overview.png")
    draw_overview(store, clusters, styles, overview, cfg.overview_max_side)


def _write_descriptors(store: CellStore) -> None:
    """The ``descriptors`` column (``label.descriptors``), unless the store already has it: they
    depend on the segmentation alone, not on the model."""
    from wsi_ccrl.label.descriptors import DESCRIPTORS, store_descriptors

    if store.attrs.get("descriptors") == list(DESCRIPTORS) and "descriptors" in store:
        return
    store.update_attrs(descriptors=None)  # invalid until the column is complete
    column = store.create_column("descriptors", np.float32, (len(DESCRIPTORS),))
    for start, stop in store.iter_ranges():
        column[start:stop] = store_descriptors(store, start, stop)
    store.update_attrs(descriptors=list(DESCRIPTORS))


def _has_embeddings(store: CellStore, source: dict) -> bool:
    """Whether the store holds complete embeddings from this model file and encoder."""
    return (
        store.attrs.get("embedding") == source
        and "embedding" in store
        and store["embedding"].shape == (store.n_cells, source["dim"])
    )


def _kmeans_for(
    cfg: LabelConfig, kmeans_path: str | Path | None, total: int, dim: int, model_hash: str
) -> KMeansModel:
    """A loaded (and checked) K-means model, or an unfitted one that can be fitted here."""
    if kmeans_path is None:
        n_fit = min(cfg.fit_sample, total)
        if cfg.k > n_fit:
            raise WsiCcrlError(
                f"k={cfg.k} clusters but only {n_fit} cells to fit on "
                f"({total} cells, fit_sample={cfg.fit_sample}); lower --k"
            )
        return KMeansModel(
            cfg.k,
            cfg.seed,
            cfg.kmeans_backend,
            minibatch_above=cfg.kmeans_minibatch_above,
            n_init=cfg.kmeans_n_init,
            features=cfg.features,
        )
    km = KMeansModel.load(kmeans_path)
    extra = N_DESCRIPTORS if km.space_.needs_descriptors else 0
    if km.n_features_in_ != dim + extra:
        raise WsiCcrlError(
            f"{kmeans_path} holds {km.n_features_in_ - extra}-d centroids but the model gives "
            f"{dim}-d embeddings"
        )
    if km.k != cfg.k:
        raise WsiCcrlError(f"{kmeans_path} has k={km.k} but k={cfg.k} was asked; drop --k")
    encoder = km.info_.get("encoder")
    if encoder and encoder != cfg.encoder:
        raise WsiCcrlError(
            f"{kmeans_path} was fitted on {encoder}-encoder embeddings, not {cfg.encoder}"
        )
    fitted_hash = km.info_.get("model_sha256")
    if fitted_hash and fitted_hash != model_hash:
        raise WsiCcrlError(
            f"{kmeans_path} was fitted on another model's embeddings "
            f"({km.info_.get('model', '?')}); its clusters mean nothing for this model"
        )
    return km
