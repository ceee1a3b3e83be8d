"""Diagnostic: what an untrained (randomly initialised) backbone's embeddings score.

Separates what CCRL's training adds from what the architecture, the crops and the read-out
(layer4, L2, K-means k 4) give by themselves. Reads the stores of a ``wsi-ccrl benchmark consep``
run (no training) and prints train→val and standalone AMI / ARI (%), mean ± std over the
initialisation seeds (K-means seeds 0 1 2, n_init 4, the benchmark's 4,000 fitting cells). BatchNorm
is used in training mode (batch statistics) and in eval mode (identity at initialisation).

    OMP_NUM_THREADS=1 python benchmarks/random_init_readout.py runs/fold2 --stems imagenet small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import mean_scores, run_cells, table_cells  # noqa: E402  (the same scoring)


def embed_random(stem: str, seed: int, bn: str, crops: np.ndarray) -> np.ndarray:
    """L2-normalised layer4 features of a freshly initialised PreActResNet18."""
    import torch

    from wsi_ccrl.ccrl.backbone import PreActResNet18
    from wsi_ccrl.label.features import l2_normalize

    torch.manual_seed(seed)
    backbone = PreActResNet18(stem)
    out = []
    with torch.no_grad():
        backbone.train(bn == "batch")  # batch statistics, or the initial running ones
        for start in range(0, len(crops), 256):
            x = torch.from_numpy(np.asarray(crops[start : start + 256]))
            out.append(backbone(x.permute(0, 3, 1, 2).float().div_(255.0)).numpy())
    return l2_normalize(np.concatenate(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--stems", nargs="+", default=["imagenet", "small"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    _, train, val = run_cells(args.run)
    y = val.gt_class.astype(np.int64)
    print(f"| random init | BN | train→val AMI | ARI | standalone AMI | ARI |  ({args.run})")
    print("|---|---|---|---|---|---|")
    for stem in args.stems:
        for bn in ("batch", "initial"):
            scores = []
            for seed in args.seeds:
                tr, va = (embed_random(stem, seed, bn, x) for x in (train.crops, val.crops))
                scores.append(mean_scores(tr, va, y))
            mean, std = np.mean(scores, 0), np.std(scores, 0)
            print(f"| {stem} | {bn} | {table_cells(mean, std)} |", flush=True)


if __name__ == "__main__":
    main()
