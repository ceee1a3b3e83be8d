"""The paper's evaluation protocol on CoNSeP / NuCLS (its table is ``report``'s).

One file of ~380 lines on purpose: the protocol's steps (stores, features per model, K-means
scores, the run) are each short and read in order as one protocol.

1. The dataset's ground-truth nuclei become two cell stores (train, test) with ``gt_class``.
2. Every model turns cells into features: CCRL trained on the train split without labels (and its
   ablations), and the baselines (``wsi_ccrl.bench.baselines``) fit on the train split.
3. K-means (k = number of classes) is fit on the train features and applied to the test split
   ("train → test"), and fit on the test features alone ("standalone"), once per seed.
4. AMI, ARI and Purity against the test classes; mean ± std over seeds (and CCRL training seeds).

Feature scaling is fixed per family, never chosen by score: hand-made features (morphological,
manual) and the generative models' codes are z-scored with train statistics, ImageNet features
L2-normalised, PCA pixels used as they are; CCRL embeddings go through the same feature map that
``wsi-ccrl label`` clusters with (``features``, ``wsi_ccrl.label.features``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.bench.report import PAPER, format_table, machine_info, ranges
from wsi_ccrl.config import (
    BENCHMARK_MODELS,
    BenchmarkConfig,
    apply_overrides,
    build,
    dump_yaml,
    read_yaml,
    to_dict,
)
from wsi_ccrl.errors import ConfigError, WsiCcrlError
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write_text, resolve_device

log = get_logger(__name__)

MODELS = BENCHMARK_MODELS
PROTOCOLS = ("train_to_test", "standalone")
METRICS = ("ami", "ari", "purity")
CCRL_VARIANTS = {  # model -> (training run, encoder)
    "ccrl": ("ccrl", "momentum"),
    "ccrl_query_encoder": ("ccrl", "query"),
    "ccrl_no_local_global": ("no_local_global", "momentum"),
    "ccrl_no_predictor": ("no_predictor", "momentum"),
}


# --------------------------------------------------------------------------- config
def load_benchmark_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> BenchmarkConfig:
    """The benchmark config: the file's ``benchmark`` section, with its ``train`` section (from
    ``ccrl.yaml`` and the profile) as the CCRL settings; ``overrides`` (dotted keys) on top."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
        values = dict(data.get("benchmark") or {})
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section 'benchmark' must be a mapping")
        train = dict(data.get("train") or {})
        train.update(values.get("train") or {})
        if train:
            values["train"] = train
    apply_overrides(values, overrides)
    cfg = build(BenchmarkConfig, values, where="benchmark")
    from wsi_ccrl.bench.datasets import get_dataset

    get_dataset(cfg.dataset)  # a registered data set, or one line naming them
    check_models(cfg.models)
    return cfg


def check_models(models: tuple[str, ...]) -> None:
    """Every model is CCRL (or one of its ablations) or a registered baseline."""
    from wsi_ccrl.bench.baselines import baseline_names

    known = (*CCRL_VARIANTS, *baseline_names())
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ConfigError(f"benchmark.models: unknown {unknown[0]!r} (known: {', '.join(known)})")


# --------------------------------------------------------------------------- data
def dataset_classes(cfg: BenchmarkConfig) -> tuple[str, ...]:
    from wsi_ccrl.bench.datasets import get_dataset

    return get_dataset(cfg.dataset).classes


def resolve_split(data_dir: str | Path, cfg: BenchmarkConfig) -> BenchmarkConfig:
    """``split: auto`` made concrete (CoNSeP: official when the data has Train/ and Test/, else
    tiles)."""
    from wsi_ccrl.bench.datasets import get_dataset

    if cfg.split != "auto":
        return cfg
    split = get_dataset(cfg.dataset).resolve_split(data_dir, "auto")
    return dataclasses.replace(cfg, split=split)


def evaluated_split(cfg: BenchmarkConfig) -> str:
    """What the scores are measured on: the official test split, or validation tiles of Train."""
    if cfg.split == "tiles":
        return f"validation (tiles {ranges(list(cfg.test_tiles))} of Train, held out by tile)"
    return "test (the official Test split)"


def check_data(data_dir: str | Path, cfg: BenchmarkConfig) -> dict[str, list]:
    """The files of each split; a clear error (how to obtain the data) when they are absent."""
    from wsi_ccrl.bench.datasets import get_dataset

    return get_dataset(cfg.dataset).ground_truth_files(data_dir, resolve_split(data_dir, cfg))


def prepare_stores(
    data_dir: str | Path, out_dir: str | Path, cfg: BenchmarkConfig, files: dict[str, list]
) -> dict[str, Path]:
    """Cell stores of the train and test splits under ``OUT/stores`` (reused when unchanged)."""
    from wsi_ccrl.bench.datasets import get_dataset
    from wsi_ccrl.bench.datasets.common import store_matches, write_store
    from wsi_ccrl.io.crops import CropSpec

    dataset = get_dataset(cfg.dataset)
    spec = CropSpec.of(cfg)
    paths = {}
    for split, items in files.items():
        path = Path(out_dir) / "stores" / f"{cfg.dataset}-{split}.zarr"
        names, tiles, mpp, scheme = dataset.ground_truth_tiles(items, cfg)
        attrs = {
            "dataset": cfg.dataset,
            "data_dir": str(Path(data_dir).resolve()),
            "split": split,
            "split_rule": cfg.split,
            "class_scheme": scheme,
            "classes": list(dataset.classes),
            "files": names,
            "mpp": mpp,
            "min_window": cfg.min_window,
        }
        if not store_matches(path, attrs, spec):
            log.info("building the %s store of %d tiles", split, len(names))
            write_store(path, tiles, names, attrs, spec)
        paths[split] = path
    return paths


def subsample(n: int, max_cells: int | None, seed: int) -> np.ndarray | None:
    """Sorted rows of a fixed random subset (the same for every model), or None for all."""
    if max_cells is None or n <= max_cells:
        return None
    return np.sort(np.random.default_rng([seed, 7]).choice(n, max_cells, replace=False))


# --------------------------------------------------------------------------- evaluation
def cluster_scores(
    train_x: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int,
    seeds: tuple[int, ...],
    n_init: int,
) -> dict[str, list[dict[str, float]]]:
    """AMI/ARI/Purity per K-means seed, for both protocols.

    Args:
        train_x: (n_train, d) features K-means is fit on for ``train_to_test``.
        test_x: (n_test, d); test_y: (n_test,) ground-truth classes.
    """
    from sklearn.cluster import KMeans

    from wsi_ccrl.ccrl.metrics import cluster_metrics

    out: dict[str, list[dict[str, float]]] = {p: [] for p in PROTOCOLS}
    train_x = np.asarray(train_x, np.float64)
    test_x = np.asarray(test_x, np.float64)
    for seed in seeds:
        km = KMeans(k, n_init=n_init, random_state=seed).fit(train_x)
        out["train_to_test"].append(cluster_metrics(test_y, km.predict(test_x)))
        pred = KMeans(k, n_init=n_init, random_state=seed).fit_predict(test_x)
        out["standalone"].append(cluster_metrics(test_y, pred))
    return out


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """mean and std (population) of each metric over runs, per protocol."""
    return {
        protocol: {
            m: {
                "mean": float(np.mean([r[m] for r in rs])),
                "std": float(np.std([r[m] for r in rs])),
                "n": len(rs),
            }
            for m in METRICS
        }
        for protocol, rs in runs.items()
    }


def record_model(
    results: dict[str, Any], model: str, runs: dict, seconds: float, scope: str, **info
) -> None:
    """Keep a model's runs and their summary in ``results``; log the ``scope`` scores."""
    results["models"][model] = {"summary": summarize(runs), "runs": runs, **info}
    results["timings_s"][model] = round(seconds, 1)
    s = results["models"][model]["summary"][scope]
    log.info(
        "%-22s AMI %.3f ARI %.3f Purity %.3f (%s, %.0f s)",
        model, s["ami"]["mean"], s["ari"]["mean"], s["purity"]["mean"], scope, seconds,
    )  # fmt: skip


# --------------------------------------------------------------------------- models
def ccrl_runs(cfg: BenchmarkConfig) -> dict[str, Any]:
    """The training configs CCRL and its ablations need (only those the models ask for)."""
    base = dataclasses.replace(cfg.train, crop_size=cfg.crop_size)
    runs = {
        "ccrl": base,
        "no_local_global": dataclasses.replace(
            base, augment=dataclasses.replace(base.augment, local_global=False)
        ),
        "no_predictor": dataclasses.replace(base, use_predictor=False),
    }
    needed = {CCRL_VARIANTS[m][0] for m in cfg.models if m in CCRL_VARIANTS}
    return {name: runs[name] for name in runs if name in needed}


def train_ccrl(
    train_store: Path | list[Path], out_dir: Path, run: str, train_cfg, seed: int
) -> Path:
    """One CCRL training run on the train store(s) (no labels are read); resumes if interrupted."""
    from wsi_ccrl.ccrl.train import train

    run_dir = out_dir / "models" / f"{run}-seed{seed}"
    model = run_dir / "model.pt"
    cfg = dataclasses.replace(train_cfg, seed=seed)
    stamp = run_dir / "benchmark-train.json"  # the config of the run in this folder, and if done
    state = json.loads(stamp.read_text()) if stamp.is_file() else {}
    same = state.get("config") == to_dict(cfg)
    if same and state.get("done") and model.is_file():
        log.info("reusing %s", model)
        return model
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({"config": to_dict(cfg), "done": False}))
    stores = [train_store] if isinstance(train_store, Path) else list(train_store)
    log.info("training CCRL (%s, seed %d) on %d store(s)", run, seed, len(stores))
    t0 = time.time()
    # resume an interrupted run of the same config; a checkpoint of another config is discarded
    path = Path(train(stores, run_dir, cfg, resume=same))
    log.info("trained %s in %.0f s", run, time.time() - t0)
    atomic_write_text(stamp, json.dumps({"config": to_dict(cfg), "done": True}))
    return path


def embed(model_path: Path, encoder: str, crops: np.ndarray, cfg: BenchmarkConfig, device: str):
    from wsi_ccrl.ccrl.embed import embed_crops
    from wsi_ccrl.ccrl.model_io import load_backbone

    backbone, meta = load_backbone(model_path, encoder=encoder, device=device)
    if int(meta["crop_size"]) != crops.shape[1]:
        raise WsiCcrlError(
            f"{model_path}: trained on {meta['crop_size']} px crops, data has {crops.shape[1]}"
        )
    return embed_crops(backbone, crops, batch_size=cfg.embed_batch_size, device=device)


# --------------------------------------------------------------------------- the protocol
def run_benchmark(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: BenchmarkConfig,
    profile: str | None = None,
) -> dict[str, Any]:
    """Run the protocol and write ``results.json``, ``results.md`` and ``config.yaml`` to OUT.

    Returns the results dict (what ``results.json`` holds).
    """
    from wsi_ccrl.bench.baselines import imagenet_missing_message, make_baseline, scale_features
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.features import FeatureSpace

    t_start = time.time()
    out_dir = Path(out_dir)
    cfg = resolve_split(data_dir, cfg)
    files = check_data(data_dir, cfg)  # fails fast, with how to get the data
    device = str(resolve_device(cfg.device))
    train_cfg_device = cfg.train.device if cfg.train.device != "auto" else device
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=train_cfg_device))
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml("benchmark", cfg, out_dir / "config.yaml")

    stores = prepare_stores(data_dir, out_dir, cfg, files)
    train_store, test_store = CellStore.open(stores["train"]), CellStore.open(stores["test"])
    classes = dataset_classes(cfg)
    k = len(classes)
    train_idx = subsample(train_store.n_cells, cfg.max_train_cells, 0)
    test_idx = subsample(test_store.n_cells, cfg.max_cells, 1)
    train_cells = load_cells(train_store, train_idx)
    test_cells = load_cells(test_store, test_idx)
    test_y = test_cells.gt_class.astype(np.int64)
    log.info(
        "%s: %d train cells (%d for fitting), %d evaluated cells, k = %d",
        cfg.dataset, train_store.n_cells, len(train_cells), len(test_cells), k,
    )  # fmt: skip

    results: dict[str, Any] = {"models": {}, "skipped": {}, "timings_s": {}}
    seeds = tuple(cfg.seeds)

    def record(model: str, runs: dict[str, list[dict[str, float]]], seconds: float, **info):
        record_model(results, model, runs, seconds, "train_to_test", **info)

    # baselines
    for model in (m for m in cfg.models if m not in CCRL_VARIANTS):
        if model == "imagenet":
            message = imagenet_missing_message()
            if message:
                log.warning(message)
                results["skipped"][model] = message
                continue
        t0 = time.time()
        baseline = make_baseline(model, 0, cfg.imagenet_size, device).fit(train_cells)
        tr, te = scale_features(
            model, baseline.transform(train_cells), baseline.transform(test_cells)
        )
        runs = cluster_scores(tr, te, test_y, k, seeds, cfg.kmeans_n_init)
        record(model, runs, time.time() - t0, dim=int(tr.shape[1]))

    # CCRL and its ablations
    variants = [m for m in cfg.models if m in CCRL_VARIANTS]
    if variants:
        models: dict[tuple[str, int], Path] = {}
        train_seconds: dict[str, float] = {}
        for run, train_cfg in ccrl_runs(cfg).items():
            t0 = time.time()
            for seed in cfg.train_seeds:
                models[(run, seed)] = train_ccrl(stores["train"], out_dir, run, train_cfg, seed)
            train_seconds[run] = time.time() - t0
        for model in variants:
            run, encoder = CCRL_VARIANTS[model]
            t0 = time.time()
            runs: dict[str, list] = {p: [] for p in PROTOCOLS}
            for seed in cfg.train_seeds:
                path = models[(run, seed)]
                tr = embed(path, encoder, train_cells.crops, cfg, device)
                te = embed(path, encoder, test_cells.crops, cfg, device)
                space = FeatureSpace(cfg.features).fit(tr)  # as `wsi-ccrl label` clusters
                tr, te = space.transform(tr), space.transform(te)
                for p, rs in cluster_scores(tr, te, test_y, k, seeds, cfg.kmeans_n_init).items():
                    runs[p].extend(rs)
            seconds = time.time() - t0 + (train_seconds.pop(run, 0.0))
            record(model, runs, seconds, dim=512, train_run=run, encoder=encoder)

    results.update(
        dataset=cfg.dataset,
        evaluated_split=evaluated_split(cfg),
        profile=profile,
        classes=list(classes),
        class_counts_test=np.bincount(test_y, minlength=k).tolist(),
        n_train_cells=train_store.n_cells,
        n_train_fit_cells=len(train_cells),
        n_test_cells=len(test_cells),
        n_test_cells_total=test_store.n_cells,
        seeds=list(seeds),
        train_seeds=list(cfg.train_seeds),
        paper=PAPER[cfg.dataset],
        config=to_dict(cfg),
        machine=machine_info(device),
        total_seconds=round(time.time() - t_start, 1),
    )
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", format_table(results))
    return results
