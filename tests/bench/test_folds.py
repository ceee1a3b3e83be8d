"""Cross-validation by source tile: the folds, the per-fold lead, and a real run through the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_protocol import tiny_consep

from wsi_ccrl.bench import folds
from wsi_ccrl.errors import ConfigError


def test_the_profile_validation_tiles_are_fold_one_and_the_rest_contiguous_runs():
    tiles = list(range(1, 28))
    got = folds.tile_folds(tiles, tuple(range(21, 28)), 4)
    assert got == [
        tuple(range(21, 28)),
        tuple(range(1, 8)),
        tuple(range(8, 15)),
        (15, 16, 17, 18, 19, 20),
    ]
    assert sorted(t for f in got for t in f) == tiles  # every tile held out exactly once
    assert folds.tile_folds([1, 2, 3, 4], (), 2) == [(1, 2), (3, 4)]
    with pytest.raises(ConfigError, match="only 3 source tiles"):
        folds.tile_folds([1, 2, 3], (3,), 4)


def results(ccrl: float, others: dict[str, float], std: float = 0.01) -> dict:
    """A results.json of the protocol: train→test AMI = ARI = the given fractions."""

    def row(v, s=0.0):
        return {"summary": {"train_to_test": {m: {"mean": v, "std": s} for m in ("ami", "ari")}}}

    models = {name: row(v) for name, v in others.items()}
    models["ccrl"] = row(ccrl, std)
    models["ccrl_query_encoder"] = row(0.9)  # CCRL's own ablation: never the best baseline
    return {"models": models, "evaluated_split": "validation", "n_test_cells": 100}


def test_lead_over_the_best_baseline_per_metric_and_the_mean_row():
    a = folds.fold_summary(results(0.25, {"manual": 0.12, "dcae": 0.15}))
    b = folds.fold_summary(results(0.16, {"manual": 0.15, "dcae": 0.10}))
    assert a["ami"]["best"] == "dcae" and a["ami"]["lead"] == pytest.approx(10.0)
    assert b["ari"]["best"] == "manual" and b["ari"]["lead"] == pytest.approx(1.0)
    table = folds.folds_table([("fold1", a), ("fold2", b)])
    lines = table.splitlines()
    assert lines[2].endswith("| yes |") and lines[3].endswith("| no |")
    assert lines[4].startswith("| mean of 2 | 200 | 20.5 | 15.0 | +5.5 |")
    assert lines[4].endswith("| 1 of 2 |")
    with pytest.raises(ConfigError, match="at least one baseline"):
        folds.fold_summary(results(0.2, {}))


def test_folds_through_the_cli_on_real_patches(tmp_path):
    """Two folds of the tiny real subset: one benchmark run per fold, then one summary."""
    from wsi_ccrl_cli.main import cli

    from wsi_ccrl.bench import protocol

    names = ["train_10_000", "train_10_001", "train_21_000", "train_21_001", "train_24_000"]
    data = tiny_consep(tmp_path / "consep", names)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "benchmark:\n  dataset: consep\n  class_scheme: merged4\n  split: tiles\n"
        "  train_tiles: [10, 24]\n  test_tiles: [21]\n  seeds: [0]\n  train_seeds: [0]\n"
        "  kmeans_n_init: 1\n  models: [shape_colour, ccrl]\n"
        "train:\n  stem: imagenet\n  batch_size: 16\n  queue_size: 32\n  epochs: 1\n"
        "  max_steps: 1\n  num_workers: 0\n  eval_every: 0\n"
    )
    assert protocol.load_benchmark_config(config).models == ("shape_colour", "ccrl")
    out = tmp_path / "cv"
    args = ["benchmark", "consep", "--data-dir", str(data), "--config", str(config)]
    res = CliRunner().invoke(cli, [*args, "--device", "cpu", "--folds", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "folds.json").read_text())
    assert list(saved["folds"]) == ["fold1 (tiles 21)", "fold2 (tiles 10, 24)"]
    assert "train_tiles:\n  - 10\n  - 24\n" in (out / "fold1" / "config.yaml").read_text()
    assert "train_tiles:\n  - 21\n" in (out / "fold2" / "config.yaml").read_text()
    assert "| mean of 2 |" in (out / "folds.md").read_text()
    bad = CliRunner().invoke(cli, [*args, "--folds", "2", "--cells", "detected", "--out", str(out)])
    assert bad.exit_code != 0 and "--folds goes with --cells ground-truth" in bad.output
