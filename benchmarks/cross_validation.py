"""Across validation folds: CCRL's lead over the best baseline, fold by fold and on average.

One benchmark run is one fold's draw; whether the quick profile holds on unseen tiles is a
question for every tile of Train held out once. This reads the ``results.json`` of several
``wsi-ccrl benchmark`` runs, or the ``end_to_end.json`` of several ``benchmarks/end_to_end.py``
runs (one per fold, nothing retrained), and prints, per fold and as the mean over folds: CCRL's
train→val AMI / ARI, the best baseline on each metric (which one), and the margin. A fold clears
when CCRL leads every baseline by at least ``--margin`` points on both.

    python benchmarks/cross_validation.py runs/fold1 runs/fold2 runs/fold3 runs/fold4
    python benchmarks/cross_validation.py runs/e2e-fold1 runs/e2e-fold2 runs/e2e-fold3 runs/e2e-fold4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsi_ccrl.bench.report import LABELS  # noqa: E402  (the benchmark's own row names)

METRICS = ("ami", "ari")
RESULT_FILES = ("results.json", "end_to_end.json")  # wsi-ccrl benchmark, benchmarks/end_to_end.py
# CCRL's own ablations are not baselines: the margin is over the other rows of Table 2
NOT_BASELINES = ("ccrl", "ccrl_query_encoder", "ccrl_no_local_global", "ccrl_no_predictor")


def fold_summary(results: dict) -> dict:
    """CCRL's train→val scores (%), and each metric's best baseline with the margin over it."""
    models = results["models"]
    if "ccrl" not in models:
        raise ValueError(f"no CCRL row in this run (models: {', '.join(models)})")
    baselines = [name for name in models if name not in NOT_BASELINES]
    if not baselines:
        raise ValueError("no baseline in this run: run the fold with the baselines")
    score = {
        name: {m: 100 * models[name]["summary"]["train_to_test"][m]["mean"] for m in METRICS}
        for name in ["ccrl", *baselines]
    }
    out = {"split": results["evaluated_split"], "n_cells": scored_cells(results)}
    for m in METRICS:
        best = max(baselines, key=lambda name: score[name][m])
        out[m] = {
            "ccrl": score["ccrl"][m],
            "ccrl_std": 100 * models["ccrl"]["summary"]["train_to_test"][m]["std"],
            "best": best,
            "best_score": score[best][m],
            "margin": score["ccrl"][m] - score[best][m],
        }
    return out


def scored_cells(results: dict) -> int:
    """Validation cells scored: ground-truth cells (benchmark), matched detections (end to end)."""
    if "n_test_cells" in results:
        return results["n_test_cells"]
    return results["detection"]["validation"]["matched"]


def table(folds: list[tuple[str, dict]], margin: float) -> str:
    """Markdown: one row per fold, then the mean over folds of each column."""
    rows = [
        "| fold | held-out cells | CCRL AMI | best baseline AMI | lead | CCRL ARI "
        f"| best baseline ARI | lead | ≥ {margin:g} on both |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in folds:
        cells = [name, str(s["n_cells"])]
        for m in METRICS:
            r = s[m]
            cells += [
                f"{r['ccrl']:.1f} ± {r['ccrl_std']:.1f}",
                f"{r['best_score']:.1f} ({LABELS.get(r['best'], r['best'])})",
                f"{r['margin']:+.1f}",
            ]
        cells.append("yes" if clears(s, margin) else "no")
        rows.append("| " + " | ".join(cells) + " |")
    cells = [f"mean of {len(folds)}", str(sum(s["n_cells"] for _, s in folds))]
    for m in METRICS:
        for key, fmt in (("ccrl", "{:.1f}"), ("best_score", "{:.1f}"), ("margin", "{:+.1f}")):
            cells.append(fmt.format(sum(s[m][key] for _, s in folds) / len(folds)))
    cells.append(f"{sum(clears(s, margin) for _, s in folds)} of {len(folds)}")
    rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def clears(summary: dict, margin: float) -> bool:
    """Whether CCRL leads the best baseline by ``margin`` points on every metric."""
    return all(summary[m]["margin"] >= margin for m in METRICS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="benchmark output folders, one per fold")
    parser.add_argument("--margin", type=float, default=5.0, help="points CCRL must lead by")
    args = parser.parse_args(argv)
    folds = []
    for run in args.runs:
        path = next((run / name for name in RESULT_FILES if (run / name).is_file()), None)
        if path is None:
            parser.error(
                f"{run}: no results.json or end_to_end.json: run `wsi-ccrl benchmark … --out "
                f"{run}` or `python benchmarks/end_to_end.py --out {run}` first"
            )
        try:
            folds.append((run.name, fold_summary(json.loads(path.read_text()))))
        except (ValueError, KeyError) as err:
            parser.error(f"{path}: {err}")
    for name, s in folds:
        print(f"{name}: {s['split']}")
    print()
    print(table(folds, args.margin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
