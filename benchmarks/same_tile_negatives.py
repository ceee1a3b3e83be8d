"""Ablation: InfoNCE against negatives of the query's own source tile only.

On validation fold 2 CCRL's clusters follow the source tile (BENCHMARKS.md, CCRL ablation): with
negatives from every tile, a tile's stain alone tells most negatives from the positive, so the
loss rewards encoding the stain. This script trains CCRL exactly as the profile does (same
config, batches, augmentations, schedule and steps) but masks out every queued negative that
comes from another source tile than the query's (the queue remembers each key's tile), then
scores the momentum encoder's layer4 L2 embeddings as the benchmark does (K-means k 4, seeds
0 1 2, n_init 4, the benchmark's 4,000 fitting cells). On a cohort the group would be the slide.

    OMP_NUM_THREADS=1 python benchmarks/same_tile_negatives.py runs/fold2/lr3e-4 --seed 0

``RUN`` is a ``wsi-ccrl benchmark consep`` output folder (its stores and
``models/ccrl-seed0/config.yaml``, the profile's training config). Prints one Markdown row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import source_tiles  # noqa: E402


def train_same_tile(crops: np.ndarray, tiles: np.ndarray, cfg, mask_other_tiles: bool):
    """The profile's training loop on in-memory crops, with tile-masked negatives; the model."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from wsi_ccrl.ccrl.augment import CellViews
    from wsi_ccrl.ccrl.model import CCRL
    from wsi_ccrl.ccrl.schedule import cosine_schedule
    from wsi_ccrl.ccrl.train import build_optimizer, step_seed

    torch.manual_seed(cfg.seed)
    model = CCRL.from_config(cfg).train()
    views = CellViews(cfg.augment, cfg.crop_size)
    optimizer = build_optimizer(model, cfg)
    n, b = len(crops), cfg.batch_size
    steps_per_epoch = n // b
    lrs = cosine_schedule(cfg.lr, 0.0, cfg.epochs, steps_per_epoch, cfg.warmup_epochs)
    queue_tile = torch.full((cfg.queue_size,), -1, dtype=torch.long)  # -1: the random start
    tile_of = torch.from_numpy(tiles.astype(np.int64))
    step = 0
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="train", unit="step")
    for epoch in range(cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(n)  # as CellCrops
        for i in range(steps_per_epoch):
            rows = order[i * b : (i + 1) * b]
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[step])
            torch.manual_seed(step_seed(cfg.seed, step, 0))
            im_q, im_k = views(torch.from_numpy(crops[rows]))
            q = model.encode_query(im_q)
            with torch.no_grad():
                model.momentum_update()
                k = model.encode_key(im_k)
            t = tile_of[rows]
            pos = (q * k).sum(1, keepdim=True)
            neg = q @ model.queue.clone().t()
            if mask_other_tiles:
                other = (queue_tile[None, :] >= 0) & (queue_tile[None, :] != t[:, None])
                neg = neg.masked_fill(other, float("-inf"))
            logits = torch.cat([pos, neg], 1) / cfg.temperature
            loss = F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            idx = (model.queue_ptr + torch.arange(len(rows))) % cfg.queue_size
            queue_tile[idx] = t
            model.enqueue(k)
            step += 1
            bar.set_postfix(loss=f"{float(loss):.3f}")
            bar.update(1)
    bar.close()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--seed", type=int, default=0, help="the training seed")
    parser.add_argument(
        "--all-tiles", action="store_true", help="control: keep every negative (the profile)"
    )
    args = parser.parse_args()

    import torch

    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.bench.protocol import cluster_scores, subsample
    from wsi_ccrl.config import load_section
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.embed import embed_crops
    from wsi_ccrl.label.features import l2_normalize

    torch.set_num_threads(1)
    cfg = load_section("train", args.run / "models/ccrl-seed0/config.yaml", {"seed": args.seed})
    train_store = CellStore.open(args.run / "stores/consep-train.zarr")
    val_store = CellStore.open(args.run / "stores/consep-test.zarr")
    t0 = time.time()
    model = train_same_tile(
        np.asarray(train_store["crops"][:]), source_tiles(train_store), cfg, not args.all_tiles
    )
    seconds = time.time() - t0
    backbone = model.backbone_k.eval()
    fit_rows = subsample(train_store.n_cells, 4000, 0)  # the benchmark's fitting cells
    train, val = load_cells(train_store, fit_rows), load_cells(val_store)
    tr, va = (l2_normalize(embed_crops(backbone, x.crops)) for x in (train, val))
    runs = cluster_scores(tr, va, val.gt_class.astype(np.int64), 4, (0, 1, 2), 4)
    cells = " | ".join(
        f"{100 * np.mean([r[m] for r in runs[p]]):.1f}"
        for p in ("train_to_test", "standalone")
        for m in ("ami", "ari")
    )
    name = "all tiles" if args.all_tiles else "same tile"
    print(f"| {name} | {args.run} | seed {args.seed} | {cells} | {seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
