"""``wsi-ccrl benchmark``: errors before any work, and a tiny baseline-only run."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from conftest import CONSEP_PATCHES as PATCHES
from wsi_ccrl_cli.main import cli


def test_missing_data_dir_says_how_to_get_it(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["benchmark", "consep", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "warwick.ac.uk" in result.output and "Train/Images" in result.output
    result = runner.invoke(
        cli, ["benchmark", "nucls", "--data-dir", str(tmp_path), "--profile", "quick"]
    )
    assert result.exit_code == 1 and "sites.google.com/view/nucls" in result.output
    assert not (Path.cwd() / "benchmark-nucls-quick").exists()  # nothing written


def test_config_and_profile_conflict(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("benchmark: {dataset: consep}\n")
    result = CliRunner().invoke(
        cli,
        ["benchmark", "consep", "--data-dir", str(tmp_path), "--config", str(config),
         "--profile", "quick"],
    )  # fmt: skip
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(
        cli, ["benchmark", "nucls", "--data-dir", str(tmp_path), "--config", str(config)]
    )
    assert result.exit_code == 2 and "consep config" in result.output


def test_tiny_run_writes_the_table(tmp_path):
    data = tmp_path / "consep"
    for sub, ext in (("Images", "png"), ("Labels", "mat")):
        (data / "Train" / sub).mkdir(parents=True)
        for name in ("train_10_000", "train_21_000"):
            (data / "Train" / sub / f"{name}.{ext}").symlink_to(PATCHES / sub / f"{name}.{ext}")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "benchmark": {
                    "dataset": "consep", "split": "tiles", "train_tiles": [10],
                    "test_tiles": [21], "seeds": [0], "kmeans_n_init": 1,
                    "models": ["morphological", "imagenet"],
                }
            }
        )
    )  # fmt: skip
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["benchmark", "consep", "--data-dir", str(data), "--config", str(config), "--out",
         str(out), "--class-scheme", "merged4", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| Morphological features |" in result.output
    for name in ("results.md", "results.json", "config.yaml"):
        assert (out / name).is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())["benchmark"]
    assert saved["class_scheme"] == "merged4" and saved["device"] == "cpu"
    from wsi_ccrl.bench.baselines import imagenet_missing_message

    if imagenet_missing_message() is not None:  # no local weights: skipped, and said so
        assert "ImageNet ResNet18 skipped: no weights at" in result.output
    else:
        assert "| ImageNet pre-trained ResNet18 |" in result.output
