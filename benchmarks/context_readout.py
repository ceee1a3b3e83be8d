"""Probe: does a cell's neighbourhood help K-means tell cell types apart, for CCRL and baselines?

Cell types in H&E sit in tissue compartments (epithelium in glands, inflammatory cells in
stroma), and a user's store has every cell's centroid. This script re-reads the models a
``wsi-ccrl benchmark consep`` run already trained (no training) and gives K-means each cell's
features side by side with the mean features of its ``k`` nearest cells in the same patch
(``k = 0``: the features alone, as the benchmark does). The same is done for SIFT + LBP and raw
pixels, fit as the benchmark fits them, so that a gain is CCRL's and not the neighbourhood's.
Prints train→val and standalone AMI / ARI (%) as mean ± std over the run's training seeds (the
baselines: over K-means seeds 0 1 2), with the benchmark's 4,000 fitting cells.

    OMP_NUM_THREADS=2 python benchmarks/context_readout.py runs/ref-fold2 --k 0 5 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import mean_scores, table_cells  # noqa: E402

FAMILIES = ("ccrl", "manual", "raw_pixels")


def neighbour_index(centroid: np.ndarray, patch: np.ndarray, k: int) -> np.ndarray:
    """(n, k) rows of each cell's ``k`` nearest other cells in its own patch; -1 where the patch
    has fewer."""
    from scipy.spatial import cKDTree

    far = float(np.ptp(centroid) + 1.0) * 4  # patches laid apart: no neighbour crosses one
    points = np.column_stack([centroid[:, 0] + patch * far, centroid[:, 1]])
    dist, idx = cKDTree(points).query(points, k=k + 1, distance_upper_bound=far / 2)
    idx = idx[:, 1:]  # the nearest is the cell itself
    idx[~np.isfinite(dist[:, 1:])] = -1
    return idx


def with_context(x: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """The mean of each cell's neighbours' rows of ``x`` (its own row where it has none)."""
    valid = neighbours >= 0
    summed = np.where(valid[..., None], x[np.maximum(neighbours, 0)], 0).sum(1)
    count = valid.sum(1, keepdims=True)
    return np.where(count > 0, summed / np.maximum(count, 1), x).astype(np.float32)


def family_features(family, run: Path, fit, train, val) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each model's (all train cells, all val cells) features, scaled as the benchmark scales them:
    one pair per training seed for CCRL, one for a baseline (fit on the fitting cells)."""
    from wsi_ccrl.bench.baselines import make_baseline
    from wsi_ccrl.bench.protocol import scale_features
    from wsi_ccrl.ccrl.model_io import load_backbone
    from wsi_ccrl.label.embed import embed_crops
    from wsi_ccrl.label.features import l2_normalize

    if family == "ccrl":
        models = sorted(run.glob("models/ccrl-seed*/model.pt"))
        if not models:
            sys.exit(f"no models/ccrl-seed*/model.pt under {run}")
        out = []
        for m in models:
            backbone, _ = load_backbone(m, "momentum")
            out.append(tuple(l2_normalize(embed_crops(backbone, c.crops)) for c in (train, val)))
        return out
    baseline = make_baseline(family, 0).fit(fit)
    return [scale_features(family, baseline.transform(train), baseline.transform(val))]


def context_pair(family, tr, va, train_nb, val_nb, weight: float = 1.0):
    """Features side by side with their neighbourhood mean, the mean brought to the features'
    scale (L2 for CCRL, the train split's standardisation for the baselines) times ``weight``."""
    from wsi_ccrl.label.features import l2_normalize

    ctr, cva = with_context(tr, train_nb), with_context(va, val_nb)
    if family == "ccrl":
        ctr, cva = l2_normalize(ctr), l2_normalize(cva)
    else:
        mean, std = ctr.mean(0), ctr.std(0)
        std[std < 1e-8] = 1.0
        ctr, cva = (ctr - mean) / std, (cva - mean) / std
    return np.hstack([tr, weight * ctr]), np.hstack([va, weight * cva])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 5, 10])
    parser.add_argument("--weight", type=float, nargs="+", default=[1.0], help="context's scale")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.bench.protocol import cluster_scores, subsample
    from wsi_ccrl.io.store import CellStore

    torch.set_num_threads(args.threads)
    stores = [CellStore.open(args.run / f"stores/consep-{s}.zarr") for s in ("train", "test")]
    cells = [load_cells(s) for s in stores]
    geometry = [(s["centroid"][:], s["tile"][:].astype(np.int64)) for s in stores]
    fit = subsample(stores[0].n_cells, 4000, 0)  # the benchmark's fitting cells
    y = cells[1].gt_class.astype(np.int64)

    print(f"| features | k | weight | train→val AMI | ARI | standalone AMI | ARI |  ({args.run})")
    print("|---|---|---|---|---|---|---|")
    for family in args.families:
        pairs = family_features(family, args.run, load_cells(stores[0], fit), *cells)
        settings = [(k, w) for k in args.k for w in (args.weight if k else [0.0])]
        for k, weight in settings:
            scores = []
            for tr, va in pairs:
                if k:
                    nbs = [neighbour_index(c, p, k) for c, p in geometry]
                    tr, va = context_pair(family, tr, va, *nbs, weight)
                if family == "ccrl":
                    scores.append(mean_scores(tr[fit], va, y))
                else:  # one model: the spread over K-means seeds
                    runs = cluster_scores(tr[fit], va, y, 4, (0, 1, 2), 4)
                    scores = [
                        [100 * r[m] for r in (tt, sa) for m in ("ami", "ari")]
                        for tt, sa in zip(runs["train_to_test"], runs["standalone"], strict=True)
                    ]
            mean, std = np.mean(scores, 0), np.std(scores, 0)
            print(f"| {family} | {k} | {weight:g} | {table_cells(mean, std)} |", flush=True)


if __name__ == "__main__":
    main()
