"""What a training run reports as it goes: the periodic K-means evaluation of the momentum
encoder against ``gt_class``, and one row per epoch in ``RUN_DIR/metrics.csv`` (and TensorBoard
when it is installed), trimmed back to the checkpoint when a run resumes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.config import LabelConfig, TrainConfig
from wsi_ccrl.log import get_logger
from wsi_ccrl.runtime import atomic_write

log = get_logger(__name__)

METRICS = "metrics.csv"
METRIC_FIELDS = ("epoch", "step", "loss", "lr", "images_per_s", "seconds", "ami", "ari", "purity")


def evaluate(
    model: CCRL, eval_set: tuple[np.ndarray, np.ndarray], cfg: TrainConfig, device: torch.device
) -> dict[str, float]:
    """K-means (k = number of classes) of momentum-encoder embeddings vs ``gt_class``, with as
    many initialisations as ``label`` fits with (``LabelConfig.kmeans_n_init``)."""
    from sklearn.cluster import KMeans

    from wsi_ccrl.ccrl.embed import embed_crops
    from wsi_ccrl.ccrl.metrics import cluster_metrics

    crops, labels = eval_set
    feats = embed_crops(model.backbone_k, crops, min(cfg.batch_size, 1024), device)
    model.train()  # embed_crops switched the key backbone to eval mode
    k = len(np.unique(labels))
    if k < 2 or not np.isfinite(feats).all():
        return {}
    n_init = LabelConfig.kmeans_n_init
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=cfg.seed).fit_predict(feats)
    return cluster_metrics(labels, pred)


def log_epoch(row: dict[str, Any], epochs: int, path: Path, writer) -> None:
    """One epoch's row: a log line, a ``metrics.csv`` row, TensorBoard scalars (``writer``)."""
    scores = "".join(f" {k} {row[k]:.3f}" for k in ("ami", "ari", "purity") if k in row)
    log.info(
        "epoch %s/%d step %d: loss %.4f lr %.2e %.0f img/s%s",
        row["epoch"],
        epochs,
        row["step"],
        row["loss"],
        row["lr"],
        row["images_per_s"],
        scores,
    )
    new = not path.exists()
    with path.open("a", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        if new:
            out.writeheader()
        out.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
    if writer is not None:
        for key, value in row.items():
            if key not in ("epoch", "step"):
                writer.add_scalar(f"train/{key}", value, row["step"])


def trim_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed (they will be logged again)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    with atomic_write(path) as tmp, tmp.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        out.writeheader()
        out.writerows(rows)


def tensorboard(out_dir: Path):
    """A SummaryWriter when TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
