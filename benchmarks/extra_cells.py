"""Ablation: CCRL trained on more unlabelled cells than the benchmark's train tiles hold.

A user trains CCRL on every cell of a cohort (millions); the CoNSeP benchmark trains on ~14k. This
script asks whether unlabelled nuclei from other H&E sets at the same magnification make the
momentum encoder's clusters of the **validation** cells better. It builds a store of the extra
images' annotated nuclei (the instance maps only: no type is read, none exists) with the
benchmark's crop rule and settings, trains CCRL with the run's training config on the run's train
store plus that store (the same epochs, so more steps), and prints train→val and standalone AMI /
ARI (%) in the benchmark's read-out (momentum encoder, L2, K-means k 4 fit on the benchmark's 4,000
train cells, seeds 0 1 2), mean ± std over the training seeds.

    OMP_NUM_THREADS=1 python benchmarks/extra_cells.py runs/f2 \\
        --extra ../shared/data/monuseg-train ../shared/data/cpm15 --seeds 0 1 2

``--with-val`` adds the run's validation store to the training cells instead (its crops only, no
label is read): a user trains CCRL on the very slides `label` then clusters, so this is the
transductive reading of what a user gets, next to the paper's inductive protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import mean_scores, run_cells, table_cells  # noqa: E402  (the same scoring)


def images_at_40x(data_dir: Path) -> list[Path]:
    """The ``Images/*.png`` of a folder, less those ``magnification.json`` marks as not 40x."""
    images = sorted((data_dir / "Images").glob("*.png"))
    table = data_dir / "magnification.json"
    if table.is_file():
        power = json.loads(table.read_text())
        images = [p for p in images if power.get(p.stem, "40x") == "40x"]
    return images


def unlabelled_tiles(images: list[Path]):
    """GroundTruthTiles of instance maps without types (every nucleus class 0)."""
    import scipy.io as sio
    from PIL import Image

    from wsi_ccrl.bench.datasets.common import GroundTruthTile, nuclei_from_instance_map

    for path in images:
        inst_map = np.asarray(
            sio.loadmat(path.parent.parent / "Labels" / f"{path.stem}.mat")["inst_map"]
        )
        inst_map = inst_map.astype(np.int32)
        image = np.asarray(Image.open(path).convert("RGB"))
        nuclei = nuclei_from_instance_map(inst_map, np.zeros(int(inst_map.max()) + 1, np.int16))
        yield GroundTruthTile(f"{path.parent.parent.name}/{path.name}", image, nuclei)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--extra", nargs="+", type=Path, default=[], help="Images/ + Labels/")
    parser.add_argument(
        "--with-val", action="store_true", help="also train on the validation cells (no labels)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/extra-cells")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not args.extra and not args.with_val:
        parser.error("give --extra DIR [DIR ...], --with-val, or both")

    import dataclasses

    import torch

    from wsi_ccrl.bench.datasets.common import store_matches, write_store
    from wsi_ccrl.bench.protocol import embed, load_benchmark_config
    from wsi_ccrl.ccrl.train import train
    from wsi_ccrl.io.store import CellStore
    from wsi_ccrl.label.features import l2_normalize

    torch.set_num_threads(args.threads)
    out = args.out or args.run / ("with-val" if args.with_val and not args.extra else "extra-cells")
    cfg = load_benchmark_config(args.run / "config.yaml")
    images = [p for d in args.extra for p in images_at_40x(d)]
    extra_path = out / "extra.zarr"
    attrs = {"dataset": "extra", "files": [str(p) for p in images], "mpp": 0.25}
    if images and not store_matches(extra_path, attrs, cfg.crop_size, cfg.window_scale):
        write_store(
            extra_path,
            unlabelled_tiles(images),
            [f"{p.parent.parent.name}/{p.name}" for p in images],
            attrs,
            cfg.window_scale,
            cfg.crop_size,
            cfg.min_window,
        )
    train_store, fit, val = run_cells(args.run)
    stores = [train_store.path] + ([extra_path] if images else [])
    if args.with_val:
        stores.append(args.run / "stores/consep-test.zarr")
    n_extra = sum(CellStore.open(p).n_cells for p in stores[1:])
    y = val.gt_class.astype(np.int64)
    scores, seconds = [], []
    for seed in args.seeds:
        train_cfg = dataclasses.replace(cfg.train, crop_size=cfg.crop_size, seed=seed)
        run_dir = out / f"ccrl-seed{seed}"
        t0 = time.time()
        model = run_dir / "model.pt"
        if not model.is_file():
            model = Path(train(stores, run_dir, train_cfg))
        seconds.append(time.time() - t0)
        tr, va = (l2_normalize(embed(model, "momentum", x.crops, cfg, "cpu")) for x in (fit, val))
        scores.append(mean_scores(tr, va, y))
        print(f"seed {seed}: " + " / ".join(f"{s:.1f}" for s in scores[-1]), flush=True)
    mean, std = np.mean(scores, 0), np.std(scores, 0)
    print(
        f"| train cells + {n_extra} extra ({len(images)} images"
        f"{', the validation cells' if args.with_val else ''}) | {table_cells(mean, std)} "
        f"| {np.mean(seconds):.0f} s |  ({args.run}, seeds {args.seeds})"
    )


if __name__ == "__main__":
    main()
