"""The released model file: a model of a stem this version no longer builds is one clear line."""

from __future__ import annotations

import pytest

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.model_io import load_backbone, save_model
from wsi_ccrl.config import TrainConfig, to_dict
from wsi_ccrl.errors import WsiCcrlError


def test_a_model_of_a_retired_stem_is_refused_in_one_line(tmp_path):
    net = PreActResNet18("imagenet")
    config = {**to_dict(TrainConfig()), "stem": "stride2"}
    path = save_model(tmp_path / "model.pt", net, net, config)
    with pytest.raises(WsiCcrlError, match="trained with stem 'stride2'") as err:
        load_backbone(path)
    assert "\n" not in str(err.value)
