"""Label quality end to end: what a user's labels are worth on a cohort nobody tuned on.

The paper's protocol (``protocol``) clusters ground-truth nuclei. Here every image of a data set
with typed nuclei goes through the tool as a user runs it: ``segment`` (each image at its own
resolution, one store per image), ``train`` on the cohort's own detections (no labels), the
``label`` read-out (K-means fit on a sample of all detections, every detection assigned), and
only then are detections matched one-to-one to typed nuclei (points within ``radius_um``) and
scored. Every baseline clusters the same detections with K-means fit on the same sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.bench.datasets.common import TypedImage
from wsi_ccrl.ccrl.metrics import cluster_metrics
from wsi_ccrl.config import BenchmarkConfig, LabelConfig, SegmentConfig, to_dict
from wsi_ccrl.errors import ConfigError
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write_text

log = get_logger(__name__)


@dataclasses.dataclass
class Cohort:
    """The detections of every image, matched to the typed nuclei."""

    stores: list[Path]
    images: list[TypedImage]
    gt_class: list[np.ndarray]  # per store: (n_cells,) class of the matched nucleus, -1 for none
    counts: dict[str, Any]


def segment_images(images: list[TypedImage], out_dir: Path, cfg: SegmentConfig) -> list[Path]:
    """One store per image, each segmented at the image's own resolution (reused when done)."""
    from wsi_ccrl.segment import build_segmenter
    from wsi_ccrl.segment.pipeline import segment_slide

    seg = build_segmenter(cfg)
    stores = []
    for im in images:
        store = segment_slide(im.path, out_dir, dataclasses.replace(cfg, mpp=im.mpp), seg)
        stores.append(store.path)
    return stores


def match_cohort(
    stores: list[Path], images: list[TypedImage], radius_um: float, n_classes: int
) -> Cohort:
    """Each store's detections paired one-to-one with its image's typed points."""
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.segment.evaluate import match_centroids

    gts = []
    counts = {"images": len(images), "truth": 0, "detected": 0, "matched": 0}
    counts["classes"] = np.zeros(n_classes, np.int64)
    for path, im in zip(stores, images, strict=True):
        store = CellStore.open(path)
        centroid = np.asarray(store["centroid"][:], np.float64)  # level 0, pixel-edge frame
        pred, true = match_centroids(centroid, im.points, radius_um / im.mpp)
        gt = np.full(store.n_cells, -1, np.int64)
        gt[pred] = im.classes[true]
        gts.append(gt)
        counts["truth"] += len(im.points)
        counts["detected"] += store.n_cells
        counts["matched"] += len(pred)
        counts["classes"] += np.bincount(gt[pred], minlength=n_classes)
    counts["classes"] = counts["classes"].tolist()
    return Cohort(stores, images, gts, counts)


def load_cohort_cells(cohort: Cohort):
    """Every detection of the cohort as one ``CellSet`` (``gt_class``: matched class or -1), its
    seven ``descriptors`` (sizes in µm, from each store's resolution) and the index of the image
    each comes from."""
    from wsi_ccrl.bench.datasets.common import CellSet
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.descriptors import cell_descriptors

    parts, image, descriptors = [], [], []
    for i, (path, gt) in enumerate(zip(cohort.stores, cohort.gt_class, strict=True)):
        store = CellStore.open(path)
        offsets, xy = store.contours()
        parts.append(
            CellSet(
                crops=store["crops"][:],
                area=store["area"][:],
                bbox=store["bbox"][:],
                contour_offsets=offsets,
                contour_xy=xy,
                gt_class=gt.astype(np.int16),
            )
        )
        image.append(np.full(store.n_cells, i, np.int32))
        c = parts[-1]  # the descriptors from what was read, sizes in µm of this store
        descriptors.append(
            cell_descriptors(c.area, c.bbox, c.contour_offsets, c.contour_xy, c.crops, store.mpp)
        )
    return CellSet.concat(parts), np.concatenate(descriptors), np.concatenate(image)


def score_clusters(
    x: np.ndarray,
    fit_rows: np.ndarray,
    scored: dict[str, np.ndarray],
    y: np.ndarray,
    k: int,
    seeds: tuple[int, ...],
    n_init: int,
) -> dict[str, list[dict[str, float]]]:
    """K-means fit on ``x[fit_rows]`` (as ``label`` fits on a sample), every row assigned, then
    AMI / ARI / Purity over each named set of matched rows, once per seed."""
    from sklearn.cluster import KMeans

    x = np.asarray(x, np.float64)
    out: dict[str, list] = {name: [] for name in scored}
    for seed in seeds:
        pred = KMeans(k, n_init=n_init, random_state=seed).fit(x[fit_rows]).predict(x)
        for name, rows in scored.items():
            out[name].append(cluster_metrics(y[rows], pred[rows]))
    return out


def run_detected(
    dataset: str,
    images: list[TypedImage],
    classes: tuple[str, ...],
    evaluated: tuple[str, ...],
    out_dir: str | Path,
    cfg: BenchmarkConfig,
    seg_cfg: SegmentConfig,
    label_cfg: LabelConfig,
    radius_um: float = 3.0,
) -> dict[str, Any]:
    """Segment, train, label and score a cohort of typed images; write ``results.json`` / ``.md``.

    Args:
        dataset: its name, for the report.
        images: the cohort: every image is segmented and trained on.
        classes: the data set's class names (``TypedImage.classes`` indexes them).
        evaluated: the splits whose matched detections are scored as "evaluated"; every matched
            detection of the cohort is scored as "cohort" too.
        cfg: models, seeds and CCRL's training settings; ``seg_cfg``: how images are segmented;
            ``label_cfg``: the read-out (``features``, ``fit_sample``, ``seed``) as ``label`` uses it.
        radius_um: largest distance between a detection and the typed point it is matched to.
    """
    from wsi_ccrl.bench import protocol as bm
    from wsi_ccrl.bench.baselines import imagenet_missing_message, make_baseline, scale_features
    from wsi_ccrl.bench.report import machine_info
    from wsi_ccrl.label.cluster import sample_indices
    from wsi_ccrl.label.features import FeatureSpace
    from wsi_ccrl.runtime import resolve_device

    t_start = time.time()
    out_dir = Path(out_dir)
    device = str(resolve_device(cfg.device))
    train_cfg = dataclasses.replace(cfg.train, device=device, crop_size=seg_cfg.crop_size)
    seg_cfg = dataclasses.replace(seg_cfg, device=device)
    stores = segment_images(images, out_dir / "stores", seg_cfg)
    cohort = match_cohort(stores, images, radius_um, len(classes))
    cells, descriptors, image_of = load_cohort_cells(cohort)
    y = cells.gt_class.astype(np.int64)
    in_eval = np.array([im.split in evaluated for im in images])[image_of]
    scored = {"evaluated": np.flatnonzero((y >= 0) & in_eval), "cohort": np.flatnonzero(y >= 0)}
    (fit_rows,) = sample_indices([len(cells)], label_cfg.fit_sample, label_cfg.seed)
    k = len(classes)
    seeds, n_init = tuple(cfg.seeds), cfg.kmeans_n_init
    log.info(
        "%d images, %d detections (%d matched, %d evaluated), K-means k = %d fit on %d",
        len(images), len(cells), len(scored["cohort"]), len(scored["evaluated"]), k, len(fit_rows),
    )  # fmt: skip
    results: dict[str, Any] = {"models": {}, "skipped": {}, "timings_s": {}}

    def record(model: str, runs: dict, seconds: float) -> None:
        bm.record_model(results, model, runs, seconds, "evaluated")

    fit_cells = cells.select(np.isin(np.arange(len(cells)), fit_rows[: cfg.max_train_cells]))
    for model in (m for m in cfg.models if m not in bm.CCRL_VARIANTS):
        if model == "imagenet" and (message := imagenet_missing_message()):
            results["skipped"][model] = message
            continue
        t0 = time.time()
        if model == "shape_colour":  # the numbers `label` joins, in µm per each store's mpp
            x = descriptors
        else:
            x = make_baseline(model, 0, cfg.imagenet_size, device).fit(fit_cells).transform(cells)
        _, x = scale_features(model, x[fit_rows], x)  # scaled with the fitting cells' statistics
        record(model, score_clusters(x, fit_rows, scored, y, k, seeds, n_init), time.time() - t0)

    # a model is reused only for the same cohort (and config: ``train_ccrl``'s stamp)
    cohort_key = hashlib.sha256("\n".join(sorted(p.name for p in stores)).encode()).hexdigest()[:8]
    for model in (m for m in cfg.models if m in bm.CCRL_VARIANTS):
        run, encoder = bm.CCRL_VARIANTS[model]
        run_cfg = bm.ccrl_runs(dataclasses.replace(cfg, models=(model,)))[run]
        run_cfg = dataclasses.replace(run_cfg, device=device, crop_size=seg_cfg.crop_size)
        t0 = time.time()
        # the read-out `label` uses, and the embedding alone beside it when that differs
        readouts = {model: label_cfg.features, f"{model}, embedding alone (l2)": "l2"}
        if label_cfg.features == "l2":
            readouts = {model: "l2"}
        runs = {name: {scope: [] for scope in scored} for name in readouts}
        for seed in cfg.train_seeds:
            path = bm.train_ccrl(stores, out_dir, f"{run}-{cohort_key}", run_cfg, seed)
            emb = bm.embed(path, encoder, cells.crops, cfg, device)
            for name, how in readouts.items():
                space = FeatureSpace(how)
                x = np.hstack([emb, descriptors]) if space.needs_descriptors else emb
                x = space.fit(x[fit_rows]).transform(x)  # as `label` clusters
                for scope, rs in score_clusters(x, fit_rows, scored, y, k, seeds, n_init).items():
                    runs[name][scope].extend(rs)
        for name in readouts:
            record(name, runs[name], time.time() - t0)

    results.update(
        dataset=dataset,
        evaluated_images=describe_evaluated(dataset, evaluated, cfg),
        classes=list(classes),
        evaluated_splits=list(evaluated),
        detection=cohort.counts,
        n_cells=len(cells),
        n_evaluated=len(scored["evaluated"]),
        n_fit=len(fit_rows),
        radius_um=radius_um,
        features=label_cfg.features,
        segment=to_dict(seg_cfg),
        segmenter=_segmenter_name(stores),
        config=to_dict(dataclasses.replace(cfg, train=train_cfg)),
        machine=machine_info(device),
        total_seconds=round(time.time() - t_start, 1),
    )
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", format_detected(results))
    return results


def format_detected(r: dict[str, Any]) -> str:
    """Markdown: detection counts, then each model's scores on the evaluated and cohort cells."""
    from wsi_ccrl.bench.report import machine_line, model_label, percent_pm

    c, train = r["detection"], r["config"]["train"]
    lines = [
        f"# wsi-ccrl benchmark, end to end — {r['dataset']}",
        "",
        f"{c['images']} images segmented ({r['segmenter']}), {c['detected']} detections, "
        f"{c['matched']} of {c['truth']} typed nuclei matched within {r['radius_um']:g} µm "
        f"(classes {', '.join(f'{n} {v}' for n, v in zip(r['classes'], c['classes'], strict=True))}).",
        f"CCRL trained on every detection ({train['epochs']} epochs"
        + (f", at least {train['min_steps']} steps" if train.get("min_steps") else "")
        + (f", max {train['max_steps']} steps" if train.get("max_steps") else "")
        + f", batch {train['batch_size']}, "
        f"lr {train['lr']}, seeds {r['config']['train_seeds']}); K-means k = {len(r['classes'])} "
        f"fit on {r['n_fit']} detections as `label` does (features `{r['features']}`, seeds "
        f"{r['config']['seeds']}), for every model alike. Scored: the {r['n_evaluated']} matched "
        f"detections of the evaluated images ({r['evaluated_images']}) and every matched "
        "detection of the cohort. Values in %, mean ± std over seeds.",
        "",
        "| model | evaluated AMI | ARI | Purity | cohort AMI | ARI | Purity | time (s) |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for model, res in r["models"].items():
        a, b = res["summary"]["evaluated"], res["summary"]["cohort"]
        base, sep, rest = model.partition(", ")
        lines.append(
            f"| {model_label(base)}{sep}{rest} | {percent_pm(a['ami'])} | {percent_pm(a['ari'])} "
            f"| {percent_pm(a['purity'])} | {percent_pm(b['ami'])} | {percent_pm(b['ari'])} | {percent_pm(b['purity'])} "
            f"| {r['timings_s'][model]:g} |"
        )
    lines += [f"\n{why}" for why in r["skipped"].values()]
    lines += ["", f"{machine_line(r['machine'])}; total {r['total_seconds']:g} s.", ""]
    return "\n".join(lines)


def describe_evaluated(dataset: str, evaluated: tuple[str, ...], cfg: BenchmarkConfig) -> str:
    """Which images are scored, in words: a validation split or a test split."""
    from wsi_ccrl.bench.datasets import get_dataset

    return get_dataset(dataset).describe(cfg, evaluated)


def _segmenter_name(stores: list[Path]) -> str:
    from wsi_ccrl.io.store import CellStore

    names = {CellStore.open(p).attrs.get("segmenter", {}).get("name", "?") for p in stores}
    return ", ".join(sorted(names))


def dataset_images(
    dataset: str, data_dir: str | Path, cfg: BenchmarkConfig, cohort: tuple[str, ...]
) -> tuple[list[TypedImage], tuple[str, ...]]:
    """The typed images of the cohort's splits, and the data set's class names."""
    from wsi_ccrl.bench.datasets import get_dataset

    data = get_dataset(dataset)
    return data.typed_images(data_dir, cfg, cohort), data.classes


def run_detected_benchmark(
    dataset: str,
    data_dir: str | Path,
    out_dir: str | Path,
    config: str | Path,
    cohort: tuple[str, ...],
    evaluated: tuple[str, ...],
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``wsi-ccrl benchmark DATASET --cells detected``: the profile's ``segment``, ``train`` and
    ``label`` sections as a user runs them, scored as ``run_detected`` says."""
    import yaml

    from wsi_ccrl.bench.protocol import load_benchmark_config, resolve_split
    from wsi_ccrl.config import load_section

    bad = sorted(set(evaluated) - set(cohort))
    if bad:
        raise ConfigError(f"evaluated split {bad[0]!r} is not in the cohort {list(cohort)}")
    cfg = resolve_split(data_dir, load_benchmark_config(config, overrides))
    device = (overrides or {}).get("device")
    seg_cfg = load_section("segment", config, {"device": device})
    label_cfg = load_section("label", config, {"device": device})
    images, classes = dataset_images(dataset, data_dir, cfg, cohort)  # fails fast on bad data
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"benchmark": cfg, "segment": seg_cfg, "label": label_cfg}
    text = yaml.safe_dump({k: to_dict(v) for k, v in resolved.items()}, sort_keys=False)
    atomic_write_text(out_dir / "config.yaml", text)
    return run_detected(dataset, images, classes, evaluated, out_dir, cfg, seg_cfg, label_cfg)
