"""Ablation: how trained CCRL models' embeddings go to K-means, against the source-tile shift.

On validation fold 2 the errors follow the source tile (BENCHMARKS.md, CCRL ablation). This
script re-reads the models a ``wsi-ccrl benchmark`` run already trained (no training) with read-outs
that adapt to, or average out, such shifts, and prints train→val and standalone AMI / ARI (%) as
mean ± std over the run's training seeds (K-means seeds 0 1 2, k 4, n_init 4, the benchmark's
4,000 fitting cells):

- ``l2``: the shipped read-out (momentum encoder, layer4, L2-normalised);
- ``projector``: the momentum projector's 64-d output (what InfoNCE compared), L2-normalised;
- ``tta8``: the mean of the L2 embeddings of the 8 flips/rotations by 90° of each crop;
- ``centre-split``: L2 embeddings centred on their split's mean (train and validation apart);
- ``centre-tile``: centred on their source tile's mean (a slide's, in a cohort);
- ``adabn-split`` / ``adabn-tile``: BatchNorm statistics re-estimated on the split's / the source
  tile's cells before embedding (AdaBN);
- ``drop-pc1`` / ``drop-pc2``: L2 embeddings without their top 1 / 2 principal directions (fit on
  the train fitting cells, removed from both splits), L2-normalised again: is the direction
  K-means splits first a tile's stain?
- ``nap1`` / ``nap2`` / ``nap4``: L2 embeddings without the 1 / 2 / 4 leading directions of the fitting
  cells' between-tile scatter (the spread of the source tiles' means; nuisance attribute
  projection), removed from both splits, L2-normalised again: a slide id is what a user has, and
  unlike centring it takes out only the few directions the tiles differ along most;
- ``tilespan4`` / ``tilespan8``: the opposite, the L2 embeddings' coordinates along those 4 / 8
  directions only; ``pca4``, their control: the coordinates along the 4 leading principal
  directions of the fitting cells;
- ``harmony2`` / ``harmony8``: Harmony (Korsunsky et al. 2019, the single-cell batch correction)
  with diversity penalty theta 2 / 8 on the 50 leading principal directions of the fitting cells'
  L2 embeddings, the fitting and the validation cells corrected together with the source tile as
  the batch: unlike centring it shifts each soft cluster of a tile on its own, so a tile's
  composition is kept. Needs ``pip install harmonypy`` (GPL-3, so not a dependency of wsi-ccrl);
- ``ensemble``: the L2 embeddings of all the run's models side by side, L2-normalised (one
  score: the spread is over K-means seeds only).

    OMP_NUM_THREADS=1 python benchmarks/readout_ablation.py runs/fold2/lr3e-4 \\
        --readouts l2 tta8 centre-split centre-tile adabn-split adabn-tile
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ccrl_ablation import recalibrate_bn  # noqa: E402  (AdaBN: BN statistics of given crops)

READOUTS = (
    "l2",
    "projector",
    "tta8",
    "centre-split",
    "centre-tile",
    "adabn-split",
    "adabn-tile",
    "drop-pc1",
    "drop-pc2",
    "nap1",
    "nap2",
    "nap4",
    "tilespan4",
    "tilespan8",
    "pca4",
    "harmony2",
    "harmony8",
    "ensemble",
)


def source_tiles(store) -> np.ndarray:
    """The CoNSeP source tile (the N of train_N_xxx.png) of every cell of a benchmark store."""
    tiles = np.array([int(name.split("_")[1]) for name in store.attrs["tiles"]])
    return tiles[store["tile"][:].astype(np.int64)]


def dihedral(crops: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations by 90° and their mirror images of (N, S, S, 3) crops."""
    out = []
    for k in range(4):
        r = np.rot90(crops, k, axes=(1, 2))
        out += [np.ascontiguousarray(r), np.ascontiguousarray(r[:, :, ::-1])]
    return out


def features(model: Path, readout: str, crops: np.ndarray, groups: np.ndarray) -> np.ndarray:
    from wsi_ccrl.ccrl.model_io import load_backbone
    from wsi_ccrl.label.embed import embed_crops
    from wsi_ccrl.label.features import l2_normalize

    backbone, _ = load_backbone(model, "momentum")
    if readout == "l2":
        return l2_normalize(embed_crops(backbone, crops))
    if readout == "projector":
        import torch

        from wsi_ccrl.ccrl.heads import mlp_head
        from wsi_ccrl.ccrl.model_io import load_model_file

        payload = load_model_file(model)
        cfg = payload["config"]
        head = mlp_head(int(payload["embed_dim"]), cfg["proj_hidden"], cfg["proj_dim"])
        head.load_state_dict(payload["projector_k"])
        with torch.no_grad():
            z = head.eval()(torch.from_numpy(embed_crops(backbone, crops)))
        return l2_normalize(z.numpy())
    if readout == "tta8":
        views = [l2_normalize(embed_crops(backbone, v)) for v in dihedral(crops)]
        return l2_normalize(np.mean(views, 0))
    if readout.startswith("centre"):
        x = l2_normalize(embed_crops(backbone, crops))
        keys = groups if readout == "centre-tile" else np.zeros(len(x), np.int64)
        for g in np.unique(keys):
            x[keys == g] -= x[keys == g].mean(0)
        return l2_normalize(x)
    if readout.startswith("adabn"):
        keys = groups if readout == "adabn-tile" else np.zeros(len(crops), np.int64)
        out = np.zeros((len(crops), 512), np.float32)
        for g in np.unique(keys):
            backbone, _ = load_backbone(model, "momentum")
            recalibrate_bn(backbone, crops[keys == g])
            out[keys == g] = embed_crops(backbone, crops[keys == g])
        return l2_normalize(out)
    raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


def run_cells(run: Path):
    """A benchmark run's train store, its 4,000 K-means fitting cells (the benchmark's subset,
    seed 0) and its validation cells."""
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.bench.protocol import subsample
    from wsi_ccrl.io.store import CellStore

    train_store = CellStore.open(run / "stores/consep-train.zarr")
    val_store = CellStore.open(run / "stores/consep-test.zarr")
    fit = load_cells(train_store, subsample(train_store.n_cells, 4000, 0))
    return train_store, fit, load_cells(val_store)


def mean_scores(train_x: np.ndarray, val_x: np.ndarray, y: np.ndarray) -> list[float]:
    """Train→val AMI, ARI, standalone AMI, ARI (%) of one embedding, mean over K-means seeds 0 1 2."""
    from wsi_ccrl.bench.protocol import cluster_scores

    runs = cluster_scores(train_x, val_x, y, 4, (0, 1, 2), 4)
    return [
        100 * np.mean([r[m] for r in runs[p]])
        for p in ("train_to_test", "standalone")
        for m in ("ami", "ari")
    ]


def drop_top_directions(train: np.ndarray, val: np.ndarray, n: int):
    """Both splits without the ``n`` principal directions of ``train``, L2-normalised again."""
    from wsi_ccrl.label.features import l2_normalize

    centred = train - train.mean(0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:n]  # (n, D)
    return tuple(l2_normalize(x - (x @ top.T) @ top) for x in (train, val))


def tile_directions(train: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """The principal directions (rows, largest first) of ``train``'s between-tile scatter: the
    cell-weighted spread of the source tiles' mean embeddings."""
    x = train.astype(np.float64)
    keys, inverse, counts = np.unique(tiles, return_inverse=True, return_counts=True)
    means = np.zeros((len(keys), x.shape[1]))
    np.add.at(means, inverse, x)
    means = (means / counts[:, None] - x.mean(0)) * np.sqrt(counts)[:, None]
    return np.linalg.svd(means, full_matrices=False)[2]


def tile_readout(train: np.ndarray, val: np.ndarray, tiles: np.ndarray, readout: str):
    """``napN``: both splits without the N leading between-tile directions, L2-normalised
    again; ``tilespanN``: both splits projected onto them (N coordinates)."""
    from wsi_ccrl.label.features import l2_normalize

    n = int(readout.removeprefix("nap").removeprefix("tilespan"))
    top = tile_directions(train, tiles)[:n].astype(np.float32)
    if readout.startswith("tilespan"):
        return tuple(v @ top.T for v in (train, val))
    return tuple(l2_normalize(v - (v @ top.T) @ top) for v in (train, val))


def harmony_readout(train: np.ndarray, val: np.ndarray, tiles: tuple, theta: float):
    """Both splits' principal coordinates (50, of the fitting cells) after Harmony, jointly,
    with the source tile as the batch variable."""
    try:
        import harmonypy
        import pandas as pd
    except ImportError:
        sys.exit("the harmony read-outs need harmonypy: pip install harmonypy")
    import logging

    logging.getLogger("harmonypy").setLevel(logging.WARNING)
    mean = train.mean(0)
    top = np.linalg.svd(train - mean, full_matrices=False)[2][:50]
    z = (np.vstack([train, val]).astype(np.float64) - mean) @ top.T
    meta = pd.DataFrame({"tile": np.concatenate(tiles).astype(str)})
    fit = harmonypy.run_harmony(z, meta, ["tile"], theta=theta, verbose=False, random_state=0)
    corrected = np.asarray(fit.Z_corr)
    corrected = corrected if corrected.shape[0] == len(z) else corrected.T
    return corrected[: len(train)].astype(np.float32), corrected[len(train) :].astype(np.float32)


def table_cells(mean: np.ndarray, std: np.ndarray) -> str:
    return " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(mean, std, strict=True))


def split_features(model: Path, readout: str, train, val, groups) -> tuple[np.ndarray, np.ndarray]:
    """One model's K-means features of the fitting and the validation cells: each split read out
    on its own, except ``drop-pc``, whose directions come from the fitting cells."""
    if readout.startswith("drop-pc"):
        tr, va = (features(model, "l2", x.crops, None) for x in (train, val))
        return drop_top_directions(tr, va, int(readout[-1]))
    if readout == "pca4":
        tr, va = (features(model, "l2", x.crops, None) for x in (train, val))
        top = np.linalg.svd(tr - tr.mean(0), full_matrices=False)[2][:4]
        return tr @ top.T, va @ top.T
    if readout.startswith(("nap", "tilespan")):
        tr, va = (features(model, "l2", x.crops, None) for x in (train, val))
        return tile_readout(tr, va, groups[0], readout)
    if readout.startswith("harmony"):
        tr, va = (features(model, "l2", x.crops, None) for x in (train, val))
        return harmony_readout(tr, va, groups, float(readout.removeprefix("harmony")))
    return tuple(
        features(model, readout, x.crops, g) for x, g in zip((train, val), groups, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=READOUTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from wsi_ccrl.bench.protocol import cluster_scores, subsample
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.features import l2_normalize

    torch.set_num_threads(args.threads)
    train_store, train, val = run_cells(args.run)
    fit_rows = subsample(train_store.n_cells, 4000, 0)  # run_cells's fitting cells
    val_store = CellStore.open(args.run / "stores/consep-test.zarr")
    groups = (source_tiles(train_store)[fit_rows], source_tiles(val_store))
    y = val.gt_class.astype(np.int64)
    models = sorted(args.run.glob("models/ccrl-seed*/model.pt"))
    if not models:
        sys.exit(f"no models/ccrl-seed*/model.pt under {args.run}")

    print(
        f"| read-out | train→val AMI | ARI | standalone AMI | ARI |  ({args.run}, {len(models)} seeds)"
    )
    print("|---|---|---|---|---|")
    for readout in args.readouts:
        if readout == "ensemble":  # one model of all the seeds: the spread is K-means's
            tr, va = (
                l2_normalize(np.hstack([features(m, "l2", x, None) for m in models]))
                for x in (train.crops, val.crops)
            )
            runs = cluster_scores(tr, va, y, 4, (0, 1, 2), 4)
            scores = [
                [100 * r[m] for r in runs[p]]
                for p in ("train_to_test", "standalone")
                for m in ("ami", "ari")
            ]
            mean, std = np.mean(scores, 1), np.std(scores, 1)
        else:
            scores = [
                mean_scores(*split_features(m, readout, train, val, groups), y) for m in models
            ]
            mean, std = np.mean(scores, 0), np.std(scores, 0)
        print(f"| {readout} | {table_cells(mean, std)} |", flush=True)


if __name__ == "__main__":
    main()
