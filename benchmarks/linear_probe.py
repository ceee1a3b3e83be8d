"""Diagnostic: how much cell type each model's features carry, apart from whether K-means finds it.

The benchmark's scores mix two things: what the features know about cell type, and whether that
knowledge lies along the directions K-means splits. A linear probe (logistic regression on
standardised features, fit with the train split's labels, scored on the validation cells) measures
the first alone. It is a diagnostic and chooses nothing: labels are never used by the tool.

Reads a ``wsi-ccrl benchmark consep`` run (its stores and ``models/ccrl-seed*``) and prints, per
model, the validation balanced accuracy and macro-F1 (%) of the probe fit on the benchmark's 4,000
train fitting cells, with K-means train→val AMI / ARI of the same features next to it.

    OMP_NUM_THREADS=1 python benchmarks/linear_probe.py runs/f2-profile --baselines manual morphological raw_pixels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readout_ablation import mean_scores, run_cells  # noqa: E402  (the benchmark's K-means scoring)


def probe_scores(train_x, train_y, val_x, val_y) -> tuple[float, float]:
    """Balanced accuracy and macro-F1 (%) of a class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
    ).fit(train_x, train_y)
    pred = clf.predict(val_x)
    return 100 * balanced_accuracy_score(val_y, pred), 100 * f1_score(val_y, pred, average="macro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `wsi-ccrl benchmark consep` output folder")
    parser.add_argument("--baselines", nargs="*", default=["manual", "morphological", "raw_pixels"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from wsi_ccrl.bench.baselines import make_baseline
    from wsi_ccrl.bench.protocol import embed, load_benchmark_config, scale_features
    from wsi_ccrl.label.features import l2_normalize

    torch.set_num_threads(args.threads)
    cfg = load_benchmark_config(args.run / "config.yaml")
    _, fit, val = run_cells(args.run)
    fy, vy = fit.gt_class.astype(np.int64), val.gt_class.astype(np.int64)

    rows = {}
    for model in sorted(args.run.glob("models/ccrl-seed*/model.pt")):
        tr, va = (l2_normalize(embed(model, "momentum", x.crops, cfg, "cpu")) for x in (fit, val))
        rows[f"CCRL ({model.parent.name})"] = (tr, va)
    for name in args.baselines:
        base = make_baseline(name, seed=0).fit(fit)
        rows[name] = scale_features(name, base.transform(fit), base.transform(val))

    print(f"| features | probe balanced acc. | probe macro-F1 | K-means AMI | ARI |  ({args.run})")
    print("|---|---|---|---|---|")
    for name, (tr, va) in rows.items():
        bacc, f1 = probe_scores(tr, fy, va, vy)
        ami, ari = mean_scores(tr, va, vy)[:2]
        print(f"| {name} | {bacc:.1f} | {f1:.1f} | {ami:.1f} | {ari:.1f} |", flush=True)


if __name__ == "__main__":
    main()
