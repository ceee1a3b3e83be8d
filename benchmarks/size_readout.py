"""Probe: nucleus size appended to each model's K-means features, CCRL and the baselines alike.

The adaptive window (2 × the nucleus box, resized to 32 px) gives every nucleus the same share of
its crop, so CCRL never sees absolute size, which separates epithelial from spindle-shaped and
inflammatory nuclei (on validation fold 2 the log area alone scores AMI 13 / ARI 11). This script
re-reads a ``wsi-ccrl benchmark consep`` run (its stores and trained models; nothing is trained)
and appends the standardised log area to each model's features with a weight that gives it a
fraction ``f`` of the total variance (``f = 0``: the features as the benchmark clusters them), so
one ``f`` means the same for every feature space. Prints train→val and standalone AMI / ARI (%),
mean ± std over the run's training seeds (CCRL) and K-means seeds 0 1 2 (k 4, n_init 4, the
benchmark's 4,000 fitting cells).

    OMP_NUM_THREADS=1 python benchmarks/size_readout.py runs/fold2 --fractions 0 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import mean_scores, run_cells, table_cells  # noqa: E402

MODELS = ("ccrl", "manual", "morphological", "raw_pixels", "size")


def with_size(train: np.ndarray, val: np.ndarray, train_area, val_area, fraction: float):
    """Both splits' features with the log nucleus area appended (standardised on the fitting
    cells), weighted to hold ``fraction`` of the fitting cells' total variance."""
    logs = [np.log(np.maximum(np.asarray(a, np.float64), 1.0)) for a in (train_area, val_area)]
    mean, std = logs[0].mean(), logs[0].std() + 1e-12
    total = float(np.asarray(train, np.float64).var(0).sum())
    weight = np.sqrt(fraction * total / (1.0 - fraction))
    return tuple(
        np.hstack([x, (weight * (la - mean) / std)[:, None]]).astype(np.float32)
        for x, la in zip((train, val), logs, strict=True)
    )


def model_features(run: Path, model: str, train, val) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fitting, validation) features of ``model`` as the benchmark clusters them; one pair per
    trained CCRL model, one for a baseline."""
    from wsi_ccrl.bench.baselines import make_baseline
    from wsi_ccrl.bench.protocol import scale_features

    if model == "ccrl":
        from wsi_ccrl.ccrl.model_io import load_backbone
        from wsi_ccrl.label.embed import embed_crops
        from wsi_ccrl.label.features import l2_normalize

        pairs = []
        for path in sorted(run.glob("models/ccrl-seed*/model.pt")):
            backbone, _ = load_backbone(path, "momentum")
            pairs.append(tuple(l2_normalize(embed_crops(backbone, x.crops)) for x in (train, val)))
        if not pairs:
            sys.exit(f"no models/ccrl-seed*/model.pt under {run}")
        return pairs
    if model == "size":  # the standardised log area alone
        logs = [np.log(np.maximum(x.area.astype(np.float64), 1.0)) for x in (train, val)]
        return [tuple(((la - logs[0].mean()) / logs[0].std())[:, None] for la in logs)]
    baseline = make_baseline(model, 0).fit(train)
    return [scale_features(model, baseline.transform(train), baseline.transform(val))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if any(not 0.0 <= f < 1.0 for f in args.fractions):
        sys.exit("--fractions must lie in [0, 1)")

    import torch

    torch.set_num_threads(args.threads)
    _, train, val = run_cells(args.run)
    y = val.gt_class.astype(np.int64)
    print(f"| model | size's share f | train→val AMI | ARI | standalone AMI | ARI |  ({args.run})")
    print("|---|---:|---|---|---|---|")
    for model in args.models:
        pairs = model_features(args.run, model, train, val)
        fractions = [0.0] if model == "size" else args.fractions
        for f in fractions:
            scores = [
                mean_scores(*(with_size(tr, va, train.area, val.area, f) if f else (tr, va)), y)
                for tr, va in pairs
            ]
            mean, std = np.mean(scores, 0), np.std(scores, 0)
            print(f"| {model} | {f:g} | {table_cells(mean, std)} |", flush=True)


if __name__ == "__main__":
    main()
