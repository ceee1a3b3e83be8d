"""Checkpoints of an older build: retired settings at their no-op values load, others are refused."""

from __future__ import annotations

import pytest
import torch

from wsi_ccrl.ccrl.checkpoint import load_checkpoint, save_checkpoint
from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.config import RETIRED_TRAIN, TrainConfig, drop_retired, to_dict
from wsi_ccrl.errors import ConfigError

CFG = TrainConfig(stem="imagenet", queue_size=8)
DATA = [["a.zarr", 16]]


def older_checkpoint(path, **retired):
    """A checkpoint as an older build wrote it: every retired setting in its config (at its
    no-op value unless given) and the queue-wrapped flag among the model's buffers."""
    torch.manual_seed(0)
    model = CCRL.from_config(CFG)
    optimizer = torch.optim.Adam(model.query_parameters())
    save_checkpoint(path, model, optimizer, CFG, 3, 2, DATA)
    payload = torch.load(path, weights_only=True)
    config = payload["config"]
    config.update({k: v for k, v in RETIRED_TRAIN.items() if k != "augment"})
    config["augment"].update(RETIRED_TRAIN["augment"])
    config.update(retired)
    payload["model"]["queue_full"] = torch.ones((), dtype=torch.bool)
    torch.save(payload, path)
    return model


def test_an_older_checkpoint_with_retired_settings_at_their_defaults_resumes(tmp_path):
    saved = older_checkpoint(tmp_path / "checkpoint.pt")
    torch.manual_seed(1)
    model = CCRL.from_config(CFG)
    optimizer = torch.optim.Adam(model.query_parameters())
    step = load_checkpoint(
        tmp_path / "checkpoint.pt", model, optimizer, CFG, DATA, torch.device("cpu")
    )
    assert step == 3
    for name, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_an_older_checkpoint_that_used_a_retired_setting_is_one_line(tmp_path):
    older_checkpoint(tmp_path / "checkpoint.pt", symmetric=True)
    model = CCRL.from_config(CFG)
    optimizer = torch.optim.Adam(model.query_parameters())
    with pytest.raises(ConfigError, match="train.symmetric is True, a setting this") as err:
        load_checkpoint(
            tmp_path / "checkpoint.pt", model, optimizer, CFG, DATA, torch.device("cpu")
        )
    assert "\n" not in str(err.value)


def test_drop_retired_keeps_every_current_setting():
    stored = to_dict(CFG)
    assert drop_retired(stored, "run") == stored
    with pytest.raises(ConfigError, match="train.augment.key_views is 2"):
        drop_retired({**stored, "augment": {**stored["augment"], "key_views": 2}}, "run")
