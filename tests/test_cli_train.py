"""``wsi-ccrl train`` through Click: options over the config file, files written, one-line errors."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from click.testing import CliRunner
from wsi_ccrl_cli.main import cli

FAST = """
train:
  stem: imagenet
  queue_size: 32
  momentum: 0.9
  epochs: 1
  warmup_epochs: 0
  num_workers: 0
  eval_max_cells: 120
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "fast.yaml"
    path.write_text(FAST)
    return path


def test_train_writes_model_config_and_metrics(consep_store, config, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(consep_store), "--out", str(run), "--config", str(config)]
    args += ["--max-steps", "1", "--batch-size", "16", "--seed", "3", "--lr", "0.002"]
    args += ["--no-predictor", "--no-local-global", "--gpus", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"model: {run / 'model.pt'}" in result.output
    resolved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert resolved["use_predictor"] is False and resolved["augment"]["local_global"] is False
    assert (resolved["batch_size"], resolved["seed"], resolved["lr"]) == (16, 3, 0.002)
    assert resolved["stem"] == "imagenet"  # from the file
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["config"]["use_predictor"] is False
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and rows[0]["step"] == "1"
    assert 0.0 < float(rows[0]["purity"]) <= 1.0  # the store has gt_class: K-means scores


def test_errors_are_one_line(consep_store, config, tmp_path):
    base = ["train", "--data", str(consep_store), "--out", str(tmp_path / "r")]
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  batch_sise: 8\n")
    result = CliRunner().invoke(cli, [*base, "--config", str(typo)])
    assert result.exit_code == 2 and "unknown key 'batch_sise'" in result.output
    result = CliRunner().invoke(cli, [*base, "--config", str(config), "--batch-size", "100000"])
    assert result.exit_code == 1 and "larger than the" in result.output
    assert "Traceback" not in result.output
    if not torch.cuda.is_available():
        result = CliRunner().invoke(cli, [*base, "--device", "cuda"])
        assert result.exit_code == 1 and "no CUDA GPU" in result.output
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no cell stores" in result.output


def test_same_command_under_torchrun_two_cpu_processes(consep_store, config, tmp_path):
    """The README's multi-machine recipe, on one machine: torchrun starts 2 gloo processes."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-port", "29517", "-m", "wsi_ccrl_cli.main", "-q", "train",
        "--data", str(consep_store), "--out", str(out), "--config", str(config),
        "--batch-size", "16", "--max-steps", "2", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("model: ") == 1  # one summary line, from rank 0
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert payload["training"]["world_size"] == 2 and payload["training"]["steps"] == 2
