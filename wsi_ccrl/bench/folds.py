"""Cross-validation by source tile: the paper's protocol once per fold, and CCRL's lead per fold.

One validation split is one draw of tiles; on CoNSeP's 27 Train tiles the folds disagree by more
than any setting moves a score. ``wsi-ccrl benchmark consep --split tiles --folds N`` holds out
the profile's validation tiles as fold 1 and splits the other tiles into N - 1 contiguous folds,
so fold 1 is the split every setting was chosen on and the rest are tiles nobody tuned on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ccrl.bench.baselines import baseline_names
from wsi_ccrl.bench.report import model_label, ranges
from wsi_ccrl.config import BenchmarkConfig
from wsi_ccrl.errors import ConfigError
from wsi_ccrl.runtime import atomic_write_text

METRICS = ("ami", "ari")


def tile_folds(tiles: list[int], first: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    """``first`` (the profile's validation tiles) as fold 1, the other tiles in n - 1 runs."""
    if n < 2:
        raise ConfigError(f"--folds: at least 2, got {n}")
    rest = [t for t in sorted(tiles) if t not in set(first)]
    head = [tuple(sorted(first))] if first else []
    groups = np.array_split(np.array(rest, dtype=int), n - len(head))
    folds = head + [tuple(int(t) for t in g) for g in groups]
    if len(rest) < n - len(head) or any(not f for f in folds):
        raise ConfigError(f"--folds {n}: only {len(tiles)} source tiles to split")
    return folds


def fold_summary(results: dict[str, Any]) -> dict[str, Any]:
    """CCRL's train→val scores (%), and each metric's best baseline with CCRL's lead over it."""
    models = results["models"]
    baselines = [name for name in models if name in baseline_names()]  # not CCRL's ablations
    if "ccrl" not in models or not baselines:
        raise ConfigError("--folds needs CCRL and at least one baseline in benchmark.models")
    score = {
        name: {m: 100 * models[name]["summary"]["train_to_test"][m]["mean"] for m in METRICS}
        for name in ["ccrl", *baselines]
    }
    out: dict[str, Any] = {"split": results["evaluated_split"], "n_cells": results["n_test_cells"]}
    for m in METRICS:
        best = max(baselines, key=lambda name: score[name][m])
        out[m] = {
            "ccrl": score["ccrl"][m],
            "ccrl_std": 100 * models["ccrl"]["summary"]["train_to_test"][m]["std"],
            "best": best,
            "best_score": score[best][m],
            "lead": score["ccrl"][m] - score[best][m],
        }
    return out


def folds_table(folds: list[tuple[str, dict[str, Any]]], margin: float = 5.0) -> str:
    """Markdown: one row per fold, then the mean over folds of each column."""
    rows = [
        "| fold | held-out cells | CCRL AMI | best baseline AMI | lead | CCRL ARI "
        f"| best baseline ARI | lead | ≥ {margin:g} on both |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    clears = [all(s[m]["lead"] >= margin for m in METRICS) for _, s in folds]
    for (name, s), ok in zip(folds, clears, strict=True):
        cells = [name, str(s["n_cells"])]
        for m in METRICS:
            r = s[m]
            cells += [
                f"{r['ccrl']:.1f} ± {r['ccrl_std']:.1f}",
                f"{r['best_score']:.1f} ({model_label(r['best'])})",
                f"{r['lead']:+.1f}",
            ]
        rows.append("| " + " | ".join([*cells, "yes" if ok else "no"]) + " |")
    cells = [f"mean of {len(folds)}", str(sum(s["n_cells"] for _, s in folds))]
    for m in METRICS:
        for key, fmt in (("ccrl", "{:.1f}"), ("best_score", "{:.1f}"), ("lead", "{:+.1f}")):
            cells.append(fmt.format(np.mean([s[m][key] for _, s in folds])))
    rows.append("| " + " | ".join([*cells, f"{sum(clears)} of {len(folds)}"]) + " |")
    return "\n".join(rows)


def run_folds(
    data_dir: str | Path, out_dir: str | Path, cfg: BenchmarkConfig, n: int, profile: str
) -> dict[str, Any]:
    """The protocol on each fold (OUT/foldI, resumable per fold) and ``folds.md`` / ``.json``."""
    from wsi_ccrl.bench.datasets import consep
    from wsi_ccrl.bench.protocol import run_benchmark

    if cfg.dataset != "consep" or cfg.split not in ("tiles", "auto"):
        raise ConfigError("--folds splits CoNSeP's Train by source tile: consep with --split tiles")
    source = consep.find_split_dir(Path(data_dir), "train") or Path(data_dir)
    tiles = sorted({consep.tile_id(p.name) for p in consep.list_images(source)})
    out_dir = Path(out_dir)
    summaries, skipped = [], {}
    for i, held_out in enumerate(tile_folds(tiles, tuple(cfg.test_tiles), n), start=1):
        train = tuple(t for t in tiles if t not in held_out)
        fold_cfg = dataclasses.replace(cfg, split="tiles", train_tiles=train, test_tiles=held_out)
        results = run_benchmark(data_dir, out_dir / f"fold{i}", fold_cfg, profile=profile)
        summaries.append((f"fold{i} (tiles {ranges(list(held_out))})", fold_summary(results)))
        skipped.update(results["skipped"])
    table = folds_table(summaries)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "folds.md", table + "\n")
    payload = {"folds": dict(summaries), "skipped": skipped}
    atomic_write_text(out_dir / "folds.json", json.dumps(payload, indent=2))
    return payload
