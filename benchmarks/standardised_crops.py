"""Ablation: every crop's colour standardised on its own (per-crop, per-channel mean and std set to
the train crops' pooled ones), in a copy of a benchmark run's stores.

On validation fold 2 CCRL's clusters follow the source tile. A tile-level normalisation (Reinhard
per tile) and grey-scale input both lost; this removes each crop's own colour cast and contrast
and keeps what varies inside the crop (the nucleus against its surroundings, as SIFT + LBP, which
are invariant to such shifts, see it). Copies RUN/stores to OUT/stores, rewrites the copies'
crops, then run the benchmark on OUT with the same config (the stores match, so they are reused):

    python benchmarks/standardised_crops.py runs/f2 runs/f2-standardised
    OMP_NUM_THREADS=1 wsi-ccrl benchmark consep --data-dir ../shared/data/consep-patches \\
        --split tiles --device cpu --config benchmarks/folds/fold2-baselines.yaml \\
        --out runs/f2-standardised
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsi_ccrl.io.store import CellStore  # noqa: E402


def standardise(crops: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 crops with each crop's channel mean / std moved to ``mean`` / ``std``."""
    x = crops.astype(np.float32)
    own_mean = x.mean(axis=(1, 2), keepdims=True)
    own_std = x.std(axis=(1, 2), keepdims=True) + 1.0  # + 1 grey level: flat crops stay flat
    return np.clip((x - own_mean) / own_std * std + mean, 0, 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("out", type=Path, help="the new output folder (its stores/ is written)")
    args = parser.parse_args()
    if (args.out / "stores").exists():
        sys.exit(f"{args.out / 'stores'} exists: remove it first")
    shutil.copytree(args.run / "stores", args.out / "stores")
    train = CellStore.open(args.out / "stores/consep-train.zarr")["crops"][:].astype(np.float32)
    mean = train.mean(axis=(0, 1, 2))
    std = train.std(axis=(1, 2)).mean(0)  # the typical crop's own contrast
    for name in ("consep-train.zarr", "consep-test.zarr"):
        crops = CellStore.open(args.out / "stores" / name, mode="r+")["crops"]
        crops[:] = standardise(crops[:], mean, std)
        print(
            f"{name}: {crops.shape[0]} crops standardised to mean {mean.round(1)} std {std.round(1)}"
        )


if __name__ == "__main__":
    main()
