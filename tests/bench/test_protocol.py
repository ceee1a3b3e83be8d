"""The protocol end to end on a tiny tile-split subset of the real CoNSeP patches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS
from conftest import CONSEP_PATCHES as PATCHES

from wsi_ccrl.bench import protocol, report
from wsi_ccrl.errors import ConfigError


def tiny_consep(root: Path, names: list[str]) -> Path:
    """A CoNSeP-layout folder of a few real patches (symlinks)."""
    for sub, ext in (("Images", "png"), ("Labels", "mat")):
        (root / "Train" / sub).mkdir(parents=True)
        for name in names:
            (root / "Train" / sub / f"{name}.{ext}").symlink_to(PATCHES / sub / f"{name}.{ext}")
    return root


def tiny_config(**over):
    values = {
        "class_scheme": "merged4",
        "split": "tiles",
        "train_tiles": [10],
        "test_tiles": [21],
        "seeds": [0, 1],
        "train_seeds": [0],
        "kmeans_n_init": 2,
        "device": "cpu",
        "train": {
            "stem": "imagenet", "batch_size": 32, "queue_size": 64, "epochs": 1,
            "max_steps": 2, "momentum": 0.99, "num_workers": 0, "eval_max_cells": 32,
            "device": "cpu",
        },
    }  # fmt: skip
    values.update(over)
    return protocol.load_benchmark_config(None, {k: v for k, v in values.items()})


def test_cluster_scores_on_separable_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = np.eye(3)[y] * 10 + rng.normal(0, 0.1, (60, 3))
    runs = protocol.cluster_scores(x, x, y, 3, (0, 1), n_init=2)
    summary = protocol.summarize(runs)
    for name in protocol.PROTOCOLS:
        assert summary[name]["ami"]["mean"] == pytest.approx(1.0)
        assert summary[name]["purity"]["std"] == 0.0
        assert summary[name]["ari"]["n"] == 2


def test_cluster_scores_and_summary_on_a_known_case():
    """Two tight groups K-means cannot miss, classes mixed in them: the scores of that grouping.

    classes [0 0 0 1 1 1], groups [0 0 1 1 1 1]: purity (2 + 3) / 6; ARI by hand from the
    contingency table: pairs 1 + 3 = 4, expected 6 * 7 / 15 = 2.8, max (6 + 7) / 2, so 12 / 37.
    """
    from sklearn.metrics import adjusted_mutual_info_score

    y = np.array([0, 0, 0, 1, 1, 1])
    x = np.array([0.0, 0.1, 10.0, 10.1, 10.2, 10.3])[:, None]
    runs = protocol.cluster_scores(x, x, y, 2, (0, 1, 2), n_init=1)
    ami = adjusted_mutual_info_score(y, [0, 0, 1, 1, 1, 1], average_method="arithmetic")
    for name in protocol.PROTOCOLS:
        assert len(runs[name]) == 3
        for run in runs[name]:
            assert run["purity"] == pytest.approx(5 / 6)
            assert run["ari"] == pytest.approx(12 / 37)
            assert run["ami"] == pytest.approx(ami) and 0.35 < ami < 0.36
    summary = protocol.summarize(
        {
            "standalone": [
                {"ami": 0.2, "ari": 0.4, "purity": 0.5},
                {"ami": 0.4, "ari": 0.0, "purity": 1.0},
            ]
        }
    )["standalone"]
    assert summary["ami"] == {"mean": pytest.approx(0.3), "std": pytest.approx(0.1), "n": 2}
    assert summary["ari"] == {"mean": pytest.approx(0.2), "std": pytest.approx(0.2), "n": 2}
    assert summary["purity"] == {"mean": pytest.approx(0.75), "std": pytest.approx(0.25), "n": 2}


def test_config_profiles_and_validation():
    quick = protocol.load_benchmark_config(CONFIGS / "benchmark-consep-quick.yaml")
    paper = protocol.load_benchmark_config(CONFIGS / "benchmark-consep.yaml")
    assert paper.train.epochs == 500 and paper.class_scheme == "original7"  # from ccrl.yaml
    assert quick.class_scheme == "merged4" and quick.split == "auto"
    assert quick.train.batch_size == 64 and paper.train.temperature == 0.07
    assert set(quick.train_tiles).isdisjoint(quick.test_tiles)
    nucls = protocol.load_benchmark_config(CONFIGS / "benchmark-nucls.yaml")
    assert nucls.window_scale == 1.0 and nucls.dataset == "nucls"  # the box itself
    with pytest.raises(ConfigError, match="unknown"):
        protocol.load_benchmark_config(None, {"models": ["ccrl", "vae"]})
    with pytest.raises(ConfigError, match="class_scheme"):
        protocol.load_benchmark_config(None, {"class_scheme": "seven"})


def test_split_auto_is_official_with_a_test_folder(tmp_path):
    """The official Test split is the default where it exists; else validation tiles of Train."""
    cfg = protocol.load_benchmark_config(CONFIGS / "benchmark-consep-quick.yaml")
    (tmp_path / "Train").mkdir()
    tiles = protocol.resolve_split(tmp_path, cfg)
    assert tiles.split == "tiles"
    assert protocol.evaluated_split(tiles).startswith("validation (tiles 21–27 of Train")
    (tmp_path / "Test").mkdir()
    official = protocol.resolve_split(tmp_path, cfg)
    assert official.split == "official" and protocol.evaluated_split(official).startswith("test")
    forced = protocol.resolve_split(tmp_path, dataclasses.replace(cfg, split="tiles"))
    assert forced.split == "tiles"


def test_ranges():
    assert report.ranges([1, 2, 3, 5, 7, 8]) == "1–3, 5, 7–8"


def test_protocol_end_to_end(tmp_path):
    names = [f"train_10_00{k}" for k in range(3)] + [f"train_21_00{k}" for k in range(3)]
    data = tiny_consep(tmp_path / "consep", names)
    models = ["ccrl", "ccrl_query_encoder", "ccrl_no_predictor", "morphological", "raw_pixels"]
    cfg = tiny_config(models=models)
    out = tmp_path / "out"
    results = protocol.run_benchmark(data, out, cfg, profile="test")
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["models"]) == ["morphological", "raw_pixels", "ccrl", "ccrl_query_encoder",
                                     "ccrl_no_predictor"]  # fmt: skip
    counts = saved["class_counts_test"]
    assert sum(counts) == saved["n_test_cells"] == results["n_test_cells"] > 0
    for model, res in saved["models"].items():
        for name in protocol.PROTOCOLS:
            runs, stats = res["runs"][name], res["summary"][name]
            assert len(runs) == 2, model  # K-means seeds 0 and 1, one training seed
            for metric in ("ami", "ari", "purity"):  # the summary is the runs' mean and std
                values = [r[metric] for r in runs]
                assert stats[metric]["mean"] == pytest.approx(np.mean(values)), (model, metric)
                assert stats[metric]["std"] == pytest.approx(np.std(values)), (model, metric)
                assert stats[metric]["n"] == 2
            # every clustering is at least as pure as putting all cells in one cluster
            assert min(r["purity"] for r in runs) >= max(counts) / sum(counts) - 1e-9, model
            assert all(-1 <= r["ami"] <= 1 and -1 <= r["ari"] <= 1 for r in runs), model
    assert (out / "models" / "ccrl-seed0" / "model.pt").is_file()
    assert (out / "models" / "no_predictor-seed0" / "model.pt").is_file()
    assert not (out / "models" / "no_local_global-seed0").exists()  # not asked for
    table = (out / "results.md").read_text()
    assert "| CCRL |" in table and "24.2 | 21.7 | 51.8" in table  # the paper's row beside ours
    assert "train tiles 10, validation tiles 21" in table
    assert "Evaluated on: validation (tiles 21 of Train" in table
    from importlib.metadata import version  # the versions that make a training run's draw

    assert f"kornia {version('kornia')}, numpy {np.__version__}" in table
    config = (out / "config.yaml").read_text()
    assert "train_tiles:" in config and "max_steps: 2" in config
    # a second run reuses the stores and the trained models
    stamp = (out / "stores" / "consep-test.zarr" / "zarr.json").stat().st_mtime_ns
    cfg2 = tiny_config(models=["ccrl", "morphological"])
    again = protocol.run_benchmark(data, out, cfg2, profile="test")
    assert (out / "stores" / "consep-test.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    assert again["models"]["morphological"] == results["models"]["morphological"]
    assert again["models"]["ccrl"]["summary"] == results["models"]["ccrl"]["summary"]
